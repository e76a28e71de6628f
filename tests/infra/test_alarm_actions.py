"""Every alarm's notification can be delivered: its topic lets CloudWatch publish, and its key lets CloudWatch encrypt.

A topic with any policy (`enforce_ssl` gives it one holding only the TLS Deny) accepts only the
principals its policy allows, and a topic encrypted with a customer key accepts a publisher only
when the key policy lets it use the key. CloudWatch calls as `cloudwatch.amazonaws.com` on behalf
of `arn:<partition>:cloudwatch:<region>:<account>:alarm:<name>` (the `aws:SourceArn` and
`aws:SourceAccount` SNS documents for it), and the AWS managed key `alias/aws/sns` can never let it
in. None of this fails a deploy: the alarm changes state and its action fails in its history. So
the check reads every alarm action (ALARM, OK and INSUFFICIENT_DATA) of the synthesized app and
evaluates the topic's and the key's policies for that alarm, conditions included.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template

from tests.infra.cloudformation import PSEUDO_PARAMETERS, references, rendered, resolve, resources_of

CLOUDWATCH = "cloudwatch.amazonaws.com"
ACTION_KINDS = ("AlarmActions", "OKActions", "InsufficientDataActions")
KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
# Condition operators the check can evaluate on the two keys CloudWatch sets.
MATCHERS = {
    "StringEquals": lambda value, wanted: value == wanted,
    "ArnEquals": lambda value, wanted: value == wanted,
    "StringLike": fnmatch.fnmatchcase,
    "ArnLike": fnmatch.fnmatchcase,
}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def alarm_arn(properties: dict[str, Any], templates: dict[str, dict[str, Any]]) -> str | None:
    if "AlarmName" not in properties:
        return None  # CloudFormation names it at deploy time: no condition on its ARN can be checked
    return (f"arn:{PSEUDO_PARAMETERS['AWS::Partition']}:cloudwatch:{PSEUDO_PARAMETERS['AWS::Region']}:"
            f"{PSEUDO_PARAMETERS['AWS::AccountId']}:alarm:{rendered(properties['AlarmName'], templates)}")


def admits(statement: dict[str, Any], source_arn: str | None, templates: dict[str, dict[str, Any]]) -> str | None:
    """None when the statement's conditions admit a request from this alarm, else why not."""
    context = {"aws:sourcearn": source_arn, "aws:sourceaccount": PSEUDO_PARAMETERS["AWS::AccountId"]}
    for operator, tests in statement.get("Condition", {}).items():
        for key, wanted in tests.items():
            if operator not in MATCHERS or key.lower() not in context:
                return f"a condition the check cannot evaluate ({operator} {key})"
            value = context[key.lower()]
            if value is None:
                return f"{key} is not known before deploy (name the alarm)"
            if not any(MATCHERS[operator](value, rendered(w, templates)) for w in _list(wanted)):
                return f"{key} {value} does not match {[rendered(w, templates) for w in _list(wanted)]}"
    return None


def allows(statements: list[dict[str, Any]], action: str, resource_ids: set[str], source_arn: str | None,
           templates: dict[str, dict[str, Any]]) -> list[str]:
    """[] when some Allow lets CloudWatch do `action` for this alarm, else why each candidate does not."""
    reasons = []
    for statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal", {})
        services = _list(principal.get("Service", [])) if isinstance(principal, dict) else []
        if CLOUDWATCH not in services and principal != "*" and principal != {"AWS": "*"}:
            continue
        if not any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in _list(statement["Action"])):
            continue
        resources = _list(statement.get("Resource", "*"))
        if "*" not in resources and not resource_ids & references(resources):
            continue
        why_not = admits(statement, source_arn, templates)
        if why_not is None:
            return []
        reasons.append(f"statement {statement.get('Sid', '(no Sid)')}: {why_not}")
    return reasons or ["no statement allows it"]


def topic_statements(topic_id: str, templates: dict[str, dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The statements of the topic's policies, or None when it has none (SNS's default policy then applies)."""
    documents = [p["Properties"]["PolicyDocument"] for _, _, p in resources_of(templates, "AWS::SNS::TopicPolicy")
                 if topic_id in {found[0] for r in references(p["Properties"]["Topics"]) if (found := resolve(r, templates))}]
    return [s for d in documents for s in d["Statement"]] if documents else None


def delivery_problems(templates: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for _, logical_id, alarm in resources_of(templates, "AWS::CloudWatch::Alarm"):
        properties = alarm["Properties"]
        name = rendered(properties.get("AlarmName", logical_id), templates)
        source_arn = alarm_arn(properties, templates)
        for kind in ACTION_KINDS:
            for action in properties.get(kind, []):
                targets = [found for r in references(action) if (found := resolve(r, templates))]
                if len(targets) != 1 or targets[0][1]["Type"] != "AWS::SNS::Topic":
                    problems.append(f"{name} {kind}: {rendered(action, templates)} is not a topic of the app, so its"
                                    " delivery cannot be checked")
                    continue
                topic_id, topic = targets[0]
                problems += [f"{name} {kind}: topic {topic_id}: {p}" for p in
                             topic_problems(topic_id, topic, source_arn, templates)]
    return sorted(set(problems))


def topic_problems(topic_id: str, topic: dict[str, Any], source_arn: str | None,
                   templates: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    statements = topic_statements(topic_id, templates)
    if statements is None:
        problems.append("has no topic policy: give it one that allows CloudWatch (and enforces TLS)")
    elif reasons := allows(statements, "sns:Publish", {topic_id}, source_arn, templates):
        problems.append(f"its policy does not let {CLOUDWATCH} sns:Publish for this alarm ({'; '.join(reasons)})")
    key = topic.get("Properties", {}).get("KmsMasterKeyId")
    if key is None:
        return problems
    keys = [found for r in references(key) if (found := resolve(r, templates))]
    if "alias/aws/sns" in rendered(key, templates):
        problems.append("is encrypted with the AWS managed key alias/aws/sns, whose policy cannot let CloudWatch in:"
                        " use a customer managed key")
    elif len(keys) != 1 or keys[0][1]["Type"] != "AWS::KMS::Key":
        problems.append(f"is encrypted with {rendered(key, templates)}, a key outside the app whose policy cannot be"
                        " checked")
    else:
        key_id, key_resource = keys[0]
        for action in KEY_ACTIONS:
            if reasons := allows(key_resource["Properties"]["KeyPolicy"]["Statement"], action, {key_id}, source_arn,
                                 templates):
                problems.append(f"its key {key_id} does not let {CLOUDWATCH} {action} ({'; '.join(reasons)})")
    return problems


def test_every_alarm_notification_of_the_app_can_be_delivered(templates):
    # GIVEN every alarm of the app, each with actions (the control loop's have ALARM and OK actions)
    alarms = resources_of(templates, "AWS::CloudWatch::Alarm")
    assert alarms and all(a["Properties"].get("AlarmActions") for _, _, a in alarms)
    # THEN CloudWatch may publish each to its topic and use the topic's key
    assert delivery_problems(templates) == []


def test_cloudwatch_is_allowed_for_this_stages_alarms_only(templates):
    # GIVEN the alarm topic's policy
    (topic_id,) = [i for _, i, _ in resources_of(templates, "AWS::SNS::Topic") if i.startswith("AlarmTopic")]
    statements = topic_statements(topic_id, templates)
    # THEN an alarm of another stage or another account is not let in
    for foreign in ("arn:aws:cloudwatch:us-east-1:123456789012:alarm:Throttling-prod-crm-ThrottleRate",
                    "arn:aws:cloudwatch:us-east-1:999999999999:alarm:Throttling-dev-crm-ThrottleRate"):
        assert allows(statements, "sns:Publish", {topic_id}, foreign, templates) != []
    assert allows(statements, "sns:Publish", {topic_id},
                  "arn:aws:cloudwatch:us-east-1:123456789012:alarm:Throttling-dev-crm-ThrottleRate", templates) == []


# -- the check is live ----------------------------------------------------------------------------
def _probe(build) -> dict[str, dict[str, Any]]:
    stack = Stack(App(), "Probe")
    topic = build(stack)
    alarm = cloudwatch.Alarm(stack, "Alarm", alarm_name="probe-alarm", threshold=0, evaluation_periods=1,
                             metric=cloudwatch.Metric(namespace="Probe", metric_name="Errors"))
    for add in (alarm.add_alarm_action, alarm.add_ok_action, alarm.add_insufficient_data_action):
        add(cloudwatch_actions.SnsAction(topic))
    return {"probe": Template.from_stack(stack).to_json()}


def test_a_topic_with_only_enforce_ssl_is_caught_for_every_kind_of_action():
    # GIVEN the mistake: an alarm topic whose only policy is enforce_ssl's TLS Deny
    templates = _probe(lambda stack: sns.Topic(stack, "Topic", enforce_ssl=True))
    # WHEN checked THEN each of the alarm's three actions is reported
    problems = delivery_problems(templates)
    assert len(problems) == 3
    assert all("its policy does not let cloudwatch.amazonaws.com sns:Publish" in p for p in problems)
    assert sorted(p.split(" ")[1].rstrip(":") for p in problems) == sorted(ACTION_KINDS)


def test_a_customer_key_that_does_not_let_cloudwatch_in_and_the_aws_managed_key_are_caught():
    def with_key(stack):
        topic = sns.Topic(stack, "Topic", master_key=kms.Key(stack, "Key"), enforce_ssl=True)
        topic.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal(CLOUDWATCH)], actions=["sns:Publish"], resources=[topic.topic_arn]))
        return topic

    def with_managed_key(stack):
        return sns.Topic(stack, "Topic", master_key=kms.Alias.from_alias_name(stack, "Managed", "alias/aws/sns"))

    problems = delivery_problems(_probe(with_key))
    assert problems and all("does not let cloudwatch.amazonaws.com kms:" in p for p in problems)
    problems = delivery_problems(_probe(with_managed_key))
    assert any("AWS managed key alias/aws/sns" in p for p in problems)
    assert any("has no topic policy" in p for p in problems)


def test_an_alarm_whose_name_the_topic_policy_does_not_admit_is_caught():
    def scoped_to_other_alarms(stack):
        topic = sns.Topic(stack, "Topic", enforce_ssl=True)
        topic.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal(CLOUDWATCH)], actions=["sns:Publish"], resources=[topic.topic_arn],
            conditions={"ArnLike": {"aws:SourceArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:other-*"}}))
        return topic

    problems = delivery_problems(_probe(scoped_to_other_alarms))
    assert problems and all("aws:SourceArn arn:aws:cloudwatch:us-east-1:123456789012:alarm:probe-alarm does not"
                            " match" in p for p in problems)


def test_the_stack_refuses_an_alarm_name_its_topic_would_not_admit(dev_assembly):
    from stacks.control_loop_stack import AlarmSpec

    stacks, _ = dev_assembly
    control_loop = stacks["control_loop"]
    spec = AlarmSpec("Stray", "someone-else-Stray", "an alarm outside the stage's names",
                     cloudwatch.Metric(namespace="Probe", metric_name="Errors"), 0)
    with pytest.raises(ValueError, match=r"alarm names must start with 'Throttling-dev-', got 'someone-else-Stray'"):
        control_loop._add_alarm(spec)
