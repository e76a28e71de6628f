"""Every AWS metric an alarm or a dashboard reads exists with the dimensions it is read with.

CloudWatch accepts an alarm or a graph on any name and any dimensions: a dimension AWS does not
publish for a metric makes a graph that stays empty and an alarm that never fires, and nothing
fails. So every `AWS/*` metric in every alarm and dashboard of the app must be one of the
dimension sets in `PUBLISHED_DIMENSIONS`, which is taken from AWS's documentation of each
namespace (the same sets CDK generates its canned metrics from):

- DynamoDB: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/metrics-dimensions.html
  (`ConditionalCheckFailedRequests` is published per table only, `ThrottledRequests` per table and operation)
- Lambda: https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html
- SQS: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html
- Step Functions: https://docs.aws.amazon.com/step-functions/latest/dg/procedure-cw-metrics.html
- API Gateway: https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-metrics-and-dimensions.html
- EventBridge: https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-monitoring.html (a rule of the
  default bus is published by `RuleName` alone)

A metric missing from the table fails too: add it, with the dimension sets its page lists.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import App, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk.assertions import Template

from tests.infra.cloudformation import json_body, resources_of

TABLE, GSI, OPERATION = "TableName", "GlobalSecondaryIndexName", "Operation"
FUNCTION = "FunctionName"
API, STAGE = "ApiName", "Stage"

_LAMBDA_PER_VERSION = [{FUNCTION}, {FUNCTION, "Resource"}, {FUNCTION, "Resource", "ExecutedVersion"}, set()]
_LAMBDA = [{FUNCTION}, {FUNCTION, "Resource"}, set()]
_STATE_MACHINE = [{"StateMachineArn"}, set()]
_QUEUE = [{"QueueName"}]
_REST_API = [{API}, {API, STAGE}, {API, "Method", "Resource", STAGE}]

PUBLISHED_DIMENSIONS: dict[str, dict[str, list[set[str]]]] = {
    "AWS/DynamoDB": {
        "ConditionalCheckFailedRequests": [{TABLE}],
        "ConsumedReadCapacityUnits": [{TABLE}, {TABLE, GSI}],
        "ConsumedWriteCapacityUnits": [{TABLE}, {TABLE, GSI}],
        "ReadThrottleEvents": [{TABLE}, {TABLE, GSI}],
        "WriteThrottleEvents": [{TABLE}, {TABLE, GSI}],
        "ThrottledRequests": [{TABLE, OPERATION}],
        "SystemErrors": [{TABLE, OPERATION}],
        "SuccessfulRequestLatency": [{TABLE, OPERATION}],
        "UserErrors": [set()],
    },
    "AWS/Lambda": {
        **{name: _LAMBDA_PER_VERSION for name in ("Invocations", "Errors", "Throttles", "Duration",
                                                  "ConcurrentExecutions")},
        **{name: _LAMBDA for name in ("DeadLetterErrors", "DestinationDeliveryFailures", "IteratorAge")},
    },
    "AWS/SQS": {name: _QUEUE for name in (
        "ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed", "NumberOfMessagesSent", "NumberOfMessagesReceived",
        "NumberOfMessagesDeleted", "NumberOfEmptyReceives", "SentMessageSize",
        # a fair queue's (messages with a MessageGroupId on a standard queue), per queue as the others
        "ApproximateAgeOfOldestMessageInQuietGroups", "ApproximateNumberOfNoisyGroups")},
    "AWS/States": {name: _STATE_MACHINE for name in (
        "ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed", "ExecutionsAborted", "ExecutionsTimedOut",
        "ExecutionThrottled", "ExecutionTime")},
    "AWS/ApiGateway": {name: _REST_API for name in ("Count", "4XXError", "5XXError", "Latency",
                                                     "IntegrationLatency")},
    "AWS/Events": {name: [{"RuleName"}] for name in (
        "Invocations", "FailedInvocations", "DeadLetterInvocations", "InvocationsSentToDlq",
        "InvocationsFailedToBeSentToDlq", "TriggeredRules")},
}

Metric = tuple[str, str, frozenset[str], str]  # namespace, name, dimension names, where it is read


# -- reading the metrics ------------------------------------------------------------------------
def alarm_metrics(logical_id: str, properties: dict[str, Any]) -> list[Metric]:
    """The metrics an alarm reads: its own metric, or each metric of its math expression."""
    where = f"alarm {properties.get('AlarmName', logical_id)}"
    found = []
    if "MetricName" in properties:
        found.append((properties.get("Namespace", ""), properties["MetricName"],
                      frozenset(d["Name"] for d in properties.get("Dimensions", [])), where))
    for query in properties.get("Metrics", []):
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            found.append((metric.get("Namespace", ""), metric["MetricName"],
                          frozenset(d["Name"] for d in metric.get("Dimensions", [])), where))
    return found


def dashboard_metrics(logical_id: str, properties: dict[str, Any]) -> list[Metric]:
    """The metrics of every graph of a dashboard (`[namespace, name, dim, value, ..., {options}]`)."""
    found = []
    for widget in json_body(properties["DashboardBody"])["widgets"]:
        title = widget.get("properties", {}).get("title", widget["type"])
        for row in widget.get("properties", {}).get("metrics", []):
            if not row or isinstance(row[0], dict):
                continue  # a math expression: its metrics are rows of their own
            fields = [field for field in row if not isinstance(field, dict)]
            namespace, name, pairs = fields[0], fields[1], fields[2:]
            found.append((namespace, name, frozenset(pairs[0::2]), f"dashboard {logical_id}, graph {title!r}"))
    return found


def app_metrics(templates: dict[str, dict[str, Any]]) -> list[Metric]:
    found = []
    for _, logical_id, alarm in resources_of(templates, "AWS::CloudWatch::Alarm"):
        found += alarm_metrics(logical_id, alarm["Properties"])
    for _, logical_id, dashboard in resources_of(templates, "AWS::CloudWatch::Dashboard"):
        found += dashboard_metrics(logical_id, dashboard["Properties"])
    return found


# -- the check ------------------------------------------------------------------------------------
def dimension_problems(metrics: list[Metric], published: dict[str, dict[str, list[set[str]]]]) -> list[str]:
    problems = []
    for namespace, name, dimensions, where in metrics:
        if not namespace.startswith("AWS/"):
            continue  # our own metrics: their names are checked against what the callers emit elsewhere
        if name not in published.get(namespace, {}):
            problems.append(f"{where}: {namespace} {name} is not in the table of published metrics; add it with the"
                            " dimension sets AWS documents for it")
        elif set(dimensions) not in published[namespace][name]:
            problems.append(f"{where}: {namespace} {name} is not published with dimensions {sorted(dimensions)};"
                            f" AWS publishes it with {[sorted(s) for s in published[namespace][name]]}")
    return problems


def test_every_aws_metric_of_every_alarm_and_graph_is_published_with_its_dimensions(templates):
    metrics = app_metrics(templates)
    # GIVEN the app's alarms and dashboard read metrics of every namespace in the table
    assert {namespace for namespace, *_ in metrics if namespace.startswith("AWS/")} == set(PUBLISHED_DIMENSIONS)
    # THEN each is read with dimensions AWS publishes it with
    assert dimension_problems(metrics, PUBLISHED_DIMENSIONS) == []


def test_the_denied_acquires_graph_reads_conditional_check_failures_per_table(templates):
    denied = [m for m in app_metrics(templates) if m[1] == "ConditionalCheckFailedRequests"]
    assert denied and {m[2] for m in denied} == {frozenset({TABLE})}


# -- the check is live ----------------------------------------------------------------------------
def _dashboard_of(*metrics: cloudwatch.IMetric) -> dict[str, dict[str, Any]]:
    stack = Stack(App(), "Probe")
    cloudwatch.Dashboard(stack, "Board").add_widgets(cloudwatch.GraphWidget(title="graph", left=list(metrics)))
    cloudwatch.Alarm(stack, "Alarm", metric=metrics[0], threshold=0, evaluation_periods=1)
    return {"probe": Template.from_stack(stack).to_json()}


def test_a_dimension_aws_does_not_publish_is_caught_in_a_graph_and_an_alarm():
    # GIVEN the mistake the denied-acquires graph made: conditional check failures per operation
    denied = cloudwatch.Metric(namespace="AWS/DynamoDB", metric_name="ConditionalCheckFailedRequests",
                               dimensions_map={TABLE: "limits", OPERATION: "UpdateItem"}, period=Duration.minutes(1))
    # WHEN the check reads a dashboard and an alarm on it
    problems = dimension_problems(app_metrics(_dashboard_of(denied)), PUBLISHED_DIMENSIONS)
    # THEN both are reported, with the dimensions AWS does publish
    assert len(problems) == 2
    assert all("ConditionalCheckFailedRequests is not published with dimensions ['Operation', 'TableName'];"
               " AWS publishes it with [['TableName']]" in p for p in problems)
    assert sorted(p.split(" ")[0] for p in problems) == ["alarm", "dashboard"]


def test_an_unknown_aws_metric_is_caught_and_our_own_namespace_is_left_alone():
    typo = cloudwatch.Metric(namespace="AWS/States", metric_name="ExecutionsFailedCount",
                             dimensions_map={"StateMachineArn": "arn"})
    ours = cloudwatch.Metric(namespace="Throttling", metric_name="Anything", dimensions_map={"service": "x"})
    problems = dimension_problems(app_metrics(_dashboard_of(typo, ours)), PUBLISHED_DIMENSIONS)
    assert problems and all("ExecutionsFailedCount is not in the table" in p for p in problems)
