"""A `cdk.json` mistake reaches the user as one line: the key, the bad value, the allowed values, and a failed synth.

The app runs as the CDK CLI runs it (a subprocess given its context in `CDK_CONTEXT_JSON`), so what is asserted
is what a user sees on stderr: no Python or jsii traceback around the message.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_app(context: dict[str, Any], outdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(outdir),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'lambdas'}"}
    return subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def set_in(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mistake: `value` put at the dotted `path` of the context."""
    def mutate(context: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = context
        for name in parents:
            target = target[name]
        target[leaf] = value
    return mutate


@pytest.mark.parametrize(
    ("mistake", "line"),
    [
        (set_in("stage", ""), "cdk.json: stage is empty (-c stage=): pass -c stage=<name>, one of: dev, prod"),
        (set_in("stage", "prd"), "cdk.json: stage 'prd' is not in cdk.json's stages (did you mean 'prod'?);"
                                 " configured: dev, prod; pass one of them with -c stage=<name>, or add stages.prd"),
        (set_in("defaults.downstreams.crm.head_room", 0.1),
         "cdk.json: unknown key stages.dev.downstreams.crm.head_room (did you mean 'headroom'?);"
         " stages.dev.downstreams.crm takes: auth, base_url, burst, discovery_floor_fraction, discovery_seed_fraction,"
         " expected_latency_ms, headroom, max_batch_size, max_in_flight, rate_ceiling_per_sec, rate_limit_per_sec,"
         " timeout_sec"),
        (set_in("stages.dev.tunables_cache_secs", 10),
         "cdk.json: unknown key stages.dev.tunables_cache_secs (did you mean 'tunables_cache_sec'?); stages.dev takes:"),
        (set_in("stages.dev.controlloop", {"cooldown_sec": 60}),
         "cdk.json: unknown key stages.dev.controlloop (did you mean 'control_loop'?); stages.dev takes:"),
        (set_in("defaults.downstreams.crm.burst", 0),
         "cdk.json: stages.dev.downstreams.crm.burst must be an integer in [1, 5000], got 0"),
        (set_in("stages.dev.removal_policy", "keep"),
         "cdk.json: stages.dev.removal_policy must be one of ['destroy', 'retain'], got 'keep'"),
    ],
)
def test_a_config_mistake_is_one_line_on_stderr_and_a_failed_synth(cdk_context, tmp_path, mistake, line):
    # GIVEN cdk.json's context with one mistake (dev unless the mistake is the stage)
    context = {**copy.deepcopy(cdk_context), "stage": "dev"}
    mistake(context)
    # WHEN the app is run as the CDK CLI runs it
    result = run_app(context, tmp_path)
    # THEN it fails, and stderr is that one line: no traceback, nothing synthesized
    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.splitlines()[0]] and result.stderr.startswith(line)
    assert "Traceback" not in result.stderr + result.stdout
    assert not list(tmp_path.glob("*.template.json"))


def test_through_the_cdk_cli_the_line_is_followed_only_by_the_clis_own_exit_note(tmp_path):
    # GIVEN `cdk synth -c stage=` (an empty stage, as a script with an unset variable would pass it)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'lambdas'}", "CDK_DISABLE_VERSION_CHECK": "1",
           "CDK_DISABLE_CLI_TELEMETRY": "true"}
    result = subprocess.run([str(ROOT / "node_modules" / ".bin" / "cdk"), "synth", "--quiet", "-c", "stage=",
                             "-o", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    # THEN synth fails with our line followed only by the CLI's note that the app exited (Node's own
    # warnings about its version may come first: they are the CLI's, not the app's)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    ours = lines.index("cdk.json: stage is empty (-c stage=): pass -c stage=<name>, one of: dev, prod")
    assert lines[ours + 1:] == [".venv/bin/python app.py: Subprocess exited with error 1"]
    assert "Traceback" not in result.stderr
