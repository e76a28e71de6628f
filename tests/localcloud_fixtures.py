"""Fixtures of the emulator that tests/emulator and tests/e2e share: simulators, the app synthesized against them,
a LocalCloud per module, and the app deployed into it.

The LocalCloud is per module: moto's state is process-wide, and unit tests using `mock_aws` reset it.
Simulators and the synthesized assembly do not depend on moto, so they are built once per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack
from localcloud.referee.downstream_simulator import PROFILES, DownstreamSimulator


@pytest.fixture(scope="session")
def simulators(dev_config) -> Iterator[dict[str, DownstreamSimulator]]:
    started = {d.name: DownstreamSimulator(PROFILES[d.name]).start() for d in dev_config.downstreams}
    yield started
    for simulator in started.values():
        simulator.stop()


@pytest.fixture(scope="session")
def emulator_assembly(tmp_path_factory, dev_config, cdk_context, simulators) -> Path:
    """The dev stage pointed at the simulators, read fresh from SSM on every call (cache 0 s) so tests see tuning at once."""
    from stacks.app_stacks import synthesize  # the CDK loads only for the tests that deploy

    config = replace(
        dev_config.with_downstream_base_urls({name: sim.base_url for name, sim in simulators.items()}),
        tunables_cache_sec=0,
    )
    outdir = tmp_path_factory.mktemp("cdk.out.emulator")
    synthesize(config, outdir, cdk_context)
    return outdir


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalCloud]:
    with LocalCloud() as started:
        yield started


@pytest.fixture(scope="module")
def deployed(cloud: LocalCloud, emulator_assembly: Path, simulators) -> dict[str, DeployedStack]:
    """The app deployed, with the credentials the simulators issued put into their secrets, as an operator would."""
    from localcloud.drivers.credentials import provision_credentials

    stacks = cloud.deploy(emulator_assembly)
    provision_credentials(cloud, stacks, simulators)
    return stacks
