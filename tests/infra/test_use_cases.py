"""The use cases and their registry: which downstream each calls comes from its registry line, each owns what it
built, and a line out of order or naming an unconfigured downstream refuses to build with the remedy."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest
from aws_cdk import App

STACKS_DIR = Path(__file__).resolve().parents[2] / "stacks"


def string_literals(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_no_stack_or_use_case_names_a_downstream_only_the_registry_does(cdk_stages):
    # GIVEN every downstream configured in any stage
    names = {name for stage in cdk_stages.values() for name in stage["downstreams"]}
    assert {"crm", "payment_gateway", "ai_model", "legacy_mainframe"} <= names
    # WHEN the stacks' and use cases' modules are read THEN only the registry holds a downstream's name
    naming = {str(path.relative_to(STACKS_DIR)) for path in STACKS_DIR.rglob("*.py")
              if path.name != "config.py" and string_literals(path) & names}
    assert naming == {"use_cases/registry.py"}


def test_each_use_case_owns_what_it_built_and_nothing_another_built(dev_assembly):
    stacks, _ = dev_assembly
    use_cases = stacks["control_loop"].use_cases
    # GIVEN the registered use cases, in registry order
    assert [u.name for u in use_cases] == ["CrmBatchEmail", "CrmSegmentLarge", "Payments", "UgcModeration",
                                           "LegacyBuffer"]
    # THEN their constructs never overlap, and each owns its own workflow
    paths = [c.node.path for u in use_cases for c in u.owned()]
    assert len(paths) == len(set(paths))
    workflows = {u.name: sorted(c.node.id for c in u.constructs if type(c).__name__ == "AslStateMachine")
                 for u in use_cases}
    assert workflows == {"CrmBatchEmail": ["CrmBatchEmail"], "CrmSegmentLarge": ["CrmSegmentLarge"],
                         "Payments": ["PaymentAuthorization"], "UgcModeration": ["UgcModeration"],
                         "LegacyBuffer": ["LegacyPublish"]}


def test_a_registry_line_naming_a_downstream_the_stage_does_not_configure_refuses_to_build(cdk_context, dev_config):
    from stacks.app_stacks import add_stacks
    from stacks.use_cases import USE_CASES, CrmBatchEmail, CrmBatchEmailProps, Registered

    # GIVEN the registry with the CRM batch pointed at a downstream nobody configured
    registry = [Registered(CrmBatchEmail, CrmBatchEmailProps(downstream="mailer")), *USE_CASES[1:]]
    # WHEN the stage is built THEN it refuses, naming the configured downstreams
    with pytest.raises(Exception, match=r"no downstream named 'mailer'; configured downstreams: crm, "):
        add_stacks(App(context=dict(cdk_context)), replace(dev_config, nag=False), use_cases=registry)


def test_a_use_case_registered_before_the_one_whose_resources_it_shares_refuses_to_build(cdk_context, dev_config):
    from stacks.app_stacks import add_stacks
    from stacks.use_cases import USE_CASES

    # GIVEN the large-segment workflow registered before the inline batch whose dead-letter queue it shares
    registry = [USE_CASES[1], USE_CASES[0], *USE_CASES[2:]]
    # WHEN the stage is built THEN it refuses, saying what to do
    with pytest.raises(ValueError, match=r"expected one CrmBatchEmail among the use cases built, got 0 \(\[\]\):"
                                         r" register it before the use case that shares its resources"):
        add_stacks(App(context=dict(cdk_context)), replace(dev_config, nag=False), use_cases=registry)


def test_every_use_case_s_workflows_and_queues_are_on_the_dashboard(dev_assembly, templates):
    import json

    stacks, _ = dev_assembly
    control_loop = stacks["control_loop"]
    # GIVEN the dashboard's body as CloudFormation gets it (the literal parts of its Fn::Join)
    (dashboard,) = [r for r in templates["control_loop"]["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    body = "".join(part for part in dashboard["Properties"]["DashboardBody"]["Fn::Join"][1] if isinstance(part, str))
    from stacks.control_loop_stack import queues_in, workflows_in

    graphed = []
    # THEN each registered use case's state machines and queues are graphed, under their names, with no list kept
    for use_case in control_loop.use_cases:
        for workflow in workflows_in(use_case.owned()):
            assert json.dumps(f"{workflow.name} started")[1:-1] in body, (use_case.name, workflow.name)
            graphed.append(workflow.name)
        for queue in queues_in(use_case.owned()):
            label = f"{queue.name} {'dead letters' if queue.is_dead_letter_queue else 'oldest (s)'}"
            assert json.dumps(label)[1:-1] in body, (use_case.name, label)
            graphed.append(queue.name)
    assert {"CrmSegmentLarge", "LegacyPublish", "LegacyConsumerDeadLetterQueue"} <= set(graphed)


def test_moderation_without_the_models_concurrency_contract_refuses_to_build(cdk_context, dev_config):
    from stacks.app_stacks import add_stacks

    # GIVEN a stage whose AI model sets no max_in_flight
    downstreams = tuple(replace(d, max_in_flight=None) if d.name == "ai_model" else d for d in dev_config.downstreams)
    # WHEN the stage is built THEN the moderation workflow, which holds a lease per call, refuses with the key to set
    with pytest.raises(ValueError, match=r"ugc moderation holds a lease of ai_model's in-flight semaphore for every"
                                         r" call, got no limit: set stages.<stage>.downstreams.ai_model.max_in_flight"):
        add_stacks(App(context=dict(cdk_context)), replace(dev_config, nag=False, downstreams=downstreams))


@pytest.mark.parametrize(("downstream", "handler"), [("payment_gateway", "the payment authorizer"),
                                                     ("legacy_mainframe", "the legacy consumer")])
def test_auth_on_a_downstream_a_handler_calls_itself_refuses_to_build(cdk_context, dev_config, downstream, handler):
    from stacks.app_stacks import add_stacks
    from stacks.config import DownstreamAuth

    # GIVEN credentials configured for a downstream that a use case's own handler calls, not its caller
    config = replace(dev_config, nag=False, downstreams=tuple(
        replace(d, auth=DownstreamAuth(kind="api_key")) if d.name == downstream else d for d in dev_config.downstreams))
    # WHEN the stage is built THEN it refuses rather than deploy a handler that would call it without them
    with pytest.raises(Exception, match=rf"downstreams.{downstream}.auth is set \(api_key\), but {handler} calls"
                                        rf" {downstream} itself and sends no credentials"):
        add_stacks(App(context=dict(cdk_context)), config)
