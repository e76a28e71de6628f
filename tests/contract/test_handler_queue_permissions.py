"""Every SQS call a handler makes on a queue its environment names is allowed to its function's role, on that queue.

moto does not evaluate IAM, so a handler whose role lacks a grant passes every emulator test and fails
on AWS with AccessDenied (a consumer that may not send to its dead-letter queue would then fall back
to the slow path for every poison message). The calls are derived from each handler's source: a
module constant read from `os.environ[...]`, or a dependency field built from `environ[...]`
(`queue_url=environ["QUEUE_URL"]`, read as `deps.queue_url`), passed as `QueueUrl=` to an SQS client method; each is
checked, as deployed, against the statements of the role of every function running that handler.
A call whose queue the check cannot tell is a problem too, so a new shape of call is not skipped
silently. The last tests show the check catches a missing grant and a queue it cannot tell.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path
from typing import Any

from tests.contract.handler_environment import environment_variable
from tests.infra.cloudformation import references, resolve

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = ROOT / "lambdas" / "handlers"
# boto3's SQS methods that act on one queue, as IAM names them (a batch is authorized by its single action).
SQS_METHODS = {"send_message", "send_message_batch", "receive_message", "delete_message", "delete_message_batch",
               "change_message_visibility", "change_message_visibility_batch", "get_queue_attributes",
               "purge_queue"}


def iam_action(method: str) -> str:
    """`change_message_visibility_batch` -> `sqs:ChangeMessageVisibility`."""
    name = "".join(part.capitalize() for part in method.split("_"))
    return f"sqs:{name.removesuffix('Batch')}"


def queue_calls(source: str) -> tuple[list[tuple[str, str]], list[str]]:
    """((environment variable, IAM action) for each SQS call on a queue the environment names, problems)."""
    tree = ast.parse(source)
    from_environment = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            variable = environment_variable(node.value)
            if variable:
                from_environment[node.targets[0].id] = variable
    fields_from_environment = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg and (variable := environment_variable(node.value)):
            fields_from_environment[node.arg] = variable
    calls, problems = [], []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQS_METHODS):
            continue
        queue = next((keyword.value for keyword in node.keywords if keyword.arg == "QueueUrl"), None)
        if isinstance(queue, ast.Name) and queue.id in from_environment:
            calls.append((from_environment[queue.id], iam_action(node.func.attr)))
        elif isinstance(queue, ast.Attribute) and queue.attr in fields_from_environment:
            calls.append((fields_from_environment[queue.attr], iam_action(node.func.attr)))
        else:
            shown = ast.unparse(queue) if queue is not None else "no QueueUrl keyword"
            problems.append(f"line {node.lineno}: {node.func.attr} on a queue the check cannot tell ({shown}); pass "
                            "a module constant read from os.environ, or a field built from environ[...], as QueueUrl=")
    return calls, problems


def role_statements(template: dict[str, Any], function: dict[str, Any]) -> list[dict[str, Any]]:
    """Every Allow statement of the function's role: its inline policies and the policies attached to it."""
    (role_id,) = references(function["Properties"]["Role"])
    role = template["Resources"][role_id]
    documents = [p["PolicyDocument"] for p in role["Properties"].get("Policies", [])]
    documents += [r["Properties"]["PolicyDocument"] for r in template["Resources"].values()
                  if r["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in r["Properties"].get("Roles", [])]
    return [s for document in documents for s in document["Statement"] if s.get("Effect") == "Allow"]


def permission_problems(handler: str, environment: dict[str, Any], statements: list[dict[str, Any]],
                        templates: dict[str, dict[str, Any]], calls: list[tuple[str, str]]) -> list[str]:
    problems = []
    for variable, action in calls:
        queues = _resolved(environment.get(variable), templates)
        if not queues or any(resource["Type"] != "AWS::SQS::Queue" for _, resource in queues):
            problems.append(f"{handler}: {variable} names no queue of the app ({environment.get(variable)!r})")
            continue
        wanted = {logical_id for logical_id, _ in queues}
        if not any(any(fnmatch.fnmatchcase(action, pattern) for pattern in _list(statement["Action"]))
                   and wanted <= {logical_id for logical_id, _ in _resolved(statement["Resource"], templates)}
                   for statement in statements):
            problems.append(f"{handler}: the role may not {action} on {variable} ({sorted(wanted)})")
    return problems


def _resolved(value: Any, templates: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [found for reference in sorted(references(value)) if (found := resolve(reference, templates))]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def functions(templates: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(handler module, function, its template) for every function running one of our handlers."""
    found = []
    for template in templates.values():
        for resource in template["Resources"].values():
            handler = resource["Properties"].get("Handler", "") if resource["Type"] == "AWS::Lambda::Function" else ""
            if match := re.fullmatch(r"handlers\.(\w+)\.handler", handler):
                found.append((match.group(1), resource, template))
    return found


def test_every_sqs_call_of_every_handler_is_allowed_on_the_queue_it_names(templates):
    checked = set()
    problems = []
    for module, function, template in functions(templates):
        calls, unreadable = queue_calls((HANDLERS / f"{module}.py").read_text())
        problems += [f"handlers.{module}: {problem}" for problem in unreadable]
        problems += permission_problems(f"handlers.{module}", function["Properties"]["Environment"]["Variables"],
                                        role_statements(template, function), templates, calls)
        checked |= {(module, variable, action) for variable, action in calls}
    assert problems == []
    # THEN the check saw the calls it is for: the consumer's visibility changes and dead letters, the resumer's
    assert {("legacy_consumer", "QUEUE_URL", "sqs:ChangeMessageVisibility"),
            ("legacy_consumer", "DEAD_LETTER_QUEUE_URL", "sqs:SendMessage"),
            ("resume_parked_orders", "PARKED_ORDERS_QUEUE_URL", "sqs:ReceiveMessage"),
            ("resume_parked_orders", "PARKED_ORDERS_DLQ_URL", "sqs:SendMessage")} <= checked


def test_a_consumer_that_may_not_send_to_its_dead_letter_queue_is_caught(templates):
    # GIVEN the legacy consumer as it would be without the construct's grant on its dead-letter queue
    ((_, function, template),) = [f for f in functions(templates) if f[0] == "legacy_consumer"]
    environment = function["Properties"]["Environment"]["Variables"]
    (dead_letter_queue,) = references(environment["DEAD_LETTER_QUEUE_URL"])
    statements = [s for s in role_statements(template, function) if dead_letter_queue not in references(s["Resource"])]
    calls, _ = queue_calls((HANDLERS / "legacy_consumer.py").read_text())
    # WHEN the check reads it THEN it names the handler, the action and the queue
    assert permission_problems("handlers.legacy_consumer", environment, statements, templates, calls) == [
        f"handlers.legacy_consumer: the role may not sqs:SendMessage on DEAD_LETTER_QUEUE_URL (['{dead_letter_queue}'])"]


def test_a_call_on_a_queue_the_check_cannot_tell_is_caught():
    # GIVEN a handler that sends to a queue URL built at run time, and one that sends to an environment constant
    source = (
        "import os\n"
        "QUEUE = os.environ['QUEUE_URL']\n"
        "OTHER = os.environ.get('OTHER_QUEUE_URL', '')\n"
        "def handler(event, context):\n"
        "    sqs.send_message(QueueUrl=QUEUE, MessageBody='x')\n"
        "    sqs.delete_message_batch(QueueUrl=OTHER, Entries=[])\n"
        "    sqs.send_message(QueueUrl=event['reply_to'], MessageBody='x')\n"
    )
    # THEN the constants' calls are derived, and the other is a problem naming its line
    calls, problems = queue_calls(source)
    assert calls == [("QUEUE_URL", "sqs:SendMessage"), ("OTHER_QUEUE_URL", "sqs:DeleteMessage")]
    assert problems == ["line 7: send_message on a queue the check cannot tell (event['reply_to']); pass a module "
                        "constant read from os.environ, or a field built from environ[...], as QueueUrl="]
