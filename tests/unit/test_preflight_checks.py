"""`throttlectl preflight`'s arithmetic, and its checks against AWS's API shapes (botocore's Stubber)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from throttlectl.preflight import (
    CONCURRENCY_QUOTA_CODE,
    check_concurrency,
    check_powertools_parameters,
    concurrency_verdict,
    read_stage_assembly,
    reservations_in,
)

NEW_ACCOUNT = {"ConcurrentExecutions": 10, "UnreservedConcurrentExecutions": 10}


def function(reserved: int | None = None) -> dict:
    properties = {"Handler": "handlers.controller.handler"}
    if reserved is not None:
        properties["ReservedConcurrentExecutions"] = reserved
    return {"Type": "AWS::Lambda::Function", "Properties": properties}


STAGE_TEMPLATES = {
    "Throttling-prod-ControlLoop": {"Resources": {"Controller": function(1), "Other": function()}},
    "Throttling-prod-Workflows": {"Resources": {"Authorizer": function(5)}},
    "Throttling-prod-Buffers": {"Resources": {"Consumer": function(2)}},
    "Throttling-prod-SharedLimits": {"Resources": {"Reclaimer": function(1)}},
}


def test_the_templates_reservations_are_added_up():
    wanted = reservations_in(STAGE_TEMPLATES)
    assert sum(wanted.values()) == 9
    assert wanted[("Throttling-prod-ControlLoop", "Controller")] == 1
    assert ("Throttling-prod-ControlLoop", "Other") not in wanted


def test_a_new_account_cannot_take_nine_reservations_and_is_told_the_limit_to_ask_for():
    # GIVEN a new account (limit 10, all of it unreserved) and a first deploy asking for 9
    verdict = concurrency_verdict(NEW_ACCOUNT, reservations_in(STAGE_TEMPLATES), {})
    # THEN Lambda's minimum (the whole limit, here) would be broken, and 109 is the smallest limit that works
    assert (verdict.minimum_unreserved, verdict.unreserved_after, verdict.ok) == (10, 1, False)
    assert verdict.limit_needed == 109


def test_without_reservations_a_new_account_takes_the_stage():
    assert concurrency_verdict(NEW_ACCOUNT, {}, {}).ok


def test_an_update_counts_what_the_stage_holds_already():
    # GIVEN an account of 109 whose 9 reserved executions are the stage's own, and the same templates
    wanted = reservations_in(STAGE_TEMPLATES)
    account = {"ConcurrentExecutions": 109, "UnreservedConcurrentExecutions": 100}
    # WHEN the stage is deployed again THEN nothing changes for the account: it passes
    verdict = concurrency_verdict(account, wanted, dict(wanted))
    assert (verdict.unreserved_after, verdict.ok) == (100, True)
    # AND a check that ignored what the stage holds would have refused it (100 - 9 < 100)
    assert not concurrency_verdict(account, wanted, {}).ok
    # AND one more reserved execution than the account can give is refused
    more = {**wanted, ("Throttling-prod-Workflows", "Authorizer"): 6}
    assert not concurrency_verdict(account, more, dict(wanted)).ok


def test_turning_reservations_off_frees_what_the_stage_held():
    account = {"ConcurrentExecutions": 50, "UnreservedConcurrentExecutions": 41}
    assert concurrency_verdict(account, {}, reservations_in(STAGE_TEMPLATES)).ok


def client(service: str):
    return boto3.client(service, region_name="us-east-1")


def assembly_of(tmp_path: Path, templates: dict) -> Path:
    artifacts = {}
    for name, template in templates.items():
        (tmp_path / f"{name}.template.json").write_text(json.dumps(template))
        artifacts[name] = {"type": "aws:cloudformation:stack", "environment": "aws://unknown-account/us-east-1",
                           "properties": {"templateFile": f"{name}.template.json"}}
    (tmp_path / "manifest.json").write_text(json.dumps({"version": "40.0.0", "artifacts": artifacts}))
    return tmp_path


def test_a_first_deploy_into_a_new_account_is_refused_with_the_quota_and_the_setting_to_change(tmp_path):
    # GIVEN the prod stage's templates and a new account, as AWS's APIs answer
    assembly = read_stage_assembly(assembly_of(tmp_path, STAGE_TEMPLATES), "prod")
    lambda_, cloudformation = client("lambda"), client("cloudformation")
    with Stubber(lambda_) as lambda_stub, Stubber(cloudformation) as cfn_stub:
        for stack in sorted(STAGE_TEMPLATES):
            cfn_stub.add_client_error("list_stack_resources", "ValidationError",
                                      f"Stack with id {stack} does not exist", expected_params={"StackName": stack})
        lambda_stub.add_response("get_account_settings", {"AccountLimit": {
            "TotalCodeSize": 80_530_636_800, "CodeSizeUnzipped": 262_144_000, "CodeSizeZipped": 52_428_800,
            "ConcurrentExecutions": 10, "UnreservedConcurrentExecutions": 10}, "AccountUsage": {
            "TotalCodeSize": 0, "FunctionCount": 0}})
        # WHEN the check runs
        check = check_concurrency(assembly, lambda_client=lambda_, cloudformation=cloudformation, region="us-east-1")
    # THEN it refuses, saying the limit to ask for, the quota to raise and the stage setting to turn off
    assert not check.ok
    assert f"--quota-code {CONCURRENCY_QUOTA_CODE}" in check.remedy and "--desired-value 1000" in check.remedy
    assert "at least 109" in check.remedy and '"reserve_concurrency": false under stages.prod' in check.remedy
    assert "reserves 9 concurrent executions" in check.summary


def test_a_powertools_release_without_its_parameter_is_refused(tmp_path):
    name = "/aws/service/powertools/python/x86_64/python3.13/3.99.0"
    templates = {"Throttling-dev-Workflows": {
        "Parameters": {"Layer": {"Type": "AWS::SSM::Parameter::Value<String>", "Default": name}},
        "Resources": {"Fn": function()}}}
    assembly = read_stage_assembly(assembly_of(tmp_path, templates), "dev")
    ssm = client("ssm")
    with Stubber(ssm) as stub:
        stub.add_client_error("get_parameter", "ParameterNotFound", expected_params={"Name": name})
        check = check_powertools_parameters(assembly, ssm=ssm, region="us-east-1")
    assert not check.ok and name in check.summary and "requirements-lambda.txt" in check.remedy


def test_an_assembly_without_the_stage_is_not_found(tmp_path):
    from throttlectl.exceptions import NotFound

    with pytest.raises(NotFound, match="holds no stack of stage 'prod'"):
        read_stage_assembly(assembly_of(tmp_path, {"Throttling-dev-Workflows": {"Resources": {}}}), "prod")


# -- Parameter Store throughput --------------------------------------------------------------------

SETTING = "/ssm/parameter-store/high-throughput-enabled"


def throughput_assembly(tmp_path: Path, wanted: bool):
    templates = {"Throttling-prod-SharedLimits": {
        "Metadata": {"Throttling::AccountSettings": {"ParameterStoreHighThroughput": wanted}}, "Resources": {}}}
    return read_stage_assembly(assembly_of(tmp_path, templates), "prod")


def service_setting(value: str) -> dict:
    return {"ServiceSetting": {"SettingId": SETTING, "SettingValue": value, "Status": "Default",
                               "ARN": f"arn:aws:ssm:us-east-1:123456789012:servicesetting{SETTING}"}}


@pytest.mark.parametrize(("wanted", "was", "apply", "ok", "updated"), [
    (True, "false", True, True, True),     # the stage asks, --apply turns it on
    (True, "false", False, False, False),  # the stage asks, without --apply: refused, nothing changed
    (True, "true", False, True, False),    # already on
    (False, "true", True, True, False),    # not asked for: never turned off (others may rely on it)
    (False, "false", True, True, False),
])
def test_higher_throughput_is_turned_on_only_when_the_stage_asks_and_only_with_apply(tmp_path, wanted, was, apply,
                                                                                     ok, updated):
    from throttlectl.preflight import check_parameter_store_throughput

    ssm = client("ssm")
    with Stubber(ssm) as stub:
        stub.add_response("get_service_setting", service_setting(was), {"SettingId": SETTING})
        if updated:
            stub.add_response("update_service_setting", {}, {"SettingId": SETTING, "SettingValue": "true"})
        check = check_parameter_store_throughput(throughput_assembly(tmp_path, wanted), ssm=ssm, apply=apply,
                                                 region="us-east-1")
        stub.assert_no_pending_responses()
    assert check.ok is ok
    if not ok:
        assert "--apply" in check.remedy and "billed per API interaction" in check.remedy
