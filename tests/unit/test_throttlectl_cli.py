"""`throttlectl` before it reaches a stage: its version, the region it picks, the stage names it takes, and `make plan`.

AWS is moto here (`mock_aws`): a stack whose stage name says which region it was created in shows which region
the CLI read, through the "stages deployed here" its not-found error lists.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from throttlectl.cli import DISTRIBUTION, main

ROOT = Path(__file__).resolve().parents[2]
A_STACK = json.dumps({"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}})


def run(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, environ={} if environ is None else environ)
    return code, out.getvalue(), err.getvalue()


def test_version_is_the_installed_distributions_which_is_pyprojects():
    # WHEN asked for its version
    code, out, _ = run("--version")
    # THEN it prints the version pip recorded from pyproject.toml, and exits 0
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION
    assert (code, out) == (0, f"throttlectl {version(DISTRIBUTION)}\n")
    assert version(DISTRIBUTION) == project["version"]


@pytest.fixture
def regions(monkeypatch):
    """One stage deployed in each of two regions, and no region in the process's environment or config files."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(ROOT / "no-such-aws-config"))
    with mock_aws():
        for region, stage in (("eu-west-2", "london"), ("us-east-1", "virginia")):
            boto3.client("cloudformation", region_name=region).create_stack(
                StackName=f"Throttling-{stage}-SharedLimits", TemplateBody=A_STACK)
        yield


@pytest.mark.parametrize(
    ("environ", "found"),
    [
        ({"AWS_REGION": "eu-west-2"}, "london"),
        ({"AWS_DEFAULT_REGION": "us-east-1"}, "virginia"),
        # AWS_REGION wins, as in the AWS SDKs
        ({"AWS_REGION": "eu-west-2", "AWS_DEFAULT_REGION": "us-east-1"}, "london"),
    ],
)
def test_the_region_comes_from_aws_region_then_aws_default_region(regions, environ, found):
    # GIVEN only the region variables `environ` names
    # WHEN a command needs AWS (dev is deployed nowhere)
    code, _, err = run("--stage", "dev", "status", environ=environ)
    # THEN it asked that region: the stages it found there are that region's
    assert code == 3
    assert f"stack Throttling-dev-SharedLimits is not deployed (stages deployed here: {found})" in err


def test_region_flag_beats_the_environment(regions):
    code, _, err = run("--stage", "dev", "--region", "us-east-1", "status", environ={"AWS_REGION": "eu-west-2"})
    assert code == 3 and "(stages deployed here: virginia)" in err


def test_no_region_anywhere_says_every_way_to_give_one(regions):
    code, out, err = run("--stage", "dev", "status", environ={})
    assert (code, out) == (2, "")
    assert err == ("throttlectl: no AWS region: pass --region, or set AWS_REGION (or AWS_DEFAULT_REGION), or use a"
                   " profile with a region\n")


def test_any_stage_name_cdk_json_may_hold_is_looked_up(regions):
    # GIVEN a stage that is neither dev nor prod WHEN it is asked for THEN AWS, not a fixed list, answers
    code, _, err = run("--stage", "london", "status", environ={"AWS_REGION": "eu-west-2"})
    assert code != 2, err  # found: it goes on to read the stage (this stack has no outputs to read)
    code, _, err = run("--stage", "qa", "status", environ={"AWS_REGION": "eu-west-2"})
    assert code == 3 and "stack Throttling-qa-SharedLimits is not deployed (stages deployed here: london)" in err


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (("show",), {}, "throttlectl: --stage is required (a stage of cdk.json, e.g. dev), or set THROTTLING_STAGE\n"),
        (("--stage", "Dev", "show"), {},
         "throttlectl: stage names are lower-case letters and digits, starting with a letter, at most 20 (as"
         " cdk.json's stages), got 'Dev' (from --stage)\n"),
        (("show",), {"THROTTLING_STAGE": "eu-prod"},
         "throttlectl: stage names are lower-case letters and digits, starting with a letter, at most 20 (as"
         " cdk.json's stages), got 'eu-prod' (from THROTTLING_STAGE)\n"),
        (("--stage", "dev prod", "empty-buckets", "--yes"), {}, "got 'dev prod' (from --stage)"),
        (("--stage", "", "preflight"), {}, "--stage is required"),
    ],
)
def test_a_missing_or_malformed_stage_is_refused_before_any_aws_call(regions, argv, environ, message):
    # GIVEN no region anywhere, so any AWS client would fail: the stage's refusal must come first
    code, out, err = run(*argv, environ=environ)
    assert (code, out) == (2, "")
    assert message in err


# -- plan --------------------------------------------------------------------------------------------------


def test_plan_ends_with_the_refusal_when_the_checked_concurrency_overruns_the_limit():
    code, out, err = run("plan", "--limit-rps", "10", "--latency-ms", "200", "--concurrency", "5")
    # THEN the plan is printed, exit 2, and the refusal is the last line, saying what to use instead
    assert code == 2 and "SSM document" in out
    assert err.splitlines()[-1] == ("throttlectl: refused: 5 calls in flight of 200 ms offer 25 req/s, 2.5x the 10 req/s"
                                    " limit: use a max_concurrency of at most 3 (the plan above: as many as spend"
                                    " every token of the shared limiter)")
    # AND the table names both figures: the plan's, and concurrency alone as the brake (no limiter)
    assert "Map MaxConcurrency (max_concurrency)  3" in out and "concurrency alone, no limiter         2" in out


def test_plan_accepts_its_own_concurrency_where_even_one_call_offers_too_much():
    # GIVEN the mainframe: 1 req/s at 300 ms, where even 1 call in flight offers 3.3 req/s
    code, out, err = run("plan", "--limit-rps", "1", "--latency-ms", "300", "--burst", "1", "--headroom", "0.2",
                         "--concurrency", "1")
    # THEN the plan's own 1 is not refused (nothing lower exists): the warning says the limiter holds the rate
    assert (code, err) == (0, "")
    assert "warning: even 1 call in flight offers 3.33333 req/s > 1 req/s" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--limit-rps", "1e12", "--latency-ms", "1e6"), "limit_rps must be a number in [0.01, 10000]"),
        (("--limit-rps", "10", "--latency-ms", "1e6"), "latency_ms must be a number in [1, 60000]"),
        (("--limit-rps", "10", "--latency-ms", "200", "--headroom", "0.9"), "headroom must be a number in [0, 0.5]"),
        (("--limit-rps", "10", "--latency-ms", "200", "--burst", "10000"), "burst must be a whole number in [1, 5000]"),
    ],
)
def test_plan_refuses_what_no_stage_could_configure_and_the_lambdas_would_clamp(argv, message):
    code, out, err = run("plan", *argv)
    assert (code, out) == (2, "")
    assert err.startswith(f"throttlectl: {message}")


def test_plan_from_a_ceiling_plans_as_from_a_contract_and_seeds_the_discovery():
    # GIVEN a downstream whose limit is unknown, only that it is below 50 req/s
    code, out, err = run("plan", "--ceiling-rps", "50", "--latency-ms", "200", "--burst", "10", "--json")
    plan = json.loads(out)
    # THEN the settings are those of a 50 req/s contract, and the document carries the seed and the floor
    assert (code, err) == (0, "")
    assert (plan["limit_known"], plan["map_concurrency"], plan["limiter_rate_per_sec"]) == (False, 15, 49.5)
    assert plan["tunables_document"] == {"burst": 5, "floor_fraction": 0.05, "max_concurrency": 15, "mode": "auto",
                                         "rate_per_sec": 49.5, "seed_fraction": 0.1}
    # AND the text says where the bucket starts and that the limit is discovered under the ceiling
    code, out, err = run("plan", "--ceiling-rps", "50", "--latency-ms", "200", "--seed-fraction", "0.2")
    assert "the limit is unknown: planned from the 50 req/s ceiling as from a contract; the inner loop starts an" \
           " unused bucket at 9.9 req/s (seed_fraction 0.2)" in out
    assert '"floor_fraction": 0.1' in out and '"seed_fraction": 0.2' in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--limit-rps", "10", "--latency-ms", "200", "--seed-fraction", "0.1"),
         "--seed-fraction and --floor-fraction apply only with --ceiling-rps (a limit nobody told you)"),
        (("--ceiling-rps", "50", "--latency-ms", "200", "--seed-fraction", "1.5"),
         "the planned document: seed_fraction 1.5 is above the upper bound 1; the Lambdas would clamp it to 1"),
        (("--ceiling-rps", "50", "--latency-ms", "200", "--seed-fraction", "0.05", "--floor-fraction", "0.1"),
         "the planned document: seed_fraction 0.05 is below the floor_fraction of 0.1"),
    ],
)
def test_plan_refuses_a_discovery_no_stage_could_configure(argv, message):
    code, out, err = run("plan", *argv)
    assert (code, out) == (2, "")
    assert err.startswith(f"throttlectl: {message}")


def test_plan_takes_one_rate_the_limit_or_a_ceiling():
    code, _, err = run("plan", "--limit-rps", "10", "--ceiling-rps", "50", "--latency-ms", "200")
    assert code == 2 and "argument --ceiling-rps: not allowed with argument --limit-rps" in err


def make_plan(**variables: str) -> subprocess.CompletedProcess[str]:
    # -o: the deploy stamp counts as up to date, so the target runs only throttlectl; PY: this interpreter
    assignments = [f"{name}={value}" for name, value in variables.items()]
    # As a user runs it: not as a sub-make of `make test`, whose level would prefix make's own lines `make[1]:`.
    env = {name: value for name, value in os.environ.items() if name not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'lambdas'}"
    return subprocess.run(["make", "--no-print-directory", "-o", ".stamps/deploy", "plan", f"PY={sys.executable}",
                           *assignments], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_make_plan_passes_headroom_and_ends_with_the_refusal():
    # WHEN make plan is given a headroom and a concurrency over the limit
    result = make_plan(LIMIT_RPS="10", LATENCY_MS="200", HEADROOM="0.1", CONCURRENCY="5")
    # THEN the headroom reached the plan (10 x 0.9 = 9 req/s)
    assert "limiter rate_per_sec = 10 x (1 - 0.1) = 9 req/s" in result.stdout
    # AND make fails, the refusal being the last line before make's own note of the failed target
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if not line.startswith("make:")]
    assert lines[-1].startswith("throttlectl: refused: 5 calls in flight of 200 ms offer 25 req/s")
    # AND the command is not echoed ahead of the plan
    assert not result.stdout.startswith(sys.executable)


def test_make_plan_takes_a_ceiling_for_a_limit_nobody_told_us():
    result = make_plan(CEILING_RPS="50", LATENCY_MS="200")
    assert result.returncode == 0 and "the limit is unknown: planned from the 50 req/s ceiling" in result.stdout


def test_make_plan_refuses_a_limit_the_lambdas_would_clamp():
    result = make_plan(LIMIT_RPS="1e15", LATENCY_MS="200")
    assert result.returncode == 2 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("make:")]
    assert lines == ["throttlectl: limit_rps must be a number in [0.01, 10000] (req/s, the rates the Lambdas' tunables"
                     " take), got 1000000000000000.0"]
