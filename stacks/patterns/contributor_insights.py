"""Top-N counts over JSON logs (CloudWatch Contributor Insights), without a metric per contributor.

A metric per tenant would grow without bound with the tenants (and a custom metric is billed per
name and dimensions); a Contributor Insights rule keeps one rule, reads the log lines the functions
already write, and answers the top contributors of each period. `TopContributorsRule` builds one
rule over some log groups in the documented `CloudWatchLogRule` schema (Keys, Filters,
`AggregateOn: Count`), and `ContributorInsightsWidget` draws its top contributors on a dashboard:
the CDK has no widget for a rule (aws-cdk#13005, its pull requests closed unmerged), so this one
writes the dashboard's documented `insightRule` metric widget itself.

Each matched log event is billed (and each rule by the month): the rule names its log groups
exactly, never a prefix, so it reads no other function's logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Aws, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_logs as logs
from constructs import Construct

RULE_SCHEMA = {"Name": "CloudWatchLogRule", "Version": 1}
# Contributor Insights' limits: at most 4 keys, a rule name of 1 to 128 printable ASCII characters.
MAX_KEYS = 4
MAX_RULE_NAME_CHARS = 128


def rule_body(log_group_names: Sequence[str], *, keys: Sequence[str], equal_to_any: Mapping[str, Sequence[str]],
              present: Sequence[str] = ()) -> dict[str, Any]:
    """A `CloudWatchLogRule` counting the JSON log events of `log_group_names` whose field `f` is one of
    `equal_to_any[f]` and where every field of `present` is, one count per distinct value of `keys`.

    Fields are JSON paths (`$.tenant`).
    """
    if not 1 <= len(keys) <= MAX_KEYS:
        raise ValueError(f"keys must name 1 to {MAX_KEYS} fields (Contributor Insights' limit), got {list(keys)!r}")
    if not log_group_names:
        raise ValueError("log_group_names must name at least one log group, got none: pass the functions' log groups")
    filters: list[dict[str, Any]] = [{"Match": field, "In": list(values)} for field, values in equal_to_any.items()]
    filters += [{"Match": field, "IsPresent": True} for field in present]
    return {
        "Schema": dict(RULE_SCHEMA),
        "LogGroupNames": list(log_group_names),
        "LogFormat": "JSON",
        "Contribution": {"Keys": list(keys), "Filters": filters},
        "AggregateOn": "Count",
    }


class TopContributorsRule(Construct):
    """One Contributor Insights rule over `log_groups` (see `rule_body` for `keys`, `equal_to_any`, `present`).

    :param rule_name: the rule's name (what dashboards and `GetInsightRuleReport` ask for), 1 to 128 characters.
    :param enabled: whether the rule runs (and bills); default true.
    """

    def __init__(self, scope: Construct, construct_id: str, *, rule_name: str, log_groups: Sequence[logs.ILogGroup],
                 keys: Sequence[str], equal_to_any: Mapping[str, Sequence[str]], present: Sequence[str] = (),
                 enabled: bool = True) -> None:
        super().__init__(scope, construct_id)
        if not 1 <= len(rule_name) <= MAX_RULE_NAME_CHARS or not rule_name.isascii() or not rule_name.isprintable():
            raise ValueError(f"rule_name must be 1 to {MAX_RULE_NAME_CHARS} printable ASCII characters, got {rule_name!r}")
        self.rule_name = rule_name
        self.body = rule_body([group.log_group_name for group in log_groups], keys=keys, equal_to_any=equal_to_any,
                              present=present)
        self.rule = cloudwatch.CfnInsightRule(
            self, "Rule", rule_name=rule_name, rule_state="ENABLED" if enabled else "DISABLED",
            rule_body=Stack.of(self).to_json_string(self.body))

    def widget(self, title: str, *, top: int = 10, width: int = 6, height: int = 6) -> ContributorInsightsWidget:
        """A dashboard graph of the rule's `top` contributors."""
        return ContributorInsightsWidget(self.rule_name, title=title, top=top, width=width, height=height)


class ContributorInsightsWidget(cloudwatch.ConcreteWidget):
    """A dashboard graph of a Contributor Insights rule's top contributors (the console's own widget).

    Written by hand because the CDK has none; the body is the dashboard's metric widget with an
    `insightRule` (`ruleName`, `maxContributorCount`, `orderBy`), in the stack's region.
    """

    def __init__(self, rule_name: str, *, title: str, top: int = 10, width: int = 6, height: int = 6) -> None:
        if not 1 <= top <= 100:
            raise ValueError(f"top must be from 1 to 100 contributors (what the widget draws), got {top}")
        super().__init__(width, height)
        self.rule_name = rule_name
        self.title = title
        self.top = top
        self._at = (0, 0)

    def position(self, x: int, y: int) -> None:
        # The base class keeps the position in fields the Python binding cannot read back.
        self._at = (x, y)

    def to_json(self) -> list[Any]:
        return [{
            "type": "metric", "width": self.width, "height": self.height, "x": self._at[0], "y": self._at[1],
            "properties": {
                "title": self.title, "view": "timeSeries", "stacked": False, "region": Aws.REGION,
                "insightRule": {"ruleName": self.rule_name, "maxContributorCount": self.top, "orderBy": "Sum"},
                "legend": {"position": "bottom"},
            },
        }]
