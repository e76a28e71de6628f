"""What AWS refuses on deploy and moto accepts alone, enforced by the emulator's patches: each with and without."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from localcloud.emulator import patches
from localcloud.emulator.deployer import Deployer, DeploymentFailed

pytestmark = pytest.mark.emulator

ROLE_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
FITS = {"PLANS": "x" * 4_000}  # 4,012 bytes as Lambda measures it
TOO_BIG = {"PLANS": "x" * 4_100}


@pytest.fixture(scope="module")
def role_arn(cloud) -> str:
    return cloud.client("iam").create_role(RoleName="deploy-limits", AssumeRolePolicyDocument=ROLE_POLICY)["Role"]["Arn"]


def code_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


def create_function(cloud, role_arn: str, name: str, variables: dict[str, str]) -> dict:
    return cloud.client("lambda").create_function(
        FunctionName=name, Runtime="python3.13", Role=role_arn, Handler="index.handler", Code={"ZipFile": code_zip()},
        Environment={"Variables": variables})


@pytest.fixture
def without_environment_limit() -> Iterator[None]:
    patches.remove("lambda_environment_size_limit")
    yield
    patches.apply("lambda_environment_size_limit")


# -- Lambda's 4 KB environment ----------------------------------------------------------------------


def test_a_function_whose_environment_exceeds_4_kb_is_refused_as_lambda_refuses_it(cloud, role_arn):
    # WHEN a function is created with 4,112 bytes of environment THEN Lambda's error comes back
    with pytest.raises(ClientError) as error:
        create_function(cloud, role_arn, "too-big", TOO_BIG)
    assert error.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "exceeded the 4KB limit" in str(error.value)
    # AND with 4,012 bytes it is created, and cannot then be given a larger one
    create_function(cloud, role_arn, "fits", FITS)
    with pytest.raises(ClientError, match="exceeded the 4KB limit"):
        cloud.client("lambda").update_function_configuration(FunctionName="fits", Environment={"Variables": TOO_BIG})
    variables = cloud.client("lambda").get_function_configuration(FunctionName="fits")["Environment"]["Variables"]
    assert variables == FITS


def test_without_the_patch_moto_takes_any_environment(cloud, role_arn, without_environment_limit):
    create_function(cloud, role_arn, "unchecked", {"PLANS": "x" * 10_000})
    assert cloud.client("lambda").get_function(FunctionName="unchecked")["Configuration"]["FunctionName"] == "unchecked"


def test_a_stack_with_such_a_function_fails_to_deploy(cloud, role_arn, tmp_path):
    # GIVEN an assembly of one stack whose function carries 4,112 bytes of environment
    template = {"Resources": {"Fn": {"Type": "AWS::Lambda::Function", "Properties": {
        "Runtime": "python3.13", "Handler": "index.handler", "Role": role_arn,
        "Code": {"ZipFile": "def handler(event, context):\n    return event\n"},
        "Environment": {"Variables": TOO_BIG}}}}}
    assembly = one_stack_assembly(tmp_path, "BigEnvironment", template)
    deployer = Deployer(cloudformation=cloud.client("cloudformation"), s3=cloud.client("s3"), ssm=cloud.client("ssm"),
                        account=cloud.account_id, region=cloud.region)
    # WHEN it is deployed THEN the deploy fails with Lambda's reason
    with pytest.raises(DeploymentFailed, match="exceeded the 4KB limit"):
        deployer.deploy(assembly)


def one_stack_assembly(directory: Path, name: str, template: dict) -> Path:
    (directory / f"{name}.template.json").write_text(json.dumps(template))
    (directory / "manifest.json").write_text(json.dumps({"version": "40.0.0", "artifacts": {
        name: {"type": "aws:cloudformation:stack", "properties": {"templateFile": f"{name}.template.json"}}}}))
    return directory


def test_without_the_failure_patch_the_refusal_escapes_create_stack_in_a_form_botocore_cannot_read(cloud, role_arn):
    template = {"Resources": {"Fn": {"Type": "AWS::Lambda::Function", "Properties": {
        "Runtime": "python3.13", "Handler": "index.handler", "Role": role_arn,
        "Code": {"ZipFile": "def handler(event, context):\n    return event\n"},
        "Environment": {"Variables": TOO_BIG}}}}}
    patches.remove("cloudformation_resource_failures")
    try:
        with pytest.raises(Exception, match="Unable to parse response"):
            cloud.client("cloudformation").create_stack(StackName="Unparsable", TemplateBody=json.dumps(template))
    finally:
        patches.apply("cloudformation_resource_failures")


# -- the Powertools layer a function is deployed with is the one it runs with -----------------------

POWERTOOLS_PROBE = ("from aws_lambda_powertools.shared.version import VERSION\n"
                    "def handler(event, context):\n    return {'powertools': VERSION}\n")


def powertools_stack(role_arn: str, release: str | None) -> dict:
    """A function importing Powertools, with the layer of `release` resolved as the app's templates resolve it."""
    function = {"Type": "AWS::Lambda::Function", "Properties": {
        "Runtime": "python3.13", "Handler": "index.handler", "Role": role_arn, "Code": {"ZipFile": POWERTOOLS_PROBE}}}
    template: dict = {"Resources": {"Fn": function}, "Outputs": {"Name": {"Value": {"Ref": "Fn"}}}}
    if release:
        template["Parameters"] = {"PowertoolsLayer": {
            "Type": "AWS::SSM::Parameter::Value<String>",
            "Default": f"/aws/service/powertools/python/x86_64/python3.13/{release}"}}
        function["Properties"]["Layers"] = [{"Ref": "PowertoolsLayer"}]
    return template


def deploy_one(cloud, tmp_path: Path, name: str, template: dict) -> str:
    deployer = Deployer(cloudformation=cloud.client("cloudformation"), s3=cloud.client("s3"), ssm=cloud.client("ssm"),
                        account=cloud.account_id, region=cloud.region)
    return deployer.deploy(one_stack_assembly(tmp_path, name, template))[name].outputs["Name"]


def invoke(cloud, function_name: str) -> tuple[dict, str | None]:
    response = cloud.client("lambda").invoke(FunctionName=function_name, Payload=b"{}")
    return json.loads(response["Payload"].read()), response.get("FunctionError")


def test_a_function_deployed_with_the_installed_release_runs_with_it(cloud, role_arn, tmp_path):
    release = cloud.public_layers.provided_release
    # WHEN a function is deployed with the layer its template resolves for the installed release
    name = deploy_one(cloud, tmp_path, "PowertoolsInstalled", powertools_stack(role_arn, release))
    # THEN it keeps the layer the parameter names, and its handler imports that release
    (layer,) = cloud.client("lambda").get_function_configuration(FunctionName=name)["Layers"]
    parameter = cloud.client("ssm").get_parameter(Name=f"/aws/service/powertools/python/x86_64/python3.13/{release}")
    assert layer["Arn"] == parameter["Parameter"]["Value"]
    assert invoke(cloud, name) == ({"powertools": release}, None)


def test_a_function_deployed_with_another_release_is_refused_as_an_import_error(cloud, role_arn, tmp_path):
    # GIVEN a function deployed with Powertools 3.23.0, the release layer 27 holds (the deploy succeeds, as on AWS)
    name = deploy_one(cloud, tmp_path, "PowertoolsOld", powertools_stack(role_arn, "3.23.0"))
    (layer,) = cloud.client("lambda").get_function_configuration(FunctionName=name)["Layers"]
    assert layer["Arn"].endswith(":layer:AWSLambdaPowertoolsPythonV3-python313-x86_64:27")
    # WHEN it is invoked THEN every invocation fails as the import on AWS would, naming both releases
    payload, error = invoke(cloud, name)
    assert error and payload["errorType"] == "Runtime.ImportModuleError"
    assert "Powertools 3.23.0" in payload["errorMessage"]
    assert cloud.public_layers.provided_release in payload["errorMessage"]


def test_a_function_without_the_layer_cannot_import_powertools(cloud, role_arn, tmp_path):
    name = deploy_one(cloud, tmp_path, "PowertoolsNone", powertools_stack(role_arn, None))
    payload, error = invoke(cloud, name)
    assert error and payload["errorType"] == "Runtime.ImportModuleError"
    assert payload["errorMessage"] == "Unable to import module 'index': No module named 'aws_lambda_powertools'"


def test_a_release_powertools_never_published_fails_the_deploy(cloud, role_arn, tmp_path):
    with pytest.raises(DeploymentFailed, match=r"Unable to fetch parameters \[/aws/service/powertools/python/x86_64/"
                                               r"python3.13/3.99.0\] from parameter store"):
        deploy_one(cloud, tmp_path, "PowertoolsUnpublished", powertools_stack(role_arn, "3.99.0"))


def test_without_the_patch_moto_drops_the_layer_and_the_handler_cannot_import_powertools(cloud, role_arn, tmp_path):
    patches.remove("public_lambda_layers")
    try:
        name = deploy_one(cloud, tmp_path, "PowertoolsDropped",
                          powertools_stack(role_arn, cloud.public_layers.provided_release))
    finally:
        patches.apply("public_lambda_layers", layers=cloud.public_layers, account_id=cloud.account_id)
    assert cloud.client("lambda").get_function_configuration(FunctionName=name).get("Layers", []) == []
    payload, error = invoke(cloud, name)
    assert error and "No module named 'aws_lambda_powertools'" in payload["errorMessage"]


# -- Parameter Store's service settings ---------------------------------------------------------------


def test_parameter_store_throughput_is_an_account_setting_with_aws_default(cloud):
    ssm = cloud.client("ssm")
    setting = "/ssm/parameter-store/high-throughput-enabled"
    assert ssm.get_service_setting(SettingId=setting)["ServiceSetting"]["SettingValue"] == "false"
    ssm.update_service_setting(SettingId=setting, SettingValue="true")
    arn = f"arn:aws:ssm:{cloud.region}:{cloud.account_id}:servicesetting{setting}"
    answer = ssm.get_service_setting(SettingId=arn)["ServiceSetting"]
    assert (answer["SettingValue"], answer["Status"]) == ("true", "Customized")
    with pytest.raises(ClientError, match="ValidationException"):
        ssm.update_service_setting(SettingId=setting, SettingValue="yes")
    assert ssm.reset_service_setting(SettingId=setting)["ServiceSetting"]["SettingValue"] == "false"


def test_without_the_patch_moto_has_no_service_settings(cloud):
    patches.remove("ssm_service_settings")
    try:
        with pytest.raises(ClientError):
            cloud.client("ssm").get_service_setting(SettingId="/ssm/parameter-store/high-throughput-enabled")
    finally:
        patches.apply("ssm_service_settings")
