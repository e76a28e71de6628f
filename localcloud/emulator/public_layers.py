"""Powertools' public Lambda layers as the emulator offers them: where each release resolves, and which it can run.

On AWS, Powertools publishes one layer version per release, runtime and architecture in account
017000801446, and an SSM parameter `/aws/service/powertools/python/<arch>/<python>/<version>` holding
its ARN, which the templates resolve at deploy. The emulator runs every handler with the
aws-lambda-powertools installed here, so of all releases it can provide exactly one. It publishes the
parameters of that release and of the releases a template may still name (under AWS's own layer
numbers, recorded below), and tells the Lambda runtime which release a layer ARN is, so a function
deployed with another release is refused as AWS would fail it (an import error), and a function
deployed without the layer cannot import Powertools at all.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

POWERTOOLS_ACCOUNT = "017000801446"
POWERTOOLS_PACKAGE = "aws-lambda-powertools"
PARAMETER_PREFIX = "/aws/service/powertools/python/"
# Layer numbers AWS gave releases, as observed for python3.13 on x86_64, so that a template pinning a
# number resolves to its release (27 is 3.23.0, the number this app once pinned).
AWS_LAYER_NUMBERS = {"3.23.0": 27}
# The number the emulator gives a release whose AWS number is not recorded above: the emulator's own.
# Nothing depends on it, since templates resolve the release's parameter rather than name a number.
EMULATOR_LAYER_NUMBER = 10_000
RUNTIMES = ("python3.13",)
ARCHITECTURES = ("x86_64", "arm64")


def installed_powertools() -> str:
    """The release the emulator runs handlers with (the one requirements-lambda.txt installs)."""
    return importlib.metadata.version(POWERTOOLS_PACKAGE)


@dataclass(frozen=True)
class PublicLayer:
    """One published layer version: its ARN, the Powertools release in it, and what it is built for."""

    arn: str
    release: str
    runtime: str
    architecture: str

    @property
    def parameter_name(self) -> str:
        return f"{PARAMETER_PREFIX}{self.architecture}/{self.runtime}/{self.release}"


class PublicLayers:
    """The Powertools layers of one region, as far as the emulator knows them.

    :param region: the emulator's region (layer ARNs are regional).
    :param provided_release: the one release the emulator can run; default the installed one.
    """

    def __init__(self, region: str, provided_release: str | None = None) -> None:
        self.region = region
        self.provided_release = provided_release or installed_powertools()
        releases = {**AWS_LAYER_NUMBERS}
        releases.setdefault(self.provided_release, EMULATOR_LAYER_NUMBER)
        self.layers = [
            PublicLayer(self._arn(runtime, architecture, number), release, runtime, architecture)
            for release, number in sorted(releases.items())
            for runtime in RUNTIMES
            for architecture in ARCHITECTURES
        ]
        self._by_arn = {layer.arn: layer for layer in self.layers}

    def release_of(self, arn: str) -> str | None:
        """The Powertools release a layer version ARN holds; None for any other layer."""
        layer = self._by_arn.get(arn)
        return layer.release if layer else None

    def parameters(self) -> dict[str, str]:
        """Every public parameter the emulator publishes: name -> layer ARN."""
        return {layer.parameter_name: layer.arn for layer in self.layers}

    def _arn(self, runtime: str, architecture: str, number: int) -> str:
        name = f"AWSLambdaPowertoolsPythonV3-{runtime.replace('.', '')}-{architecture}"
        return f"arn:aws:lambda:{self.region}:{POWERTOOLS_ACCOUNT}:layer:{name}:{number}"
