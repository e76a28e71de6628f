"""The ASL files and the synthesized templates agree.

For every file in `statemachines/`: some state machine deploys it verbatim; every `${X}` in it has a
substitution and every substitution a `${X}`; every state says why it exists; every Task retries
with full jitter and a delay cap (and a Task calling a downstream caller retries its three
retryable errors); and the state machine's role may do what each Task does, on the resource
each Task names, and what a Distributed Map does to its own child executions and map runs. Each
check is a pure function returning the problems it found, and the last tests show each one
catches the mistake it is for.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

ROOT = Path(__file__).resolve().parents[2]
ASL_FILES = sorted((ROOT / "statemachines").glob("*.asl.json"))
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
DOWNSTREAM_CALLER_HANDLER = "handlers.call_downstream.handler"
RETRYABLE_DOWNSTREAM_ERRORS = {"RateLimited", "DownstreamThrottled", "DownstreamUnavailable"}
# Optimized integrations whose IAM action is not simply the API name capitalised.
SPECIAL_ACTIONS = {("lambda", "invoke"): "lambda:InvokeFunction", ("http", "invoke"): "states:InvokeHTTPEndpoint"}
# AWS SDK integrations named after the SDK's service, whose IAM prefix differs.
IAM_PREFIXES = {"sfn": "states"}


# -- reading the templates ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def templates(dev_assembly) -> dict[str, dict[str, Any]]:
    stacks, _ = dev_assembly
    return {key: Template.from_stack(stack).to_json() for key, stack in stacks.items()}


@pytest.fixture(scope="module")
def deployed_machines(templates) -> dict[str, tuple[str, dict[str, Any]]]:
    """ASL text -> (stack key, the state machine resource) for every state machine of the app."""
    machines = {}
    for key, template in templates.items():
        for resource in template["Resources"].values():
            if resource["Type"] == "AWS::StepFunctions::StateMachine":
                definition = resource["Properties"]["DefinitionString"]
                assert isinstance(definition, str), "a DefinitionString built with Fn::Join escapes these checks"
                machines[definition] = (key, resource)
    return machines


def machine_for(path: Path, deployed_machines) -> tuple[str, dict[str, Any]]:
    text = path.read_text()
    assert text in deployed_machines, f"no state machine deploys {path.name} verbatim"
    return deployed_machines[text]


def references(value: Any) -> set[str]:
    """The logical ids (Ref, GetAtt) and export names (ImportValue) a CloudFormation value refers to."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str) and not inner.startswith("AWS::"):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            elif key == "Fn::ImportValue" and isinstance(inner, str):
                found.add(inner)
            else:
                found |= references(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= references(inner)
    return found


def role_statements(template: dict[str, Any], machine: dict[str, Any]) -> list[dict[str, Any]]:
    """Every Allow statement of the state machine's role (its inline policies and the policies attached to it)."""
    (role_id,) = references(machine["Properties"]["RoleArn"])
    role = template["Resources"][role_id]
    documents = [p["PolicyDocument"] for p in role["Properties"].get("Policies", [])]
    documents += [
        resource["Properties"]["PolicyDocument"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in resource["Properties"].get("Roles", [])
    ]
    return [s for document in documents for s in document["Statement"] if s.get("Effect") == "Allow"]


def resolve(reference: str, templates: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """(logical id, resource) behind a logical id or an export name, looking through every stack."""
    for template in templates.values():
        if reference in template["Resources"]:
            return reference, template["Resources"][reference]
        for output in template.get("Outputs", {}).values():
            if output.get("Export", {}).get("Name") == reference:
                (logical_id,) = references(output["Value"])
                return logical_id, template["Resources"][logical_id]
    return None


# -- walking the ASL ------------------------------------------------------------------------------------
def states_of(definition: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state, with its path, including those inside Map processors and Parallel branches."""
    for name, state in definition["States"].items():
        where = f"{path}{name}"
        yield where, state
        for inner in [state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])]:
            if inner:
                yield from states_of(inner, f"{where}/")


def task_resources(state: dict[str, Any]) -> list[tuple[str, Any]]:
    """(integration ARN, the parameters it is called with) for a Task, and for a Map's ItemReader and ResultWriter."""
    found = []
    if state["Type"] == "Task":
        found.append((state["Resource"], state.get("Parameters", {})))
    for field in ("ItemReader", "ResultWriter"):
        if field in state:
            found.append((state[field]["Resource"], state[field].get("Parameters", {})))
    return found


def iam_action(integration: str) -> str:
    """`arn:aws:states:::dynamodb:getItem` -> `dynamodb:GetItem`; `...:::aws-sdk:ssm:getParameter` -> `ssm:GetParameter`."""
    match = re.fullmatch(r"arn:aws:states:::(?:aws-sdk:)?([a-z0-9-]+):([A-Za-z0-9]+)(?:\.[A-Za-z]+(?::\d+)?)?",
                         integration)
    if match:
        service, api = match.groups()
        return SPECIAL_ACTIONS.get((service, api), f"{IAM_PREFIXES.get(service, service)}:{api[0].upper()}{api[1:]}")
    if integration.startswith("arn:aws:lambda:") or PLACEHOLDER.fullmatch(integration):
        return "lambda:InvokeFunction"  # a Task whose Resource is the function itself invokes it directly
    raise ValueError(f"no IAM action known for the Task resource {integration!r}; teach iam_action about it")


# -- the checks -----------------------------------------------------------------------------------------
def placeholder_problems(text: str, substitutions: dict[str, Any]) -> list[str]:
    in_file, substituted = set(PLACEHOLDER.findall(text)), set(substitutions)
    return [f"${{{name}}} has no substitution" for name in sorted(in_file - substituted)] + [
        f"substitution {name} matches no ${{{name}}} in the file" for name in sorted(substituted - in_file)
    ]


def comment_problems(definition: dict[str, Any]) -> list[str]:
    problems = [] if definition.get("Comment") else ["the state machine has no top-level Comment"]
    return problems + [f"{where} has no Comment" for where, state in states_of(definition)
                       if not str(state.get("Comment", "")).strip()]


def retry_problems(definition: dict[str, Any], caller_placeholders: set[str]) -> list[str]:
    problems = []
    for where, state in states_of(definition):
        if state["Type"] != "Task":
            continue
        retriers = state.get("Retry", [])
        if not retriers:
            problems.append(f"{where} has no Retry")
        for retrier in retriers:
            if retrier.get("JitterStrategy") != "FULL" or "MaxDelaySeconds" not in retrier:
                problems.append(f"{where} retries {retrier['ErrorEquals']} without JitterStrategy FULL and MaxDelaySeconds")
        if set(PLACEHOLDER.findall(json.dumps(state))) & caller_placeholders:
            retried = {error for retrier in retriers for error in retrier["ErrorEquals"]}
            if missing := RETRYABLE_DOWNSTREAM_ERRORS - retried:
                problems.append(f"{where} calls a downstream caller but does not retry {sorted(missing)}")
    return problems


def permission_problems(
    definition: dict[str, Any], substitutions: dict[str, Any], statements: list[dict[str, Any]],
    templates: dict[str, dict[str, Any]],
) -> list[str]:
    problems = []
    for where, state in states_of(definition):
        for integration, parameters in task_resources(state):
            action = iam_action(integration)
            for name in sorted(set(PLACEHOLDER.findall(json.dumps([integration, parameters])))):
                wanted = references(substitutions.get(name))
                granted = any(
                    any(fnmatch.fnmatchcase(action, pattern) for pattern in _list(statement["Action"]))
                    and same_resources(wanted, references(statement["Resource"]), templates)
                    for statement in statements
                )
                if not wanted or not granted:
                    problems.append(f"{where}: the role may not {action} on ${{{name}}} ({sorted(wanted)})")
                elif resolve(next(iter(wanted)), templates) is None:
                    problems.append(f"{where}: ${{{name}}} refers to nothing in the app ({sorted(wanted)})")
    return problems


def own_run_problems(definition: dict[str, Any], machine_id: str, statements: list[dict[str, Any]]) -> list[str]:
    """A Distributed Map starts, watches and stops its children as executions of the machine itself, and a
    Task on Step Functions that names no other machine (describeMapRun) acts on this one's runs: the role
    must allow each on a resource that refers to the machine."""
    problems = []
    for where, state in states_of(definition):
        actions = []
        if state.get("ItemProcessor", {}).get("ProcessorConfig", {}).get("Mode") == "DISTRIBUTED":
            actions += ["states:StartExecution", "states:DescribeExecution", "states:StopExecution"]
        if state["Type"] == "Task" and iam_action(state["Resource"]).startswith("states:") \
                and not PLACEHOLDER.search(json.dumps(state.get("Parameters", {}))):
            actions.append(iam_action(state["Resource"]))
        for action in actions:
            if not any(any(fnmatch.fnmatchcase(action, pattern) for pattern in _list(statement["Action"]))
                       and machine_id in references(statement["Resource"]) for statement in statements):
                problems.append(f"{where}: the role may not {action} on the state machine's own runs")
    return problems


def same_resources(wanted: set[str], granted: set[str], templates: dict[str, dict[str, Any]]) -> bool:
    """Whether two sets of references share a resource, also when each reaches it through its own export.

    A table of another stack is imported twice: its name (the substitution) and its ARN (the grant)
    are two exports of the same resource.
    """
    if wanted & granted:
        return True
    resolved = [{found[0] for r in refs if (found := resolve(r, templates))} for refs in (wanted, granted)]
    return bool(resolved[0] & resolved[1])


def caller_placeholders(substitutions: dict[str, Any], templates: dict[str, dict[str, Any]]) -> set[str]:
    """The placeholders whose value is a function running the downstream caller handler."""
    callers = set()
    for name, value in substitutions.items():
        for reference in references(value):
            resolved = resolve(reference, templates)
            if resolved and resolved[1]["Type"] == "AWS::Lambda::Function" \
                    and resolved[1]["Properties"].get("Handler") == DOWNSTREAM_CALLER_HANDLER:
                callers.add(name)
    return callers


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- the tests ------------------------------------------------------------------------------------------
pytestmark = pytest.mark.skipif(not ASL_FILES, reason="no state machine files yet")


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_every_placeholder_has_a_substitution_and_every_substitution_a_placeholder(path, deployed_machines):
    _, machine = machine_for(path, deployed_machines)
    substitutions = machine["Properties"].get("DefinitionSubstitutions", {})
    assert placeholder_problems(path.read_text(), substitutions) == []


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_every_state_says_why_it_exists(path):
    assert comment_problems(json.loads(path.read_text())) == []


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_every_task_retries_with_full_jitter_and_callers_retry_the_retryable_errors(path, deployed_machines, templates):
    _, machine = machine_for(path, deployed_machines)
    callers = caller_placeholders(machine["Properties"].get("DefinitionSubstitutions", {}), templates)
    assert retry_problems(json.loads(path.read_text()), callers) == []


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_the_role_may_do_every_task_on_the_resource_it_names(path, deployed_machines, templates):
    key, machine = machine_for(path, deployed_machines)
    substitutions = machine["Properties"].get("DefinitionSubstitutions", {})
    statements = role_statements(templates[key], machine)
    assert permission_problems(json.loads(path.read_text()), substitutions, statements, templates) == []
    (machine_id,) = [i for i, r in templates[key]["Resources"].items() if r is machine]
    assert own_run_problems(json.loads(path.read_text()), machine_id, statements) == []


# -- the checks are live --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def crm_batch(deployed_machines, templates) -> dict[str, Any]:
    path = ROOT / "statemachines" / "crm_batch_email.asl.json"
    key, machine = machine_for(path, deployed_machines)
    substitutions = machine["Properties"]["DefinitionSubstitutions"]
    return {"text": path.read_text(), "definition": json.loads(path.read_text()), "substitutions": substitutions,
            "statements": role_statements(templates[key], machine),
            "callers": caller_placeholders(substitutions, templates)}


def test_the_checks_see_the_crm_callers_and_the_states_inside_the_map(crm_batch):
    assert crm_batch["callers"] == {"CrmCallerFunctionArn"}
    assert "EmailEachUser/SendEmail" in dict(states_of(crm_batch["definition"]))


def test_a_missing_or_unused_substitution_is_caught(crm_batch):
    substitutions = {k: v for k, v in crm_batch["substitutions"].items() if k != "SegmentsTableName"}
    assert placeholder_problems(crm_batch["text"], {**substitutions, "Stray": "x"}) == [
        "${SegmentsTableName} has no substitution", "substitution Stray matches no ${Stray} in the file"]


def test_a_state_without_comment_is_caught(crm_batch):
    definition = copy.deepcopy(crm_batch["definition"])
    del definition["States"]["EmailEachUser"]["ItemProcessor"]["States"]["Sent"]["Comment"]
    assert comment_problems(definition) == ["EmailEachUser/Sent has no Comment"]


def test_a_caller_task_without_jitter_or_without_a_retryable_error_is_caught(crm_batch):
    definition = copy.deepcopy(crm_batch["definition"])
    fetch = definition["States"]["EmailEachUser"]["ItemProcessor"]["States"]["FetchUser"]
    del fetch["Retry"][0]["JitterStrategy"]
    fetch["Retry"] = [r for r in fetch["Retry"] if r["ErrorEquals"] != ["DownstreamUnavailable"]]
    problems = retry_problems(definition, crm_batch["callers"])
    assert problems == [
        "EmailEachUser/FetchUser retries ['RateLimited'] without JitterStrategy FULL and MaxDelaySeconds",
        "EmailEachUser/FetchUser calls a downstream caller but does not retry ['DownstreamUnavailable']",
    ]


def test_a_missing_grant_is_caught(crm_batch, templates):
    statements = [s for s in crm_batch["statements"] if "sqs:SendMessage" not in _list(s["Action"])]
    problems = permission_problems(crm_batch["definition"], crm_batch["substitutions"], statements, templates)
    assert len(problems) == 1 and problems[0].startswith("EmailEachUser/RecordFailure: the role may not sqs:SendMessage")


def test_a_grant_on_a_table_of_another_stack_is_seen_through_its_exports_and_its_absence_caught(
    deployed_machines, templates
):
    # GIVEN the payment workflow, whose breaker table lives in the shared-limits stack: the substitution
    # imports the table's name and the grant its ARN, two exports of one table
    path = ROOT / "statemachines" / "payment_authorization.asl.json"
    key, machine = machine_for(path, deployed_machines)
    definition, substitutions = json.loads(path.read_text()), machine["Properties"]["DefinitionSubstitutions"]
    statements = role_statements(templates[key], machine)
    # THEN the grant counts; WHEN it is taken away THEN exactly that Task is reported
    assert permission_problems(definition, substitutions, statements, templates) == []
    without = [s for s in statements if s["Action"] != "dynamodb:GetItem"]
    problems = permission_problems(definition, substitutions, without, templates)
    assert len(problems) == 1 and problems[0].startswith("ReadBreaker: the role may not dynamodb:GetItem")


def test_a_distributed_map_without_the_right_to_start_its_children_or_write_its_results_is_caught(
    deployed_machines, templates
):
    # GIVEN the large-segment workflow, whose Distributed Map reads the segment, writes its results and
    # runs its children as executions of the machine itself
    path = ROOT / "statemachines" / "crm_segment_large.asl.json"
    key, machine = machine_for(path, deployed_machines)
    (machine_id,) = [i for i, r in templates[key]["Resources"].items() if r is machine]
    definition, substitutions = json.loads(path.read_text()), machine["Properties"]["DefinitionSubstitutions"]
    statements = role_statements(templates[key], machine)
    # WHEN the role loses the right to start executions, and the right to put objects
    without = [s for s in statements if not {"states:StartExecution", "s3:PutObject"} & set(_list(s["Action"]))]
    # THEN both are reported, at the Map
    assert own_run_problems(definition, machine_id, without) == [
        "EmailEachUser: the role may not states:StartExecution on the state machine's own runs"]
    (problem,) = permission_problems(definition, substitutions, without, templates)
    assert problem.startswith("EmailEachUser: the role may not s3:PutObject on ${SegmentsBucketName}")
