"""What AWS refuses on deploy and moto accepts alone, enforced by the emulator's patches: each with and without."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from localcloud import moto_patches
from localcloud.deployer import Deployer, DeploymentFailed

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
    moto_patches.remove_lambda_environment_size_limit()
    yield
    moto_patches.apply_lambda_environment_size_limit()


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
    moto_patches.remove_cloudformation_resource_failures()
    try:
        with pytest.raises(Exception, match="Unable to parse response"):
            cloud.client("cloudformation").create_stack(StackName="Unparsable", TemplateBody=json.dumps(template))
    finally:
        moto_patches.apply_cloudformation_resource_failures()
