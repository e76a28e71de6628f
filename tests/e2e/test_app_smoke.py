"""The whole synthesized app deployed into the emulator, and one real path run through a deployed handler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localcloud.referee.downstream_simulator import PROFILES

pytestmark = pytest.mark.emulator

ROOT = Path(__file__).resolve().parents[2]


def invoke(cloud, function_name: str, event: dict) -> tuple[dict, str | None]:
    response = cloud.client("lambda").invoke(FunctionName=function_name, Payload=json.dumps(event))
    return json.loads(response["Payload"].read()), response.get("FunctionError")


@pytest.fixture
def crm_caller(deployed) -> str:
    return deployed["Throttling-dev-Workflows"].outputs["CrmCallerName"]


def test_every_stack_is_deployed_with_its_resources(deployed, cloud, dev_config):
    # THEN every layer is up, in dependency order
    assert list(deployed) == ["Throttling-dev-SharedLimits", "Throttling-dev-Workflows", "Throttling-dev-Buffers",
                              "Throttling-dev-Ingress", "Throttling-dev-ControlLoop"]
    # AND every tunable is seeded under the stage prefix
    ssm = cloud.client("ssm")
    # (paged: GetParametersByPath answers at most 10 parameters a call)
    pages = ssm.get_paginator("get_parameters_by_path").paginate(Path="/throttling/dev", Recursive=True)
    names = {p["Name"] for page in pages for p in page["Parameters"]}
    assert names == {f"/throttling/dev/{kind}/{d.name}" for d in dev_config.downstreams
                     for kind in ("downstreams", "breakers")}
    # AND every caller function exists with its environment
    functions = cloud.client("lambda").list_functions()["Functions"]
    assert len([f for f in functions if "Caller" in f["FunctionName"]]) == len(dev_config.downstreams)
    # AND the limit tables exist
    tables = cloud.client("dynamodb").list_tables()["TableNames"]
    assert len([t for t in tables if t.startswith("Throttling-dev-SharedLimits")]) == 3


def test_a_deployed_handler_calls_the_downstream(cloud, crm_caller, fresh_simulators):
    # WHEN the deployed CRM caller is invoked
    result, error = invoke(cloud, crm_caller, {"method": "GET", "path": "/users/42", "correlation_id": "smoke-1"})
    # THEN the CRM simulator answered it, and the handler passed on the correlation id it was given
    assert error is None, result
    assert result["status"] == 200
    assert result["body"]["path"] == "/users/42"
    (request,) = fresh_simulators["crm"].requests
    assert request.headers.get("X-Correlation-Id") == "smoke-1"
    # AND the tunables in force are the ones seeded in SSM
    assert result["tunables_in_force"] == {"rate_per_sec": 9.9, "burst": 5, "max_concurrency": 3, "mode": "auto"}


def test_the_code_that_ran_is_the_deployed_asset(cloud, crm_caller, fresh_simulators):
    # WHEN the function runs
    invoke(cloud, crm_caller, {"path": "/users/7"})
    # THEN the emulator ran it from the zip CloudFormation deployed, holding this repo's handler
    record = [r for r in cloud.lambda_runtime.invocations if r.function_name == crm_caller][-1]
    assert not record.errored
    (code_dir,) = [d for d in (cloud.work_dir / "code").iterdir() if (d / "handlers" / "call_downstream.py").exists()]
    assert (code_dir / "handlers" / "call_downstream.py").read_text() == (
        ROOT / "lambdas" / "handlers" / "call_downstream.py"
    ).read_text()
    # AND its Powertools logger wrote structured lines to the function's log
    log_lines = [json.loads(line) for line in cloud.lambda_runtime.log_path(crm_caller).read_text().splitlines()
                 if line.startswith("{") and '"message"' in line]
    assert any(line["message"] == "downstream answered" and line["service"] == "crm-caller" for line in log_lines)


def test_a_429_becomes_the_error_workflows_retry_on(cloud, crm_caller, fresh_simulators):
    # GIVEN a CRM that admits one call per 100 s
    crm = fresh_simulators["crm"]
    crm.set_profile(PROFILES["crm"].merged_with({"rate_per_sec": 0.01, "burst": 1}))
    # WHEN two calls arrive
    first, first_error = invoke(cloud, crm_caller, {"path": "/users/1"})
    second, second_error = invoke(cloud, crm_caller, {"path": "/users/2"})
    # THEN the second fails with DownstreamThrottled, in Lambda's error shape, carrying the downstream's Retry-After
    assert first_error is None
    assert second_error == "Handled"
    assert second["errorType"] == "DownstreamThrottled"
    details = json.loads(second["errorMessage"])
    assert details["status"] == 429
    assert 90 <= details["retry_after_sec"] <= 102  # Retry-After or the epoch reset, whichever is later


def test_operators_tune_through_ssm_and_a_bad_value_keeps_the_last_good(cloud, crm_caller, fresh_simulators):
    ssm = cloud.client("ssm")
    name = "/throttling/dev/downstreams/crm"
    # WHEN an operator lowers the rate
    ssm.put_parameter(Name=name, Overwrite=True, Type="String",
                      Value=json.dumps({"rate_per_sec": 4, "burst": 4, "max_concurrency": 1, "mode": "manual"}))
    tuned, _ = invoke(cloud, crm_caller, {"path": "/users/3"})
    # THEN the next call runs with it
    assert tuned["tunables_in_force"] == {"rate_per_sec": 4.0, "burst": 4, "max_concurrency": 1, "mode": "manual"}
    # WHEN someone writes a document no Lambda can use (Parameter Store takes only flat JSON objects, so a
    # field of the wrong type is the garbage that gets through)
    ssm.put_parameter(Name=name, Overwrite=True, Type="String",
                      Value='{"rate_per_sec": "fast", "burst": 4, "max_concurrency": 1}')
    kept, error = invoke(cloud, crm_caller, {"path": "/users/4"})
    # THEN the function still works with the last good value, and says so in its log
    assert error is None
    assert kept["tunables_in_force"]["rate_per_sec"] == 4.0
    assert "refused an invalid tunables document" in cloud.lambda_runtime.log_path(crm_caller).read_text()
    # WHEN a value above the CRM's contract is written THEN it is clamped to the contract
    ssm.put_parameter(Name=name, Overwrite=True, Type="String",
                      Value=json.dumps({"rate_per_sec": 500, "burst": 10, "max_concurrency": 2}))
    clamped, _ = invoke(cloud, crm_caller, {"path": "/users/5"})
    assert clamped["tunables_in_force"]["rate_per_sec"] == 10.0


def test_an_operator_s_tuning_then_two_bad_values(cloud, crm_caller, fresh_simulators):
    from localcloud.drivers import tuning

    # GIVEN the deployed CRM caller (its tunables read fresh: the emulator's stage caches for 0 s)
    ssm = cloud.client("ssm")
    before = ssm.get_parameter(Name="/throttling/dev/downstreams/crm")["Parameter"]["Value"]
    # WHEN the demo's operator tunes it, then writes text that is not JSON, then JSON it cannot use
    run = tuning.run(cloud, crm_caller)
    # THEN the tuning is in force, Parameter Store refuses the text, and the caller keeps the tuning
    tuned = {"burst": 4, "max_concurrency": 1, "mode": "manual", "rate_per_sec": 4.0}
    assert run == tuning.TuningRun(after_tuning=tuned, not_json_refused=True, after_unusable=tuned)
    # AND the document is back as it was
    assert ssm.get_parameter(Name="/throttling/dev/downstreams/crm")["Parameter"]["Value"] == before
