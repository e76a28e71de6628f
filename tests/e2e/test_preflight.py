"""`throttlectl preflight` against the emulator's account, which enforces Lambda's concurrency rules as AWS does."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from localcloud.emulator.deployer import DeploymentFailed
from stacks.app_stacks import synthesize
from throttlectl.cli import main

pytestmark = pytest.mark.emulator


@pytest.fixture(scope="module")
def reserving_assembly(tmp_path_factory, dev_config, cdk_context, simulators) -> Path:
    """The dev stage with reservations on (as prod has them): 9 reserved executions."""
    config = replace(dev_config.with_downstream_base_urls({n: s.base_url for n, s in simulators.items()}),
                     reserve_concurrency=True)
    outdir = tmp_path_factory.mktemp("cdk.out.reserving")
    synthesize(config, outdir, cdk_context)
    return outdir


@pytest.fixture
def concurrency_limit(cloud):
    """Set the emulated account's Lambda concurrency limit for one test."""
    saved = cloud.lambda_account.concurrency_limit

    def set_limit(limit: int) -> None:
        cloud.lambda_account.concurrency_limit = limit

    yield set_limit
    cloud.lambda_account.concurrency_limit = saved


def preflight(cloud, assembly: Path) -> tuple[int, dict, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--stage", "dev", "--json", "preflight", "--assembly", str(assembly)],
                client_factory=cloud.client, stdout=out, stderr=err)
    return code, json.loads(out.getvalue()), err.getvalue()


def test_a_new_account_takes_the_stage_without_reservations_and_refuses_it_with_them(
        cloud, emulator_assembly, reserving_assembly, concurrency_limit):
    # GIVEN a new account: a concurrency limit of 10
    concurrency_limit(10)
    # WHEN the stage with reservations is checked THEN the pre-flight refuses it, saying what to do
    code, report, error = preflight(cloud, reserving_assembly)
    assert code == 2
    (concurrency,) = [c for c in report["checks"] if c["name"] == "lambda concurrency"]
    assert (concurrency["ok"], concurrency["details"]["wanted"], concurrency["details"]["limit_needed"]) == (
        False, 9, 109)
    assert "L-B99A9384" in error and '"reserve_concurrency": false under stages.dev' in error
    # AND the deploy it warned of fails as on AWS
    with pytest.raises(DeploymentFailed, match=r"UnreservedConcurrentExecution below its minimum value of \[10\]"):
        cloud.deploy(reserving_assembly)
    cloud.client("cloudformation").delete_stack(StackName="Throttling-dev-SharedLimits")
    # WHEN the dev stage (reservations off) is checked THEN it passes: it reserves nothing
    code, report, _ = preflight(cloud, emulator_assembly)
    (concurrency,) = [c for c in report["checks"] if c["name"] == "lambda concurrency"]
    assert code == 0 and all(check["ok"] for check in report["checks"])
    assert (concurrency["details"]["wanted"], concurrency["details"]["unreserved_after"]) == (0, 10)


def test_an_update_counts_the_reservations_the_stage_already_holds(cloud, concurrency_limit, tmp_path):
    # GIVEN a stage of two functions reserving 5 and 4, deployed into an account of 1,000
    concurrency_limit(1_000)
    role = cloud.client("iam").create_role(RoleName="preflight-probe", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    function = {"Type": "AWS::Lambda::Function", "Properties": {
        "Runtime": "python3.13", "Handler": "index.handler", "Role": role,
        "Code": {"ZipFile": "def handler(event, context):\n    return event\n"}}}
    template = {"Resources": {name: {**function, "Properties": {**function["Properties"],
                                                                 "ReservedConcurrentExecutions": reserved}}
                              for name, reserved in (("Authorizer", 5), ("Consumer", 4))}}
    assembly = one_stack_assembly(tmp_path, "Throttling-dev-Probe", template)
    cloud.deploy(assembly)
    reserved_before = 1_000 - cloud.client("lambda").get_account_settings()["AccountLimit"][
        "UnreservedConcurrentExecutions"]
    # WHEN the account's limit leaves exactly 100 unreserved and the same stage is checked again
    concurrency_limit(reserved_before + 100)
    code, report, _ = preflight(cloud, assembly)
    # THEN it passes: the deploy changes nothing for the account (a check ignoring what it holds would refuse)
    (concurrency,) = [c for c in report["checks"] if c["name"] == "lambda concurrency"]
    assert code == 0 and (concurrency["details"]["held"], concurrency["details"]["unreserved_after"]) == (9, 100)
    # AND the deploy itself agrees
    cloud.deploy(assembly)
    # AND one more reserved execution is refused by both
    template["Resources"]["Consumer"]["Properties"]["ReservedConcurrentExecutions"] = 5
    assembly = one_stack_assembly(tmp_path, "Throttling-dev-Probe", template)
    assert preflight(cloud, assembly)[0] == 2
    with pytest.raises(DeploymentFailed, match=r"below its minimum value of \[100\]"):
        cloud.deploy(assembly)


def one_stack_assembly(directory: Path, name: str, template: dict) -> Path:
    (directory / f"{name}.template.json").write_text(json.dumps(template))
    (directory / "manifest.json").write_text(json.dumps({"version": "40.0.0", "artifacts": {
        name: {"type": "aws:cloudformation:stack", "environment": "aws://unknown-account/us-east-1",
               "properties": {"templateFile": f"{name}.template.json"}}}}))
    return directory


def test_the_higher_throughput_a_stage_asks_for_is_turned_on_with_apply(cloud, tmp_path):
    # GIVEN a stage whose templates ask for Parameter Store's higher throughput, in an account at the default
    template = {"Metadata": {"Throttling::AccountSettings": {"ParameterStoreHighThroughput": True}}, "Resources": {}}
    assembly = one_stack_assembly(tmp_path, "Throttling-dev-SharedLimits", template)
    ssm = cloud.client("ssm")
    setting = "/ssm/parameter-store/high-throughput-enabled"
    assert ssm.get_service_setting(SettingId=setting)["ServiceSetting"]["SettingValue"] == "false"
    try:
        # WHEN the pre-flight runs without --apply THEN it refuses and changes nothing
        code, report, error = preflight(cloud, assembly)
        assert code == 2 and "billed per API interaction" in error
        assert ssm.get_service_setting(SettingId=setting)["ServiceSetting"]["SettingValue"] == "false"
        # WHEN it runs with --apply THEN the setting is on, and the next run finds it so
        out = io.StringIO()
        assert main(["--stage", "dev", "preflight", "--assembly", str(assembly), "--apply"],
                    client_factory=cloud.client, stdout=out, stderr=io.StringIO()) == 0
        assert "turned higher throughput on" in out.getvalue()
        assert ssm.get_service_setting(SettingId=setting)["ServiceSetting"]["SettingValue"] == "true"
        assert preflight(cloud, assembly)[0] == 0
    finally:
        ssm.reset_service_setting(SettingId=setting)
