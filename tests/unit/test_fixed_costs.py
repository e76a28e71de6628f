"""A stage's fixed monthly cost, counted from what its templates deploy at the list prices."""

from __future__ import annotations

import pytest

from bench.fixed_costs import MINUTES_PER_MONTH, RUN_SEC, fixed_monthly_costs
from lab.costs import load_prices
from throttling.core.controller.plan import DownstreamPlan
from throttling.core.controller import Bounds

PRICES = load_prices()


def plan(name: str, *services: str) -> DownstreamPlan:
    return DownstreamPlan(name=name, parameter_name=f"/t/{name}", services=services,
                          bounds=Bounds(min_concurrency=1, max_concurrency=10, min_rate_per_sec=0.1, max_rate_per_sec=10.0),
                          contract_rate_per_sec=10.0)


TEMPLATES = {
    "A.template.json": {"Resources": {
        "OneMetric": {"Type": "AWS::CloudWatch::Alarm", "Properties": {"MetricName": "Errors"}},
        "Ratio": {"Type": "AWS::CloudWatch::Alarm", "Properties": {"Metrics": [
            {"Id": "a", "MetricStat": {}}, {"Id": "b", "MetricStat": {}}, {"Id": "c", "MetricStat": {}},
            {"Id": "rate", "Expression": "100 * a / (b + c)"}]}},
        "Board": {"Type": "AWS::CloudWatch::Dashboard", "Properties": {}},
        "TopTenants": {"Type": "AWS::CloudWatch::InsightRule", "Properties": {}},
        "TopTenantsToo": {"Type": "AWS::CloudWatch::InsightRule", "Properties": {}},
        "Key": {"Type": "AWS::KMS::Key", "Properties": {}},
    }},
    "B.template.json": {"Resources": {
        "Secret": {"Type": "AWS::SecretsManager::Secret", "Properties": {}},
        "Sweep": {"Type": "AWS::Lambda::Function", "Properties": {"MemorySize": 512}},
        "Every5": {"Type": "AWS::Events::Rule", "Properties": {
            "ScheduleExpression": "rate(5 minutes)", "Targets": [{"Arn": {"Fn::GetAtt": ["Sweep", "Arn"]}}]}},
        "OnEvent": {"Type": "AWS::Events::Rule", "Properties": {
            "EventPattern": {"source": ["aws.cloudwatch"]}, "Targets": [{"Arn": {"Fn::GetAtt": ["Sweep", "Arn"]}}]}},
    }},
}


def test_each_fixed_line_item_is_counted_from_the_templates_and_priced():
    items = {i.what.split(" (")[0]: i for i in fixed_monthly_costs(
        TEMPLATES, [plan("crm", "crm-caller", "crm-batch"), plan("mainframe", "consumer")], PRICES)}
    cloudwatch = PRICES["cloudwatch"]
    # THEN an alarm on one metric pays once and a metric-math alarm once per metric it reads
    assert items["CloudWatch alarms"].count == 4
    assert items["CloudWatch alarms"].monthly_usd == pytest.approx(4 * cloudwatch["alarm_per_metric_month"])
    assert (items["CloudWatch dashboards"].count, items["KMS customer managed keys"].count,
            items["Secrets Manager secrets"].count) == (1, 1, 1)
    # AND a Contributor Insights rule pays by the month
    rules = items["Contributor Insights rules"]
    assert (rules.count, rules.monthly_usd) == (2, pytest.approx(2 * cloudwatch["insight_rule_month"]))
    # AND a schedule runs its function once per tick, billed RUN_SEC at its memory; an event rule costs nothing fixed
    sweep = items["scheduled runs of Sweep"]
    assert sweep.count == pytest.approx(MINUTES_PER_MONTH / 5)
    assert sweep.monthly_usd == pytest.approx(sweep.count * (PRICES["lambda"]["per_request"]
                                                             + RUN_SEC * 0.5 * PRICES["lambda"]["x86_per_gb_second"]))
    # AND the controller reads 9 metrics per caller service of each downstream every minute
    reads = items["the controller's GetMetricData"]
    assert reads.count == pytest.approx(3 * 9 * MINUTES_PER_MONTH)
    assert reads.monthly_usd == pytest.approx(reads.count * cloudwatch["get_metric_data_per_metric"])
