"""moto's fixes, one module per AWS service, each registered once and undone by what applying it returned.

    undo = patches.apply_all(layers=..., account_id=..., lambda_account=...)   # what LocalCloud does
    patches.remove("atomic_dynamodb")   # a test showing moto's own behaviour ...
    patches.apply("atomic_dynamodb")    # ... puts the fix back
"""

from localcloud.emulator.patches import (  # noqa: F401 - importing a service's module registers its fixes
    apigateway,
    awslambda,
    cloudformation,
    cloudwatch,
    dynamodb,
    kms,
    s3,
    secretsmanager,
    sqs,
    ssm,
    stepfunctions,
    stepfunctions_map,
    stepfunctions_quotas,
)
from localcloud.emulator.patches.awslambda import LambdaAccount
from localcloud.emulator.patches.dynamodb import DYNAMODB_TOO_MANY_DIGITS
from localcloud.emulator.patches.registry import PATCHES, Patch, Undo, apply, apply_all, is_applied, remove
from localcloud.emulator.patches.stepfunctions_quotas import STATE_PAYLOAD_LIMIT_BYTES, state_payload_bytes

__all__ = [
    "DYNAMODB_TOO_MANY_DIGITS",
    "PATCHES",
    "STATE_PAYLOAD_LIMIT_BYTES",
    "LambdaAccount",
    "Patch",
    "Undo",
    "apply",
    "apply_all",
    "is_applied",
    "remove",
    "state_payload_bytes",
]
