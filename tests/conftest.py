"""Fixtures shared by every kind of test: the cdk.json context, config, and in-process synthesis."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]

# The emulator's fixtures (simulators, the app synthesized against them, a LocalCloud, the deployed app),
# shared by tests/emulator and tests/e2e.
pytest_plugins = ["tests.localcloud_fixtures"]

# Tests never touch real AWS: fake credentials and a fixed region before anything builds a client.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
    JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
)
for leaked in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(leaked, None)

# Property tests judge results, never speed: the suite runs beside other work on 2 cores, where a 200 ms
# per-example deadline (Hypothesis's default) fails a correct example that happened to wait for a core.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")


@pytest.fixture(scope="session")
def cdk_context() -> dict[str, Any]:
    return json.loads((ROOT / "cdk.json").read_text())["context"]


@pytest.fixture(scope="session")
def cdk_stages(cdk_context: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each stage's settings as the app reads them: cdk.json's `defaults` with the stage's own merged over them."""
    from stacks.config import merge_defaults

    return {name: merge_defaults(cdk_context["defaults"], own) for name, own in cdk_context["stages"].items()}


@pytest.fixture(scope="session")
def dev_config(cdk_context: dict[str, Any]):
    from stacks.config import load_config

    return load_config(cdk_context["stages"], "dev", defaults=cdk_context["defaults"])


@pytest.fixture(scope="session")
def templates(dev_assembly) -> dict[str, dict[str, Any]]:
    """The dev stage's templates as CloudFormation gets them, by stack key; read them, copy before changing."""
    from aws_cdk.assertions import Template

    stacks, _ = dev_assembly
    return {key: Template.from_stack(stack).to_json() for key, stack in stacks.items()}


@pytest.fixture(scope="session")
def dev_assembly(tmp_path_factory: pytest.TempPathFactory, dev_config, cdk_context) -> Iterator[tuple[dict, Any]]:
    """The dev stage synthesized once per session, with cdk-nag on (so synth itself fails on a finding)."""
    from dataclasses import replace

    from stacks.app_stacks import synthesize

    stacks, assembly = synthesize(replace(dev_config, nag=True), tmp_path_factory.mktemp("cdk.out"), cdk_context)
    yield stacks, assembly


@pytest.fixture(scope="session")
def import_handler():
    """Import a handler module as Lambda would: with its environment variables set while it loads.

    Handlers read their environment at import (clients and readers are built once per execution
    environment); the variables are restored afterwards so no other test sees them.
    """
    import importlib
    from collections.abc import Mapping

    def load(module: str, environment: Mapping[str, str]) -> Any:
        saved = {name: os.environ.get(name) for name in environment}
        os.environ.update(environment)
        try:
            return importlib.import_module(module)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    return load
