"""Operator-tunable values seeded into SSM Parameter Store under one prefix per stage.

CloudFormation writes each value once; afterwards operators and the controller own it. A value only
changes on deploy when its seed in `cdk.json` changes, so routine redeploys never undo a tuning.
Lambdas get the parameter *name* in their environment and read the value themselves, with a cache.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from constructs import Construct


class TunableParameters(Construct):
    """One String parameter per key, named `<prefix>/<key>`, holding a JSON document.

    :param prefix: e.g. `/throttling/dev`; must start with `/` and not end with one.
    :param documents: key (e.g. `downstreams/crm`) -> the JSON text to seed.
    """

    def __init__(self, scope: Construct, construct_id: str, *, prefix: str, documents: Mapping[str, str]) -> None:
        super().__init__(scope, construct_id)
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"prefix must start with '/' and not end with one, got {prefix!r}")
        self.prefix = prefix
        self.parameters: dict[str, ssm.StringParameter] = {}
        for key, document in documents.items():
            construct_name = "".join(part.title().replace("_", "") for part in key.split("/"))
            self.parameters[key] = ssm.StringParameter(
                self,
                construct_name,
                parameter_name=f"{prefix}/{key}",
                string_value=document,
                description=f"Tunable, owned by operators and the controller after the first deploy: {key}",
                tier=ssm.ParameterTier.STANDARD,
            )

    def parameter(self, key: str) -> ssm.StringParameter:
        if key not in self.parameters:
            raise KeyError(f"no tunable {key!r}; known: {sorted(self.parameters)}")
        return self.parameters[key]

    def grant_read(self, grantee: iam.IGrantable, key: str) -> iam.Grant:
        """Read one tunable (a consumer needs only its own downstream's)."""
        return self.parameter(key).grant_read(grantee)

    def grant_write(self, grantee: iam.IGrantable) -> iam.Grant:
        """Read and write every tunable under the prefix (the controller and operator tooling)."""
        # Stack.format_arn with keyword arguments: a plain dict passed to Arn.format loses its
        # snake_case keys in jsii, leaving `...:parameter` with no name (a grant on nothing).
        parameters_arn = Stack.of(self).format_arn(
            service="ssm", resource="parameter", resource_name=f"{self.prefix.lstrip('/')}/*",
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:PutParameter"],
            resource_arns=[parameters_arn],
        )
