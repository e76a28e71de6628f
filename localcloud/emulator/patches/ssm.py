"""moto's Parameter Store: tags from CloudFormation, service settings, and `AllowedPattern` enforced."""

from __future__ import annotations

import json
import re
from typing import Any

from localcloud.emulator.patches.registry import Undo, patch, replace


@patch("ssm")
def ssm_parameter_tags_from_cloudformation() -> Undo:
    """Accept `AWS::SSM::Parameter` tags in CloudFormation's shape.

    moto limitation: CloudFormation gives this resource's `Tags` as a map (`{"stage": "dev"}`), but
    moto's handler passes it on to `put_parameter`, which expects `[{"Key": ..., "Value": ...}]`
    and fails the whole stack with a TypeError.
    """
    from moto.ssm.models import Parameter

    original = Parameter.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any, *args: Any,
                                        **kwargs: Any) -> Any:
        tags = cloudformation_json.get("Properties", {}).get("Tags")
        if isinstance(tags, dict):
            properties = {**cloudformation_json["Properties"],
                          "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            cloudformation_json = {**cloudformation_json, "Properties": properties}
        return original(cls, resource_name, cloudformation_json, *args, **kwargs)

    Parameter.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[assignment]

    def undo() -> None:
        Parameter.create_from_cloudformation_json = classmethod(original)  # type: ignore[assignment]

    return undo


# Service settings of Parameter Store the emulator knows, with AWS's defaults.
SSM_SERVICE_SETTING_DEFAULTS = {
    "/ssm/parameter-store/high-throughput-enabled": "false",
    "/ssm/parameter-store/default-parameter-tier": "Standard",
}


_SSM_SERVICE_SETTING_VALUES = {
    "/ssm/parameter-store/high-throughput-enabled": ("true", "false"),
    "/ssm/parameter-store/default-parameter-tier": ("Standard", "Advanced", "Intelligent-Tiering"),
}


@patch("ssm")
def ssm_service_settings() -> Undo:
    """Answer `GetServiceSetting`, `UpdateServiceSetting` and `ResetServiceSetting` for Parameter Store's settings.

    moto limitation: it has none of the three (an unknown action), so nothing that checks or turns
    on Parameter Store's higher throughput can run against it. Each account and region starts with
    AWS's defaults (`high-throughput-enabled` "false"); the id is accepted as a path or as its ARN.
    """
    from moto.core.exceptions import JsonRESTError
    from moto.core.utils import utcnow
    from moto.ssm.exceptions import ValidationException
    from moto.ssm.responses import SimpleSystemManagerResponse

    settings: dict[tuple[str, str, str], tuple[str, Any]] = {}

    def setting_id(self: Any) -> str:
        raw = str(self._get_param("SettingId") or "")
        path = "/" + raw.split(":servicesetting/", 1)[1] if ":servicesetting/" in raw else raw
        if path not in SSM_SERVICE_SETTING_DEFAULTS:
            raise JsonRESTError("ServiceSettingNotFound",
                                f"{raw} is not a service setting the emulator knows: {sorted(SSM_SERVICE_SETTING_DEFAULTS)}")
        return path

    def answer(self: Any, path: str) -> str:
        value, modified = settings.get((self.current_account, self.region, path),
                                       (SSM_SERVICE_SETTING_DEFAULTS[path], None))
        return json.dumps({"ServiceSetting": {
            "SettingId": path, "SettingValue": value,
            "ARN": f"arn:aws:ssm:{self.region}:{self.current_account}:servicesetting{path}",
            "LastModifiedDate": (modified or utcnow()).timestamp(),
            "LastModifiedUser": "System" if modified is None else f"arn:aws:iam::{self.current_account}:root",
            "Status": "Default" if modified is None else "Customized",
        }})

    def get_service_setting(self: Any) -> str:
        return answer(self, setting_id(self))

    def update_service_setting(self: Any) -> str:
        path = setting_id(self)
        value = str(self._get_param("SettingValue"))
        if value not in _SSM_SERVICE_SETTING_VALUES[path]:
            raise ValidationException(
                f"SettingValue {value!r} is not valid for {path}: one of {list(_SSM_SERVICE_SETTING_VALUES[path])}")
        settings[(self.current_account, self.region, path)] = (value, utcnow())
        return "{}"

    def reset_service_setting(self: Any) -> str:
        path = setting_id(self)
        settings.pop((self.current_account, self.region, path), None)
        return answer(self, path)

    return replace(SimpleSystemManagerResponse, get_service_setting=get_service_setting,
                   update_service_setting=update_service_setting, reset_service_setting=reset_service_setting)


@patch("ssm")
def ssm_allowed_pattern() -> Undo:
    """Refuse a parameter value its `AllowedPattern` does not match, as Parameter Store does.

    moto limitation: it stores a parameter's AllowedPattern and returns it, but takes any value, so a
    document that is not JSON reaches the readers on the emulator where Parameter Store would have
    answered `ParameterPatternMismatchException`. The pattern is matched with `re.search`, which
    reads `^`, `$`, classes and repetitions as Java's `find` does for the patterns this app writes.
    """
    from moto.core.exceptions import JsonRESTError
    from moto.ssm.models import SimpleSystemManagerBackend

    original = SimpleSystemManagerBackend.put_parameter

    def put_parameter(self: Any, name: str, description: str, value: str, parameter_type: str,
                      allowed_pattern: str, *args: Any, **kwargs: Any) -> Any:
        pattern = allowed_pattern
        if pattern is None and self._parameters.get(name):
            pattern = self._parameters[name][-1].allowed_pattern
        if pattern and value is not None and not re.search(pattern, value):
            raise JsonRESTError("ParameterPatternMismatchException",
                                f"Parameter value, cannot be validated against allowedPattern: {pattern}")
        return original(self, name, description, value, parameter_type, allowed_pattern, *args, **kwargs)

    return replace(SimpleSystemManagerBackend, put_parameter=put_parameter)
