"""moto's KMS: keys tagged from CloudFormation."""

from __future__ import annotations

from typing import Any

from localcloud.emulator.patches.registry import Undo, patch, replace


@patch("kms")
def kms_key_tags_from_cloudformation() -> Undo:
    """Accept `AWS::KMS::Key` tags in CloudFormation's shape.

    moto limitation: CloudFormation gives this resource's `Tags` as `[{"Key": ..., "Value": ...}]`,
    but moto's handler passes them on to KMS's tagger, which expects KMS's own
    `[{"TagKey": ..., "TagValue": ...}]`, and the stack fails with a KeyError (any tagged key, and
    CDK tags every resource of a stack tagged with `Tags.of(stack)`).
    """
    from moto.kms.models import Key

    original = Key.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any, *args: Any,
                                        **kwargs: Any) -> Any:
        tags = cloudformation_json.get("Properties", {}).get("Tags")
        if isinstance(tags, list) and all(isinstance(t, dict) and "Key" in t for t in tags):
            properties = {**cloudformation_json["Properties"],
                          "Tags": [{"TagKey": t["Key"], "TagValue": t.get("Value", "")} for t in tags]}
            cloudformation_json = {**cloudformation_json, "Properties": properties}
        return original(cls, resource_name, cloudformation_json, *args, **kwargs)

    return replace(Key, create_from_cloudformation_json=classmethod(create_from_cloudformation_json))
