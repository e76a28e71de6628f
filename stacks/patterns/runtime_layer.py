"""The throttling runtime (the `throttling` package) as a Lambda layer, for functions outside this app's asset.

A function of another app gets the shared limiter, the token gate, the breaker, the tunables reader
and the downstream client by adding this layer: Lambda extracts it to `/opt/python`, where the python
runtime imports from. The layer holds the package as installed with this library (the same files
the library's tests ran), nothing else; Powertools comes from its own public layer
(`HandlerFunction` adds it), and boto3 from the runtime.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import throttling
from aws_cdk import RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from .handler_function import ARCHITECTURE, RUNTIME

RUNTIME_PACKAGE_DIR = Path(throttling.__file__).resolve().parent
_SKIPPED = ("__pycache__", "*.pyc")


class RuntimeLayer(Construct):
    """A layer version holding `python/throttling/...`.

    :param removal_policy: of the layer version; default RETAIN (functions deployed elsewhere may still use it).
    :param layer_props: other `aws_lambda.LayerVersion` keyword arguments or overrides (e.g. more runtimes).
    """

    def __init__(self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
                 layer_props: Mapping[str, Any] | None = None) -> None:
        super().__init__(scope, construct_id)
        defaults: dict[str, Any] = dict(
            code=lambda_.Code.from_asset(str(staged_runtime())),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="The throttling runtime: shared limiter, token gate, circuit breaker, tunables, downstream client",
            removal_policy=removal_policy,
        )
        self.layer_version = lambda_.LayerVersion(self, "Layer", **{**defaults, **(layer_props or {})})


def staged_runtime(package_dir: Path = RUNTIME_PACKAGE_DIR) -> Path:
    """A folder holding `python/throttling` copied from `package_dir`, the layer's layout.

    Kept under the system's temporary folder by a hash of the package's files, so every synth of the
    same files reuses one folder (CDK fingerprints its content, not its path). Written aside and
    renamed into place, so two synths at once never see half a copy.
    """
    digest = hashlib.sha256()
    files = sorted(path for path in package_dir.rglob("*")
                   if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc")
    for path in files:
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    target = Path(tempfile.gettempdir()) / f"throttling-runtime-layer-{digest.hexdigest()[:16]}"
    if not target.exists():
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        shutil.copytree(package_dir, staging / "python" / "throttling", ignore=shutil.ignore_patterns(*_SKIPPED))
        try:
            os.rename(staging, target)
        except OSError:  # another synth put the same copy in place first
            shutil.rmtree(staging, ignore_errors=True)
    return target
