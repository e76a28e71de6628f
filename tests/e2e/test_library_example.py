"""The library as another app gets it: the built wheel in a fresh virtual environment, and
examples/queue_consumer synthesized from it and run on the emulator.

The fresh environment sees this repository's third-party libraries (the CDK, Powertools, boto3)
through a path entry, since the tests have no network to download them, but not this repository:
no editable install, no PYTHONPATH, the example's own folder as the working directory. So what the
example imports of `throttling` and `throttling_patterns` is what the wheel holds, and the function's
`throttling` is what the `RuntimeLayer` packs (the emulator refuses any module a function's code and
layers do not hold and Lambda's runtime does not ship).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcloud.referee.downstream_simulator import DownstreamProfile, DownstreamSimulator, LatencyDistribution

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "queue_consumer"
DISTRIBUTION = "throttling-reference"
# The example's contract with its orders API (examples/queue_consumer/app.py).
ORDERS_API = DownstreamProfile(name="orders_api", rate_per_sec=2, burst=2,
                               latency=LatencyDistribution(kind="fixed", median_ms=50))


def _run(command: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _clean_environment(venv: Path) -> dict[str, str]:
    """A shell as a user of the library has it: the venv first on PATH, nothing of this repository."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not key.startswith(("MAKE", "MFLAGS"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               CDK_DISABLE_VERSION_CHECK="1", CDK_DISABLE_CLI_TELEMETRY="true",
               JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of what the distribution packs: a build in the checkout leaves build/ behind.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("lambdas/throttling", "stacks/patterns", "throttlectl"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out),
          str(source)], cwd=source, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    (built,) = out.glob("throttling_reference-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh virtual environment with the wheel installed (pip's resolver checks its requirements)."""
    venv = tmp_path_factory.mktemp("library") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = Path(subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    # A path line in a .pth file adds the folder alone: this repository's editable-install hook in it is not run.
    (site_packages / "third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-index",
          "--no-deps", str(wheel)], cwd=venv.parent, env=_clean_environment(venv))
    return venv


@pytest.fixture(scope="module")
def orders_api() -> Iterator[DownstreamSimulator]:
    with DownstreamSimulator(ORDERS_API) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def example_assembly(venv, orders_api, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("example") / "cdk.out"
    _run([str(ROOT / "node_modules" / ".bin" / "cdk"), "synth", "--quiet", "--output", str(out),
          "-c", f"orders_api_url={orders_api.base_url}"], cwd=EXAMPLE, env=_clean_environment(venv))
    return out


def test_the_wheel_holds_the_constructs_the_runtime_and_the_cli_and_nothing_of_the_app(wheel):
    # GIVEN the built distribution
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if not name.startswith(f"{DISTRIBUTION.replace('-', '_')}-")}
    # THEN it holds the three packages, and none of the app's stacks, handlers, emulator or tests
    assert packages == {"throttling", "throttling_patterns", "throttlectl"}
    assert "throttling/runtime/shared_limiter.py" in names and "throttling_patterns/shared_limiter.py" in names
    # AND its metadata promises the CDK extra at the releases the tests ran
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert re.search(r"^Requires-Dist: aws-cdk-lib.*extra == \"cdk\"", metadata, re.MULTILINE)


def test_the_fresh_environment_imports_the_library_from_the_wheel_and_its_requirements_hold(venv):
    # WHEN the fresh environment imports the library, away from this repository
    env = _clean_environment(venv)
    done = _run([str(venv / "bin" / "python"), "-c",
                 "import json, throttling, throttling_patterns, throttlectl; print(json.dumps("
                 "[throttling.__file__, throttling_patterns.__file__, throttlectl.__file__, throttling_patterns.__version__]))"],
                cwd=venv.parent, env=env)
    *files, version = json.loads(done.stdout)
    # THEN every package comes from the environment's own site-packages, at the distribution's version
    assert all(Path(file).is_relative_to(venv) for file in files), files
    assert version == "0.2.0"
    # AND pip finds every requirement of the distribution satisfied
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "check"], cwd=venv.parent, env=env)


def test_the_example_synthesizes_a_consumer_with_the_runtime_layer_and_the_limiter_wired(example_assembly):
    template = json.loads((example_assembly / "OrdersExample.template.json").read_text())
    resources = template["Resources"].values()
    (function,) = [r["Properties"] for r in resources if r["Type"] == "AWS::Lambda::Function"]
    (layer,) = [r for r in resources if r["Type"] == "AWS::Lambda::LayerVersion"]
    (mapping,) = [r["Properties"] for r in resources if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    (parameter,) = [r["Properties"] for r in resources if r["Type"] == "AWS::SSM::Parameter"]
    # THEN the consumer runs the example's handler with Powertools' layer and the runtime layer after it
    assert function["Handler"] == "handler.handler" and len(function["Layers"]) == 2
    assert function["Layers"][1] == {"Ref": next(k for k, r in template["Resources"].items() if r is layer)}
    # AND it knows its downstream's bucket, contract and tunables, which were seeded under the contract
    environment = function["Environment"]["Variables"]
    assert environment["DOWNSTREAM_NAME"] == "orders_api" and environment["DOWNSTREAM_RATE_LIMIT_PER_SEC"] == "2"
    assert parameter["Name"] == "/orders-example/downstreams/orders_api"
    assert json.loads(parameter["Value"])["rate_per_sec"] == 1.8
    # AND the mapping caps the batches in flight and reports partial failures
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # AND the function's own code asset holds the handler alone: the runtime comes from the layer
    consumer_assets = [path for path in example_assembly.glob("asset.*") if (path / "handler.py").exists()]
    assert [sorted(p.name for p in path.iterdir()) for path in consumer_assets] == [["handler.py"]]
    layer_assets = [path for path in example_assembly.glob("asset.*") if (path / "python" / "throttling").is_dir()]
    assert len(layer_assets) == 1


def test_the_example_delivers_every_order_within_the_api_s_rate_on_the_emulator(cloud, example_assembly, orders_api):
    # GIVEN the example deployed into the emulator, in front of a simulator of its orders API
    (stack,) = cloud.deploy(example_assembly).values()
    sqs = cloud.client("sqs")
    queue_url, dead_letters_url = stack.outputs["OrdersQueueUrl"], stack.outputs["OrdersDeadLetterQueueUrl"]
    # WHEN 12 orders and one body that is no order are queued at once
    orders = [f"order-{n:02d}" for n in range(12)]
    for order_id in orders[:6]:
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"order_id": order_id, "amount": "9.99"}))
    sqs.send_message(QueueUrl=queue_url, MessageBody="not json")
    for order_id in orders[6:]:
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"order_id": order_id, "amount": "9.99"}))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        delivered = {r.headers.get("Idempotency-Key") for r in orders_api.requests if r.status < 300}
        if delivered >= set(orders):
            break
        time.sleep(0.5)
    # THEN every order reached the API, none was refused, and no 1 s window saw more than its bucket allows
    assert delivered == set(orders)
    assert [r.status for r in orders_api.requests if r.status >= 400] == []
    assert orders_api.max_requests_in_window(1.0) <= ORDERS_API.max_admitted_in_window(1.0)
    # AND the body that is no order is in the dead-letter queue with its reason, and the queue is empty
    dead = sqs.receive_message(QueueUrl=dead_letters_url, MessageAttributeNames=["All"], WaitTimeSeconds=5)["Messages"]
    assert [(m["Body"], m["MessageAttributes"]["error"]["StringValue"]) for m in dead] == [
        ("not json", "not an order: a JSON object with a string order_id")]
    # (the last batch's messages are deleted once its invocation returns, a moment after its calls landed)
    assert queue_drained(sqs, queue_url, deadline=time.monotonic() + 30)


def queue_drained(sqs, queue_url: str, *, deadline: float) -> bool:
    """Whether the queue holds no message, visible or in flight, before `deadline`."""
    while True:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        if (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
