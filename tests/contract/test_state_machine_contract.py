"""The ASL files and the synthesized templates agree.

For every file in `statemachines/`: some state machine deploys it verbatim; every `${X}` in it has a
substitution and every substitution a `${X}`; every state says why it exists; every Task retries
with full jitter and a delay cap (and a Task calling a downstream caller retries its three
retryable errors); and the state machine's role may do what each Task does, on the resource
each Task names, and every API the workflow's own features call, derived from the file: a
Distributed Map starts, describes and stops its child executions, and redrives them when its
parent is redriven; its ItemReader reads and its ResultWriter writes (in parts) the bucket they
name; a Task on Step Functions that names no other machine (describeMapRun) acts on this one's
runs. The feature actions and their resources are AWS's
(https://docs.aws.amazon.com/step-functions/latest/dg/iam-policies-eg-dist-map.html); each is
checked against the role's statements on an example ARN of what it acts on, so a grant on the
wrong kind of resource fails as a missing one does. Each check is a pure function returning the
problems it found, and the last tests show each one catches the mistake it is for.
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

from tests.infra.cloudformation import PSEUDO_PARAMETERS, references, rendered, resolve

ROOT = Path(__file__).resolve().parents[2]
ASL_FILES = sorted((ROOT / "statemachines").glob("*.asl.json"))
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
DOWNSTREAM_CALLER_HANDLER = "handlers.call_downstream.handler"
RETRYABLE_DOWNSTREAM_ERRORS = {"RateLimited", "DownstreamThrottled", "DownstreamUnavailable"}
# Optimized integrations whose IAM action is not simply the API name capitalised.
SPECIAL_ACTIONS = {("lambda", "invoke"): "lambda:InvokeFunction", ("http", "invoke"): "states:InvokeHTTPEndpoint"}
# AWS SDK integrations named after the SDK's service, whose IAM prefix differs.
IAM_PREFIXES = {"sfn": "states"}
RESULT_WRITER_ACTIONS = ("s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload")
# What a Distributed Map does to the machine's own runs, with the kind of resource each acts on (AWS's
# policy examples: StartExecution on the machine, DescribeExecution on its executions, RedriveExecution on
# the child executions `execution:<machine>/<map run label>:<id>`; StopExecution as CDK grants it).
DISTRIBUTED_MAP_ACTIONS = (("states:StartExecution", "state machine"), ("states:DescribeExecution", "execution"),
                           ("states:StopExecution", "execution"), ("states:RedriveExecution", "child execution"))
# A Task on Step Functions that names no machine of its own acts on this machine's map runs.
OWN_RUN_TASK_RESOURCES = {"states:DescribeMapRun": "map run"}


# -- reading the templates ------------------------------------------------------------------------------
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


# -- walking the ASL ------------------------------------------------------------------------------------
def states_of(definition: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state, with its path, including those inside Map processors and Parallel branches."""
    for name, state in definition["States"].items():
        where = f"{path}{name}"
        yield where, state
        for inner in [state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])]:
            if inner:
                yield from states_of(inner, f"{where}/")


def task_resources(state: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(field, integration ARN, the parameters it is called with) for a Task, and a Map's ItemReader and ResultWriter.

    A JSONata state passes them as `Arguments`, a JSONPath state as `Parameters`.
    """
    found = []
    if state["Type"] == "Task":
        found.append(("Resource", state["Resource"], state.get("Arguments", state.get("Parameters", {}))))
    for field in ("ItemReader", "ResultWriter"):
        if field in state:
            found.append((field, state[field]["Resource"], state[field].get("Parameters", {})))
    return found


def iam_actions(field: str, integration: str) -> list[str]:
    """What the role must allow for one integration: its API, and for a ResultWriter the multipart upload AWS
    documents (it writes large result files in parts, and must be able to read and abort them)."""
    action = iam_action(integration)
    if field == "ResultWriter" and action == "s3:PutObject":
        return [*RESULT_WRITER_ACTIONS]
    return [action]


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
        for field, integration, parameters in task_resources(state):
            for action in iam_actions(field, integration):
                for name in sorted(set(PLACEHOLDER.findall(json.dumps([integration, parameters])))):
                    wanted = references(substitutions.get(name))
                    if not wanted and isinstance(substitutions.get(name), str):
                        continue  # a literal (an expression, a limit, an item's key) names no resource
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


def own_runs(machine_id: str, label: str = "label") -> dict[str, list[str]]:
    """Example ARNs of what a machine's own features act on, as `rendered` writes them (the machine's
    `Ref` is `<id>`, its name `<id.Name>`), so a grant's resource can be matched against each."""
    prefix = f"arn:aws:states:{PSEUDO_PARAMETERS['AWS::Region']}:{PSEUDO_PARAMETERS['AWS::AccountId']}"
    name = f"<{machine_id}.Name>"
    return {
        "state machine": [f"<{machine_id}>", f"{prefix}:stateMachine:{name}"],
        "execution": [f"{prefix}:execution:{name}:run-1"],
        "child execution": [f"{prefix}:execution:{name}/{label}:0a1b2c3d-child"],
        "map run": [f"{prefix}:mapRun:{name}/{label}:0a1b2c3d-map-run"],
    }


def feature_calls(definition: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(state path, action, kind of resource, map run label) for every call the file's own features make on
    the machine's own runs."""
    calls = []
    for where, state in states_of(definition):
        if state.get("ItemProcessor", {}).get("ProcessorConfig", {}).get("Mode") == "DISTRIBUTED":
            calls += [(where, action, kind, state.get("Label", "label")) for action, kind in DISTRIBUTED_MAP_ACTIONS]
        if state["Type"] == "Task" and not PLACEHOLDER.search(json.dumps(state.get("Parameters", {}))):
            action = iam_action(state["Resource"])
            if action.startswith("states:"):
                calls.append((where, action, OWN_RUN_TASK_RESOURCES.get(action, "execution"), "label"))
    return calls


def own_run_problems(definition: dict[str, Any], machine_id: str, statements: list[dict[str, Any]],
                     templates: dict[str, dict[str, Any]]) -> list[str]:
    """Each feature call must be allowed by a statement whose resource, as deployed, covers an example of
    what it acts on (a grant on the machine's executions does not cover its child executions)."""
    problems = []
    for where, action, kind, label in feature_calls(definition):
        examples = own_runs(machine_id, label)[kind]
        if not any(any(fnmatch.fnmatchcase(action, pattern) for pattern in _list(statement["Action"]))
                   and any(fnmatch.fnmatchcase(example, rendered(resource, templates))
                           for resource in _list(statement["Resource"]) for example in examples)
                   for statement in statements):
            problems.append(f"{where}: the role may not {action} on the state machine's own {kind}s ({examples[-1]})")
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
def test_the_role_may_do_every_task_and_every_feature_on_the_resource_it_acts_on(path, deployed_machines, templates):
    key, machine = machine_for(path, deployed_machines)
    substitutions = machine["Properties"].get("DefinitionSubstitutions", {})
    statements = role_statements(templates[key], machine)
    assert permission_problems(json.loads(path.read_text()), substitutions, statements, templates) == []
    (machine_id,) = [i for i, r in templates[key]["Resources"].items() if r is machine]
    assert own_run_problems(json.loads(path.read_text()), machine_id, statements, templates) == []


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


@pytest.fixture(scope="module")
def segment_large(deployed_machines, templates) -> dict[str, Any]:
    """The large-segment workflow, whose Distributed Map reads the segment, writes its results and runs its
    children as executions of the machine itself."""
    path = ROOT / "statemachines" / "crm_segment_large.asl.json"
    key, machine = machine_for(path, deployed_machines)
    (machine_id,) = [i for i, r in templates[key]["Resources"].items() if r is machine]
    return {"definition": json.loads(path.read_text()), "machine_id": machine_id,
            "substitutions": machine["Properties"]["DefinitionSubstitutions"],
            "statements": role_statements(templates[key], machine)}


def test_the_checks_derive_the_distributed_maps_calls_from_the_file(segment_large):
    assert [(where, action, kind) for where, action, kind, _ in feature_calls(segment_large["definition"])] == [
        ("EmailEachUser", "states:StartExecution", "state machine"),
        ("EmailEachUser", "states:DescribeExecution", "execution"),
        ("EmailEachUser", "states:StopExecution", "execution"),
        ("EmailEachUser", "states:RedriveExecution", "child execution"),
        ("CountOutcomes", "states:DescribeMapRun", "map run"),
    ]


def test_a_distributed_map_without_the_right_to_start_its_children_or_write_its_results_is_caught(
    segment_large, templates
):
    definition, machine_id = segment_large["definition"], segment_large["machine_id"]
    # WHEN the role loses the right to start executions, and its ResultWriter statement
    without = [s for s in segment_large["statements"]
               if not {"states:StartExecution", "s3:PutObject"} & set(_list(s["Action"]))]
    # THEN both are reported, at the Map: the start, and every part of a multipart result upload
    assert own_run_problems(definition, machine_id, without, templates) == [
        "EmailEachUser: the role may not states:StartExecution on the state machine's own state machines"
        f" (arn:aws:states:us-east-1:123456789012:stateMachine:<{machine_id}.Name>)"]
    problems = permission_problems(definition, segment_large["substitutions"], without, templates)
    assert [p.split(" on ")[0] for p in problems] == [
        f"EmailEachUser: the role may not {action}" for action in
        ("s3:PutObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload")]


def test_a_distributed_map_that_may_not_redrive_its_children_is_caught(segment_large, templates):
    definition, machine_id = segment_large["definition"], segment_large["machine_id"]
    # WHEN the role may not redrive at all
    without = [{**s, "Action": [a for a in _list(s["Action"]) if a != "states:RedriveExecution"]}
               for s in segment_large["statements"]]
    (problem,) = own_run_problems(definition, machine_id, without, templates)
    # THEN redriving the run (which redrives the Map Run's failed children) is reported
    assert problem.startswith("EmailEachUser: the role may not states:RedriveExecution on the state machine's own"
                              " child executions")
    # AND so is a grant on the machine's executions only: a child is `execution:<machine>/<label>:<id>`
    parent_form = {"Effect": "Allow", "Action": "states:RedriveExecution", "Resource": {"Fn::Join": ["", [
        "arn:aws:states:us-east-1:123456789012:execution:", {"Fn::GetAtt": [machine_id, "Name"]}, ":*"]]}}
    assert own_run_problems(definition, machine_id, [*without, parent_form], templates) == [problem]
