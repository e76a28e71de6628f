"""moto's CloudWatch: percentile statistics, and alarms created from CloudFormation."""

from __future__ import annotations

import math
import re
from typing import Any

from localcloud.emulator.patches.cloudformation import add_resource_types
from localcloud.emulator.patches.registry import Undo, patch, replace, undo_all


@patch("cloudwatch")
def cloudwatch_percentiles() -> Undo:
    """Answer percentile statistics (`p50`, `p99`, `p99.9`) in `GetMetricData`.

    moto limitation: its statistics are Sum, Average, Minimum, Maximum and SampleCount only; for a
    percentile it puts None among a result's values and the response fails to serialize (a 500 in
    server mode). CloudWatch computes percentiles from every value put (EMF and `Values`/`Counts`
    keep them all), which moto stores as single values: the nearest-rank percentile of those is
    what this answers. A period holding only `StatisticValues` has no percentile, and its
    datapoint is left out, as CloudWatch leaves out periods without data.
    """
    from moto.cloudwatch.models import CloudWatchBackend, Statistics

    original_statistic = Statistics.get_statistics_for_type
    original_get_metric_data = CloudWatchBackend.get_metric_data
    percentile = re.compile(r"p([0-9]{1,2}(?:\.[0-9]+)?|100)")

    def get_statistics_for_type(self: Any, stat: str) -> Any:
        match = percentile.fullmatch(stat)
        if match is None:
            return original_statistic(self, stat)
        values = sorted(self.metric_single_values_list)
        if not values:
            return None
        rank = max(1, math.ceil(float(match.group(1)) / 100 * len(values)))
        return values[rank - 1]

    def get_metric_data(self: Any, *args: Any, **kwargs: Any) -> Any:
        results = original_get_metric_data(self, *args, **kwargs)
        for result in results:
            kept = [(t, v) for t, v in zip(result.get("timestamps", []), result.get("values", [])) if v is not None]
            result["timestamps"] = [t for t, _ in kept]
            result["values"] = [v for _, v in kept]
        return results

    return undo_all(
        replace(Statistics, get_statistics_for_type=get_statistics_for_type),
        replace(CloudWatchBackend, get_metric_data=get_metric_data),
    )


class _CloudFormationAlarm:
    """`AWS::CloudWatch::Alarm` for moto's CloudFormation, backed by moto's own `PutMetricAlarm`."""

    def __init__(self, alarm: Any) -> None:
        self.alarm = alarm
        self.physical_resource_id = alarm.name  # what Ref answers, as in AWS

    def get_cfn_attribute(self, attribute: str) -> Any:
        if attribute == "Arn":
            return self.alarm.alarm_arn
        from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

        raise UnformattedGetAttTemplateException()

    def is_created(self) -> bool:
        return True

    @staticmethod
    def cloudformation_name_type() -> str:
        return "AlarmName"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::Alarm"

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str) -> _CloudFormationAlarm:
        # PutMetricAlarm on the same name replaces the alarm, as an update does.
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str) -> None:
        from moto.cloudwatch.models import cloudwatch_backends

        name = cloudformation_json.get("Properties", {}).get("AlarmName") or resource_name
        cloudwatch_backends[account_id][region_name].delete_alarms([name])

    @classmethod
    def has_cfn_attr(cls, attribute: str) -> bool:
        return attribute == "Arn"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str, **kwargs: Any) -> _CloudFormationAlarm:
        from moto.cloudwatch.models import Dimension, Metric, MetricDataQuery, MetricStat, cloudwatch_backends

        properties = cloudformation_json.get("Properties", {})
        queries = None
        if properties.get("Metrics"):
            queries = []
            for query in properties["Metrics"]:
                stat = query.get("MetricStat")
                metric_stat = None
                if stat:
                    metric = stat["Metric"]
                    metric_stat = MetricStat(
                        metric=Metric(metric_name=metric["MetricName"], namespace=metric.get("Namespace"),
                                      dimensions=[Dimension(d["Name"], d["Value"]) for d in metric.get("Dimensions", [])]),
                        period=stat.get("Period"), stat=stat.get("Stat"), unit=stat.get("Unit"))
                queries.append(MetricDataQuery(query_id=query["Id"], label=query.get("Label"), period=query.get("Period"),
                                               return_data=query.get("ReturnData"), expression=query.get("Expression"),
                                               metric_stat=metric_stat))
        alarm = cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=properties.get("AlarmName") or resource_name,
            namespace=properties.get("Namespace"),
            metric_name=properties.get("MetricName"),
            comparison_operator=properties["ComparisonOperator"],
            evaluation_periods=int(properties["EvaluationPeriods"]),
            period=properties.get("Period"),
            threshold=float(properties["Threshold"]) if "Threshold" in properties else None,
            statistic=properties.get("Statistic"),
            extended_statistic=properties.get("ExtendedStatistic"),
            description=properties.get("AlarmDescription"),
            dimensions=properties.get("Dimensions", []),
            alarm_actions=properties.get("AlarmActions", []),
            ok_actions=properties.get("OKActions", []),
            insufficient_data_actions=properties.get("InsufficientDataActions", []),
            metric_data_queries=queries,
            datapoints_to_alarm=properties.get("DatapointsToAlarm"),
            unit=properties.get("Unit"),
            actions_enabled=properties.get("ActionsEnabled", True),
            treat_missing_data=properties.get("TreatMissingData"),
            tags=properties.get("Tags"),
        )
        return cls(alarm)


@patch("cloudwatch")
def cloudwatch_alarms_from_cloudformation() -> Undo:
    """Create `AWS::CloudWatch::Alarm` resources of a CloudFormation stack (moto's `PutMetricAlarm`).

    moto limitation: its CloudFormation skips alarms (not supported), so the alarms of a deployed
    stack do not exist, and anything that takes an alarm's ARN (`Fn::GetAtt [Alarm, Arn]`, e.g. a
    dashboard's alarm status widget or a composite alarm) fails the whole stack. moto still
    evaluates no alarm and runs no action: the alarms exist to be described.
    """
    return add_resource_types({_CloudFormationAlarm.cloudformation_type(): _CloudFormationAlarm})


class _CloudFormationInsightRule:
    """`AWS::CloudWatch::InsightRule` for moto's CloudFormation, backed by moto's own `PutInsightRule`."""

    def __init__(self, rule: Any) -> None:
        self.rule = rule
        self.physical_resource_id = rule.name  # what Ref answers, as in AWS

    def get_cfn_attribute(self, attribute: str) -> Any:
        if attribute == "Arn":
            return self.rule.rule_arn
        if attribute == "RuleName":
            return self.rule.name
        from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

        raise UnformattedGetAttTemplateException()

    def is_created(self) -> bool:
        return True

    @staticmethod
    def cloudformation_name_type() -> str:
        return "RuleName"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::InsightRule"

    @classmethod
    def has_cfn_attr(cls, attribute: str) -> bool:
        return attribute in ("Arn", "RuleName")

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str) -> _CloudFormationInsightRule:
        # PutInsightRule on the same name replaces the rule, as an update does.
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str) -> None:
        from moto.cloudwatch.models import cloudwatch_backends

        name = cloudformation_json.get("Properties", {}).get("RuleName") or resource_name
        cloudwatch_backends[account_id][region_name].delete_insight_rules([name])

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str, **kwargs: Any) -> _CloudFormationInsightRule:
        from moto.cloudwatch.models import cloudwatch_backends

        properties = cloudformation_json.get("Properties", {})
        rule = cloudwatch_backends[account_id][region_name].put_insight_rule(
            name=properties.get("RuleName") or resource_name, state=properties["RuleState"],
            definition=properties["RuleBody"], tags=properties.get("Tags"))
        return cls(rule)


@patch("cloudwatch")
def cloudwatch_insight_rules_from_cloudformation() -> Undo:
    """Create `AWS::CloudWatch::InsightRule` resources of a CloudFormation stack (moto's `PutInsightRule`).

    moto limitation: its CloudFormation skips Contributor Insights rules (not supported), so a deployed
    stage's per-tenant rules do not exist and cannot be described. moto still evaluates no rule (no log
    line is counted; `localcloud/emulator/contributor_insights.py` applies one to log lines): the
    rules exist to be described.
    """
    return add_resource_types({_CloudFormationInsightRule.cloudformation_type(): _CloudFormationInsightRule})
