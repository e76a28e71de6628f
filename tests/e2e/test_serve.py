"""`make emulator`: the app deployed into a long-running emulator that the CLI and boto3 reach like an account.

The server runs as its own process, as an operator starts it, with the assembly the tests synthesized
against their simulators; it is stopped with Ctrl-C (SIGINT) as an operator stops it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest

from localcloud.serve import READY

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SEC = 180


@pytest.fixture(scope="module")
def served(emulator_assembly):
    process = subprocess.Popen(
        [sys.executable, "-m", "localcloud.serve", "--port", "0", "--assembly", str(emulator_assembly)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "lambdas")])},
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    printed = []
    try:
        while not (printed and printed[-1].startswith("  function logs:")):
            printed.append(lines.get(timeout=START_TIMEOUT_SEC).rstrip("\n"))
        yield process, printed
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_emulator_serves_the_deployed_app_to_boto3_and_the_cli_until_interrupted(served, simulators):
    process, printed = served
    # GIVEN the server's first lines: where it listens, and what to export
    ready = next(line for line in printed if line.startswith(READY))
    endpoint = ready.split(" at ", 1)[1].split(" ", 1)[0]
    exports = dict(pair.split("=", 1) for line in printed if line.startswith("  export ")
                   for pair in line.removeprefix("  export ").split())
    assert exports["AWS_ENDPOINT_URL"] == endpoint and exports["THROTTLING_STAGE"] == "dev"
    outputs = dict(line.strip().split(" = ", 1) for line in printed if " = " in line)
    crm_caller = outputs["Throttling-dev-Workflows.CrmCallerName"]
    # WHEN boto3 is pointed at it with only the exported variables
    session = boto3.Session(aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
                            aws_session_token=exports["AWS_SESSION_TOKEN"], region_name=exports["AWS_REGION"])
    machines = session.client("stepfunctions", endpoint_url=endpoint).list_state_machines()["stateMachines"]
    answer = session.client("lambda", endpoint_url=endpoint).invoke(
        FunctionName=crm_caller, Payload=json.dumps({"path": "/users/served"}))
    # THEN the app is there, and a deployed handler calls its downstream's simulator
    assert len(machines) == 5
    assert "FunctionError" not in answer and json.loads(answer["Payload"].read())["status"] == 200
    assert any(r.path == "/users/served" for r in simulators["crm"].requests)
    # AND the operator CLI, given the same variables in a shell, reads the stage's tunables
    shown = subprocess.run([sys.executable, "-m", "throttlectl", "show", "--json"], cwd=ROOT, capture_output=True,
                           text=True, env={**os.environ, **exports}, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "downstreams/crm" in {entry["key"] for entry in json.loads(shown.stdout)["tunables"]}
    # AND Ctrl-C stops it cleanly
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0
