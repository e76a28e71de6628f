"""Every stack of one stage, wired together; `app.py` and the tests build the app through here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment, Stack, Tags, Validations
from aws_cdk.cx_api import CloudAssembly
from cdk_nag import AwsSolutionsChecks

from stacks.buffers_stack import BuffersStack
from stacks.config import AppConfig
from stacks.control_loop_stack import ControlLoopStack
from stacks.deploy_rules import DeployRules
from stacks.ingress_stack import IngressStack
from stacks.shared_limits_stack import SharedLimitsStack
from stacks.use_cases import USE_CASES, Registered
from stacks.workflows_stack import WorkflowsStack


# The template metadata key under which the shared-limits stack carries the account settings the stage needs.
ACCOUNT_SETTINGS_METADATA = "Throttling::AccountSettings"


def add_stacks(app: App, config: AppConfig, use_cases: Sequence[Registered[Any]] = USE_CASES) -> dict[str, Stack]:
    """The stage's stacks, each layer building its lines of `use_cases` (the registry; a test may pass another)."""
    env = Environment(account=config.account, region=config.region)
    prefix = config.stack_prefix
    shared_limits = SharedLimitsStack(app, f"{prefix}-SharedLimits", config=config, env=env,
                                      description="Throttling: shared limits (tunables, limiter tables)")
    workflows = WorkflowsStack(app, f"{prefix}-Workflows", config=config, shared_limits=shared_limits,
                               use_cases=use_cases, env=env,
                               description="Throttling: workflows and the functions that call downstreams")
    buffers = BuffersStack(app, f"{prefix}-Buffers", config=config, shared_limits=shared_limits, use_cases=use_cases,
                           env=env,
                           description="Throttling: buffers (queues in front of slow downstreams, and their consumers)")
    ingress = IngressStack(app, f"{prefix}-Ingress", config=config, workflows=workflows, buffers=buffers, env=env,
                           description="Throttling: ingress (the throttled API in front of the workflows and buffers)")
    # Last: the control loop alarms on every workflow and queue of the use cases the stacks above built.
    control_loop = ControlLoopStack(
        app, f"{prefix}-ControlLoop", config=config, shared_limits=shared_limits,
        use_cases=[*workflows.use_cases, *buffers.use_cases], downstream_callers=workflows.downstream_callers,
        apis={"Api": ingress.api},
        env=env, description="Throttling: control loop (alarms, the controller that tunes SSM, the dashboard)")
    stacks: dict[str, Stack] = {"shared_limits": shared_limits, "workflows": workflows, "buffers": buffers,
                                "ingress": ingress, "control_loop": control_loop}
    for stack in stacks.values():
        Tags.of(stack).add("project", "throttling-reference")
        Tags.of(stack).add("stage", config.stage)
    # Account-wide settings the stage needs, which no resource can set: `throttlectl preflight` applies them.
    shared_limits.template_options.metadata = {ACCOUNT_SETTINGS_METADATA: {
        "ParameterStoreHighThroughput": config.parameter_store_high_throughput}}
    # What AWS would refuse on deploy and moto does not (stacks/deploy_rules.py): always checked.
    Validations.of(app).add_plugins(DeployRules())
    if config.nag:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stacks


def synthesize(config: AppConfig, outdir: Path, context: Mapping[str, Any]) -> tuple[dict[str, Stack], CloudAssembly]:
    """Synthesize every stack of `config` in this process, as `app.py` does through the CLI."""
    app = App(outdir=str(outdir), context=dict(context))
    stacks = add_stacks(app, config)
    return stacks, app.synth()
