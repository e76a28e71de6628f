"""The library's constructs as another app uses them: the shared limiter, the runtime layer, the escape hatches,
and the pins the distribution promises."""

from __future__ import annotations

import re
import tomllib
import zipfile
from pathlib import Path

import pytest
from aws_cdk import App, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template

from stacks.app_assets import LAMBDA_REQUIREMENTS_FILE, ROOT, lambda_code, pinned_version
from stacks.patterns import (
    POWERTOOLS_VERSION,
    DownstreamLimit,
    HandlerFunction,
    RateLimiterTable,
    RuntimeLayer,
    SharedLimiter,
    ThrottledQueueConsumer,
)
from stacks.patterns.runtime_layer import staged_runtime

CONSUMER = dict(handler="handlers.legacy_consumer.handler", service="probe", description="probe",
                removal_policy=RemovalPolicy.DESTROY, log_retention=logs.RetentionDays.ONE_WEEK)


def consumer(stack: Stack, construct_id: str = "Consumer", **props) -> ThrottledQueueConsumer:
    return ThrottledQueueConsumer(stack, construct_id, code=lambda_code(), **CONSUMER, **props)


# -- the shared limiter -------------------------------------------------------------------------------


def test_connect_gives_a_function_its_downstream_s_environment_and_the_least_grants():
    # GIVEN a shared limiter of two downstreams and a function of yours
    stack = Stack(App(), "Probe")
    limiter = SharedLimiter(stack, "Limiter", tunables_prefix="/mine", downstreams={
        "orders_api": DownstreamLimit(rate_limit_per_sec=2, burst=2), "crm": DownstreamLimit(rate_limit_per_sec=10)})
    function = HandlerFunction(stack, "Mine", code=lambda_code(), handler="h.handler", service="mine",
                               description="mine", removal_policy=RemovalPolicy.DESTROY)
    # WHEN it is connected to one of them
    limiter.connect(function.function, "orders_api")
    template = Template.from_stack(stack)
    # THEN it knows that downstream's bucket, contract, tunables and table
    template.has_resource_properties("AWS::Lambda::Function", {"Environment": {"Variables": Match.object_like({
        "DOWNSTREAM_NAME": "orders_api", "DOWNSTREAM_RATE_LIMIT_PER_SEC": "2", "DOWNSTREAM_BURST": "2",
        "TUNABLES_PARAMETER_NAME": {"Ref": Match.string_like_regexp("LimiterTunablesDownstreamsOrdersApi")},
        "TUNABLES_CACHE_SEC": "5",
        "RATE_LIMITER_TABLE_NAME": Match.any_value()})}})
    # AND the seeds are the planned settings under each contract (10 % of the rate, half the burst)
    parameters = {p["Properties"]["Name"]: p["Properties"]["Value"]
                  for p in template.find_resources("AWS::SSM::Parameter").values()}
    assert parameters == {
        "/mine/downstreams/orders_api": '{"burst": 1, "max_concurrency": 2, "mode": "auto", "rate_per_sec": 1.8}',
        "/mine/downstreams/crm": '{"burst": 1, "max_concurrency": 2, "mode": "auto", "rate_per_sec": 9.0}'}
    # AND it may update the limiter's items and read that downstream's document, nothing more
    (policy,) = [p for p in template.find_resources("AWS::IAM::Policy").values()
                 if "Mine" in str(p["Properties"]["Roles"])]
    actions = sorted(a for s in policy["Properties"]["PolicyDocument"]["Statement"]
                     for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
    assert "dynamodb:UpdateItem" in actions and "ssm:GetParameter" in actions
    assert not [a for a in actions if a.startswith("dynamodb:") and a != "dynamodb:UpdateItem"]
    assert "crm" not in str(policy["Properties"]["PolicyDocument"])


def test_a_downstream_the_limiter_does_not_hold_and_bad_limits_are_refused_saying_what_to_do():
    stack = Stack(App(), "Probe")
    limiter = SharedLimiter(stack, "Limiter", tunables_prefix="/mine",
                            downstreams={"orders_api": DownstreamLimit(rate_limit_per_sec=2)})
    with pytest.raises(KeyError, match=r"no downstream 'orderz' in this SharedLimiter; known: \['orders_api'\]"):
        limiter.environment("orderz")
    with pytest.raises(ValueError, match="rate_limit_per_sec must be a finite number > 0, got 0"):
        DownstreamLimit(rate_limit_per_sec=0)
    with pytest.raises(ValueError, match="headroom must be from 0 to below 1"):
        DownstreamLimit(rate_limit_per_sec=1, headroom=1.5)
    with pytest.raises(ValueError, match="downstreams is empty"):
        SharedLimiter(stack, "Empty", tunables_prefix="/mine", downstreams={})


def test_an_existing_table_is_used_and_table_props_override_the_defaults():
    stack = Stack(App(), "Probe")
    # GIVEN a table of yours
    yours = dynamodb.Table(stack, "Yours", partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING))
    # WHEN the limiter is given it THEN it creates no table of its own and uses yours
    limiter = SharedLimiter(stack, "Limiter", tunables_prefix="/mine", existing_table=yours,
                            downstreams={"orders_api": DownstreamLimit(rate_limit_per_sec=2)})
    assert limiter.table is yours
    assert len(Template.from_stack(stack).find_resources("AWS::DynamoDB::Table")) == 1
    # AND table props with an existing table are refused, as the table is configured where it is made
    with pytest.raises(ValueError, match=r"table_props \['billing_mode'\] were given with existing_table"):
        RateLimiterTable(stack, "Both", existing_table=yours, table_props={"billing_mode": "x"})
    # AND table_props override a new table's defaults, keeping the rest (encryption, recovery)
    RateLimiterTable(Stack(App(), "Other"), "Limits", table_props={"table_name": "my-limits"})


def test_table_props_reach_the_table():
    stack = Stack(App(), "Probe")
    RateLimiterTable(stack, "Limits", table_props={"table_name": "my-limits"})
    Template.from_stack(stack).has_resource_properties("AWS::DynamoDB::Table", {
        "TableName": "my-limits", "SSESpecification": {"SSEEnabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True}})


# -- the runtime layer -------------------------------------------------------------------------------


def test_the_runtime_layer_holds_the_throttling_package_under_python_and_nothing_compiled(tmp_path):
    # WHEN the runtime is staged for the layer
    staged = staged_runtime()
    files = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    # THEN it is the package's source under python/, as Lambda's /opt/python expects
    assert "python/throttling/runtime/shared_limiter.py" in files
    assert "python/throttling/core/rate_limiter.py" in files
    assert all(f.startswith("python/throttling/") for f in files)
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    # AND staging the same files again reuses the folder (CDK hashes the content, not the path)
    assert staged_runtime() == staged
    # AND the construct makes a layer for the runtime and architecture the functions use
    stack = Stack(App(), "Probe")
    RuntimeLayer(stack, "Runtime")
    Template.from_stack(stack).has_resource_properties("AWS::Lambda::LayerVersion", {
        "CompatibleRuntimes": ["python3.13"], "CompatibleArchitectures": ["x86_64"]})


# -- the queue consumer's escape hatches ------------------------------------------------------------


def test_an_existing_queue_is_drained_with_its_own_dead_letter_queue():
    stack = Stack(App(), "Probe")
    dead = sqs.Queue(stack, "Dead")
    yours = sqs.Queue(stack, "Yours", visibility_timeout=Duration.minutes(6),
                      dead_letter_queue=sqs.DeadLetterQueue(queue=dead, max_receive_count=4))
    # WHEN the consumer is given your queue
    built = consumer(stack, existing_queue=yours)
    # THEN it creates no queue, knows yours and its dead letters, and takes their receive count
    assert built.queue is yours and built.dead_letter_queue is dead and built.max_receive_count == 4
    template = Template.from_stack(stack)
    assert len(template.find_resources("AWS::SQS::Queue")) == 2
    template.has_resource_properties("AWS::Lambda::Function", {"Environment": {"Variables": Match.object_like({
        "QUEUE_MAX_RECEIVE_COUNT": "4"})}})


def test_an_existing_queue_without_dead_letters_or_with_queue_props_is_refused():
    stack = Stack(App(), "Probe")
    bare = sqs.Queue(stack, "Bare")
    with pytest.raises(ValueError, match="existing_queue Probe/Bare has no dead-letter queue"):
        consumer(stack, existing_queue=bare)
    with_dead_letters = sqs.Queue(stack, "Yours", dead_letter_queue=sqs.DeadLetterQueue(
        queue=sqs.Queue(stack, "Dead"), max_receive_count=4))
    with pytest.raises(ValueError, match="queue_props and dead_letter_queue_props were given with existing_queue"):
        consumer(stack, "Second", existing_queue=with_dead_letters, queue_props={"fifo": False})


def test_queue_and_function_props_override_the_defaults_and_the_powertools_layer_follows_the_architecture():
    stack = Stack(App(), "Probe")
    consumer(stack, queue_props={"queue_name": "orders"}, dead_letter_queue_props={"queue_name": "orders-dead"},
             function_props={"architecture": lambda_.Architecture.ARM_64})
    template = Template.from_stack(stack)
    # THEN the names are yours and the defaults you did not override stay (encryption, the dead-letter redrive)
    template.has_resource_properties("AWS::SQS::Queue", {"QueueName": "orders", "SqsManagedSseEnabled": True,
                                                         "RedrivePolicy": Match.object_like({"maxReceiveCount": 10})})
    template.has_resource_properties("AWS::SQS::Queue", {"QueueName": "orders-dead"})
    # AND an arm64 function gets Powertools' arm64 layer
    template.has_resource_properties("AWS::Lambda::Function", {"Architectures": ["arm64"]})
    parameters = [p["Default"] for p in template.to_json()["Parameters"].values() if "powertools" in p["Default"]]
    assert parameters == [f"/aws/service/powertools/python/arm64/python3.13/{POWERTOOLS_VERSION}"]


# -- the pins the distribution promises ------------------------------------------------------------


def test_the_library_pins_the_releases_the_tests_ran():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {name: {re.split(r"[<>=\[ ]", r)[0]: r for r in requirements}
              for name, requirements in project["optional-dependencies"].items()}
    # THEN the constructs' Powertools default, the `lambda` extra and requirements-lambda.txt name one release
    assert POWERTOOLS_VERSION == pinned_version("aws-lambda-powertools", LAMBDA_REQUIREMENTS_FILE)
    assert extras["lambda"]["aws-lambda-powertools"].endswith(f"=={POWERTOOLS_VERSION}")
    # AND the `cdk` extra's floors are the releases requirements.txt deploys with
    deploy = Path(ROOT / "requirements.txt")
    for package in ("aws-cdk-lib", "constructs"):
        assert f">={pinned_version(package, deploy)}" in extras["cdk"][package]
