"""A function imports on the emulator what it could on Lambda: its code, its layers, the runtime's libraries.

The emulator's workers run in the tests' virtual environment, where this repository's packages, the
CDK and moto are all importable; without the rule a function missing a module (a layer forgotten, a
dependency never packaged) would pass here and fail on AWS with `Runtime.ImportModuleError`.
"""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from botocore.parsers import ResponseParserError

from localcloud.emulator import patches
from localcloud.emulator.lambda_packages import importable_modules, powertools_layer_modules, runtime_modules
from tests.emulator.test_deploy_limits import deploy_one, invoke

ROLE_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


@pytest.fixture(scope="module")
def role_arn(cloud) -> str:
    return cloud.client("iam").create_role(RoleName="imports", AssumeRolePolicyDocument=ROLE_POLICY)["Role"]["Arn"]


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def importing(*modules: str) -> str:
    """A handler that imports `modules` at init and answers where each came from."""
    return (f"import importlib\nMODULES = {list(modules)!r}\nLOADED = [importlib.import_module(m) for m in MODULES]\n"
            "def handler(event, context):\n"
            "    return {m.__name__: getattr(m, '__file__', None) for m in LOADED}\n")


def create(cloud, role_arn: str, name: str, code: dict[str, str], layers: list[str] = ()) -> str:
    cloud.client("lambda").create_function(FunctionName=name, Runtime="python3.13", Role=role_arn,
                                           Handler="index.handler", Code={"ZipFile": zipped(code)}, Layers=list(layers))
    return name


def publish_layer(cloud, name: str, files: dict[str, str]) -> str:
    return cloud.client("lambda").publish_layer_version(LayerName=name, Content={"ZipFile": zipped(files)},
                                                        CompatibleRuntimes=["python3.13"])["LayerVersionArn"]


def test_a_module_neither_the_code_nor_a_layer_holds_is_refused_though_the_tests_have_it(cloud, role_arn):
    # GIVEN functions importing this repository's runtime, moto and the CDK, all installed where the tests run
    for module in ("throttling", "moto", "aws_cdk"):
        name = create(cloud, role_arn, f"imports-{module.replace('_', '-')}", {"index.py": importing(module)})
        # WHEN invoked THEN each fails as on Lambda, whose runtime has none of them
        payload, error = invoke(cloud, name)
        assert error and payload["errorType"] == "Runtime.ImportModuleError"
        assert payload["errorMessage"] == f"Unable to import module 'index': No module named '{module}'"


def test_the_standard_library_and_the_runtime_s_sdk_import_without_a_layer(cloud, role_arn):
    name = create(cloud, role_arn, "imports-runtime", {"index.py": importing("json", "sqlite3", "boto3", "urllib3")})
    payload, error = invoke(cloud, name)
    assert error is None and set(payload) == {"json", "sqlite3", "boto3", "urllib3"}


def test_a_layer_s_python_folder_is_imported_after_the_code(cloud, role_arn):
    # GIVEN a layer with two modules under python/ (one also in the function's code) and one in a site-packages
    layer = publish_layer(cloud, "greetings", {
        "python/greeting.py": "WHO = 'layer'\n", "python/shadowed.py": "WHO = 'layer'\n",
        "python/lib/python3.13/site-packages/packaged.py": "WHO = 'layer'\n"})
    code = {"index.py": "import greeting, shadowed, packaged\n"
                        "def handler(event, context):\n"
                        "    return [greeting.WHO, shadowed.WHO, packaged.WHO]\n",
            "shadowed.py": "WHO = 'code'\n"}
    name = create(cloud, role_arn, "imports-layer", code, [layer])
    # WHEN invoked THEN both layer folders are on the path, and the code comes first, as Lambda orders /var/task and /opt
    assert invoke(cloud, name) == (["layer", "code", "layer"], None)


def test_a_template_s_own_layer_is_given_to_its_function_by_ref(cloud, role_arn, tmp_path):
    # GIVEN a stack with a layer (from an S3 object, as CDK's assets are) and a function naming it with Ref
    cloud.client("s3").create_bucket(Bucket="layer-assets")
    cloud.client("s3").put_object(Bucket="layer-assets", Key="greeting.zip",
                                  Body=zipped({"python/greeting.py": "WHO = 'layer'\n"}))
    template = {"Resources": {
        "Greeting": {"Type": "AWS::Lambda::LayerVersion", "Properties": {
            "Content": {"S3Bucket": "layer-assets", "S3Key": "greeting.zip"}, "CompatibleRuntimes": ["python3.13"]}},
        "Fn": {"Type": "AWS::Lambda::Function", "Properties": {
            "Runtime": "python3.13", "Handler": "index.handler", "Role": role_arn, "Layers": [{"Ref": "Greeting"}],
            "Code": {"ZipFile": "import greeting\ndef handler(event, context):\n    return greeting.WHO\n"}}}},
        "Outputs": {"Name": {"Value": {"Ref": "Fn"}}}}
    # WHEN deployed and invoked THEN the function imports the layer's module
    name = deploy_one(cloud, tmp_path, "OwnLayer", template)
    assert invoke(cloud, name) == ("layer", None)
    # AND without the patch moto cannot deploy it at all
    (tmp_path / "unpatched").mkdir()
    patches.remove("lambda_layer_version_refs")
    try:
        # (moto's server answers the crash with an HTML 500, which botocore cannot parse)
        with pytest.raises(ResponseParserError, match="500 Internal Server Error"):
            deploy_one(cloud, tmp_path / "unpatched", "OwnLayerUnpatched", template)
    finally:
        patches.apply("lambda_layer_version_refs")


def test_the_allowed_sets_follow_the_installed_dependency_closures():
    # THEN the runtime's set is the SDK's closure, and Powertools' layer adds its own and its tracer's
    assert {"boto3", "botocore", "s3transfer", "jmespath", "urllib3", "dateutil"} <= runtime_modules()
    assert {"aws_lambda_powertools", "aws_xray_sdk", "wrapt"} <= powertools_layer_modules()
    # AND nothing else this environment holds creeps in
    assert not {"moto", "aws_cdk", "throttling", "pytest"} & (runtime_modules() | powertools_layer_modules())
    # AND an extra is followed only when asked for
    assert "aws_xray_sdk" not in importable_modules(["aws-lambda-powertools"])
