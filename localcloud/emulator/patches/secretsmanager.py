"""moto's Secrets Manager: secrets created from CloudFormation."""

from __future__ import annotations

import json
from typing import Any

from localcloud.emulator.patches.cloudformation import add_resource_types
from localcloud.emulator.patches.registry import Undo, patch


class _CloudFormationSecret:
    """`AWS::SecretsManager::Secret` for moto's CloudFormation, backed by moto's own `CreateSecret`."""

    def __init__(self, arn: str, name: str) -> None:
        self.arn = arn
        self.name = name
        self.physical_resource_id = arn  # Ref of a secret answers its ARN, as in AWS

    def get_cfn_attribute(self, attribute: str) -> Any:
        if attribute == "Id":
            return self.arn
        from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

        raise UnformattedGetAttTemplateException()

    def is_created(self) -> bool:
        return True

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SecretsManager::Secret"

    @classmethod
    def has_cfn_attr(cls, attribute: str) -> bool:
        return attribute == "Id"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str, **kwargs: Any) -> _CloudFormationSecret:
        from moto.secretsmanager.models import secretsmanager_backends

        backend = secretsmanager_backends[account_id][region_name]
        properties = cloudformation_json.get("Properties", {})
        # Without a Name, the name moto's CloudFormation gives every resource (stack, logical id, a suffix).
        name = properties.get("Name") or resource_name
        answer = json.loads(backend.create_secret(
            name=name, secret_string=cls._secret_string(backend, properties), secret_binary=None,
            description=properties.get("Description"), tags=properties.get("Tags"),
            kms_key_id=properties.get("KmsKeyId"), client_request_token=None, replica_regions=[],
            force_overwrite=False))
        return cls(answer["ARN"], name)

    @staticmethod
    def _secret_string(backend: Any, properties: dict[str, Any]) -> str:
        """`SecretString` as given, or what `GenerateSecretString` makes: a password alone, or set at
        `GenerateStringKey` of the JSON `SecretStringTemplate`, as CloudFormation does."""
        if "SecretString" in properties:
            return str(properties["SecretString"])
        generate = properties.get("GenerateSecretString", {})
        password = json.loads(backend.get_random_password(
            password_length=int(generate.get("PasswordLength", 32)),
            exclude_characters=generate.get("ExcludeCharacters", ""),
            exclude_numbers=bool(generate.get("ExcludeNumbers", False)),
            exclude_punctuation=bool(generate.get("ExcludePunctuation", False)),
            exclude_uppercase=bool(generate.get("ExcludeUppercase", False)),
            exclude_lowercase=bool(generate.get("ExcludeLowercase", False)),
            include_space=bool(generate.get("IncludeSpace", False)),
            require_each_included_type=bool(generate.get("RequireEachIncludedType", True)),
        ))["RandomPassword"]
        if "SecretStringTemplate" not in generate:
            return password
        document = json.loads(generate["SecretStringTemplate"])
        document[generate["GenerateStringKey"]] = password
        return json.dumps(document)

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str) -> _CloudFormationSecret:
        # The value is the operator's (put after the deploy); an update keeps the secret as it is.
        return original_resource

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str) -> None:
        return None

    def delete(self, account_id: str, region_name: str) -> None:
        from moto.secretsmanager.models import secretsmanager_backends

        secretsmanager_backends[account_id][region_name].delete_secret(
            self.arn, recovery_window_in_days=None, force_delete_without_recovery=True)


@patch("secretsmanager")
def secrets_from_cloudformation() -> Undo:
    """Create `AWS::SecretsManager::Secret` resources of a CloudFormation stack (moto's `CreateSecret`).

    moto limitation: its CloudFormation skips secrets (not supported), so a stack's secret does not
    exist, and the `Ref` a caller's environment and its role's policy take is the bare logical id.
    With this, the secret exists under a generated name (stack, logical id, a suffix), `Ref` answers
    its ARN, and `GenerateSecretString` fills `GenerateStringKey` of the template with a generated
    password (or is the password, without a template), as CloudFormation does.
    """
    return add_resource_types({_CloudFormationSecret.cloudformation_type(): _CloudFormationSecret})
