"""Operator-tunable values seeded into SSM Parameter Store under one prefix per stage.

CloudFormation writes each value once; afterwards operators and the controller own it. A value only
changes on deploy when its seed in `cdk.json` changes, so routine redeploys never undo a tuning.
Lambdas get the parameter *name* in their environment and read the value themselves, with a cache.

Every value must be a flat JSON object (`FLAT_JSON_OBJECT_PATTERN`, the parameters' AllowedPattern),
so Parameter Store itself refuses what no reader could use, whoever writes it: the console, the CLI,
throttlectl or the controller. The Lambdas would refuse a broken document and keep their last good
value anyway, but the workflows read the same documents with `States.StringToJson`, and a value that
is not JSON fails that with `States.Runtime`, which no Catch can take: every run would fail at its
start for as long as the value stayed.
"""

from __future__ import annotations

from collections.abc import Mapping

import re

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from constructs import Construct


# A flat JSON object: quoted snake_case keys, and numbers (JSON's grammar: no NaN, no leading zeros),
# short identifier strings ("auto"), true, false or null as values, with JSON's whitespace anywhere
# between. Every text it matches parses as JSON (a property test generates them from the pattern).
# It uses only the syntax regex engines share (classes, groups, bounded repeats, both anchors), so
# Parameter Store reads it as the emulator and the tests do, whether it matches the whole value or finds it.
_WS = r"[ \t\n\r]*"
_MEMBER = (r'"[a-z][a-z0-9_]{0,39}"' + _WS + ":" + _WS
           + r'(-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,2})?|"[A-Za-z0-9_.:-]{0,64}"|true|false|null)')
FLAT_JSON_OBJECT_PATTERN = f"^{_WS}\\{{{_WS}({_MEMBER}({_WS},{_WS}{_MEMBER})*)?{_WS}\\}}{_WS}$"
# Parameter Store's limit on an AllowedPattern.
ALLOWED_PATTERN_MAX_LENGTH = 1024


class TunableParameters(Construct):
    """One String parameter per key, named `<prefix>/<key>`, holding a JSON document.

    :param prefix: e.g. `/throttling/dev`; must start with `/` and not end with one.
    :param documents: key (e.g. `downstreams/crm`) -> the JSON text to seed.
    """

    def __init__(self, scope: Construct, construct_id: str, *, prefix: str, documents: Mapping[str, str]) -> None:
        super().__init__(scope, construct_id)
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"prefix must start with '/' and not end with one, got {prefix!r}")
        for key, document in documents.items():
            if not re.search(FLAT_JSON_OBJECT_PATTERN, document):
                raise ValueError(f"documents[{key!r}] must be a flat JSON object of numbers and short strings (the"
                                 f" parameter's AllowedPattern would refuse it), got {document!r}")
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
                allowed_pattern=FLAT_JSON_OBJECT_PATTERN,
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
