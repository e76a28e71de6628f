"""What a stage costs a month before it serves a single call, from its synthesized templates.

    python -m bench.fixed_costs [--out bench/results]   # both stages; part of `make bench`

The per-call costs (`lab/costs.py`, `bench/results/cost.md`) leave out what runs whatever the
traffic. This counts it from what the stage deploys, at the list prices of `lab/prices.json`:
- CloudWatch alarms, one price per metric an alarm evaluates (a metric-math alarm pays for each);
- the dashboards;
- the Contributor Insights rules (per rule; the matched log lines, $0.02 a million, grow with traffic);
- the KMS keys the stacks create (`alias/aws/*` keys are free) and the Secrets Manager secrets;
- each scheduled function (the controller, the lease sweep): one run per schedule tick, billed
  `RUN_SEC` at its memory, plus the request;
- the controller's `GetMetricData` reads: each query a metric, `metric_queries` of its plans per run.
Left out, since they grow with traffic rather than sit still: custom metrics (EMF, a few per caller
service and downstream), logs, X-Ray traces, KMS and Parameter Store requests, DynamoDB's storage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lab.costs import load_prices
from throttling.adapters.cloudwatch_period_reader import metric_queries
from throttling.core.controller.plan import DownstreamPlan

ROOT = Path(__file__).resolve().parents[1]
MINUTES_PER_MONTH = 365.25 * 24 * 60 / 12
# A scheduled run's billed duration: the controller reads CloudWatch, decides and writes SSM in well under it.
RUN_SEC = 1.0
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_MINUTES = {"minute": 1, "hour": 60, "day": 1440}


@dataclass(frozen=True)
class LineItem:
    what: str
    count: float
    unit: str
    monthly_usd: float


def fixed_monthly_costs(
    templates: Mapping[str, Mapping[str, Any]], controller_plans: Sequence[DownstreamPlan], prices: Mapping[str, Any]
) -> list[LineItem]:
    """The stage's fixed monthly line items, from its templates (stack name -> template) and the controller's plans."""
    resources = [(stack, r) for stack, t in templates.items() for r in t.get("Resources", {}).values()]
    of_type = lambda kind: [r for _, r in resources if r["Type"] == kind]  # noqa: E731
    cloudwatch, lambda_prices = prices["cloudwatch"], prices["lambda"]

    alarm_metrics = sum(_metrics_of_alarm(r["Properties"]) for r in of_type("AWS::CloudWatch::Alarm"))
    items = [
        LineItem("CloudWatch alarms (per metric evaluated)", alarm_metrics, "metrics",
                 alarm_metrics * cloudwatch["alarm_per_metric_month"]),
        LineItem("CloudWatch dashboards", len(of_type("AWS::CloudWatch::Dashboard")), "dashboards",
                 len(of_type("AWS::CloudWatch::Dashboard")) * cloudwatch["dashboard_month"]),
        LineItem("Contributor Insights rules", len(of_type("AWS::CloudWatch::InsightRule")), "rules",
                 len(of_type("AWS::CloudWatch::InsightRule")) * cloudwatch["insight_rule_month"]),
        LineItem("KMS customer managed keys", len(of_type("AWS::KMS::Key")), "keys",
                 len(of_type("AWS::KMS::Key")) * prices["kms"]["key_month"]),
        LineItem("Secrets Manager secrets", len(of_type("AWS::SecretsManager::Secret")), "secrets",
                 len(of_type("AWS::SecretsManager::Secret")) * prices["secrets_manager"]["secret_month"]),
    ]
    functions = {logical_id: r for t in templates.values() for logical_id, r in t.get("Resources", {}).items()
                 if r["Type"] == "AWS::Lambda::Function"}
    for rule in of_type("AWS::Events::Rule"):
        every_min = _schedule_minutes(rule["Properties"].get("ScheduleExpression"))
        if every_min is None:
            continue
        for target in rule["Properties"].get("Targets", []):
            function = functions.get(_get_att_id(target.get("Arn")))
            if function is None:
                continue
            runs = MINUTES_PER_MONTH / every_min
            memory_gb = function["Properties"].get("MemorySize", 128) / 1024
            cost = runs * (lambda_prices["per_request"] + RUN_SEC * memory_gb * lambda_prices["x86_per_gb_second"])
            items.append(LineItem(f"scheduled runs of {_get_att_id(target.get('Arn'))} (every {every_min:g} min, "
                                  f"{RUN_SEC:g} s at {memory_gb * 1024:g} MB)", runs, "runs", cost))
    queries_per_run = len(metric_queries(controller_plans, 60)[0])
    reads = queries_per_run * MINUTES_PER_MONTH
    items.append(LineItem(f"the controller's GetMetricData ({queries_per_run} metrics a minute)", reads, "metrics",
                          reads * cloudwatch["get_metric_data_per_metric"]))
    return items


def _metrics_of_alarm(properties: Mapping[str, Any]) -> int:
    """An alarm on one metric is one; a metric-math alarm pays for each metric its expression reads."""
    queries = properties.get("Metrics")
    if not queries:
        return 1
    return max(1, sum(1 for q in queries if "MetricStat" in q))


def _schedule_minutes(expression: Any) -> float | None:
    match = _RATE.fullmatch(expression) if isinstance(expression, str) else None
    if match is None:
        return None
    return int(match.group(1)) * _MINUTES[match.group(2).rstrip("s")]


def _get_att_id(value: Any) -> str | None:
    if isinstance(value, Mapping) and "Fn::GetAtt" in value:
        return value["Fn::GetAtt"][0]
    return None


def stage_costs(stage: str, context: Mapping[str, Any], out: Path) -> list[LineItem]:
    """Synthesize `stage` into `out` and count its fixed costs."""
    from stacks.app_stacks import synthesize
    from stacks.config import load_config

    config = replace(load_config(context["stages"], stage, defaults=context["defaults"]), nag=False)
    stacks, _ = synthesize(config, out, context)
    templates = {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.template.json"))}
    return fixed_monthly_costs(templates, list(stacks["control_loop"].controller_plans.values()), load_prices())


def markdown(by_stage: Mapping[str, list[LineItem]]) -> str:
    prices = load_prices()
    lines = ["# Fixed monthly cost per stage", "",
             f"What a stage costs a month with no traffic, from its synthesized templates at the list prices of"
             f" {prices['region']} read on {prices['read_on']} (`lab/prices.json`); free tiers left out"
             " (`bench/fixed_costs.py` says what is counted and what is not).", ""]
    for stage, items in by_stage.items():
        lines += [f"## {stage}", "", "| what | count a month | USD a month |", "|---|---|---|"]
        lines += [f"| {i.what} | {i.count:,.0f} {i.unit if i.count != 1 else i.unit.rstrip('s')} | ${i.monthly_usd:,.2f} |"
                  for i in items]
        lines += [f"| **total** | | **${sum(i.monthly_usd for i in items):,.2f}** |", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fixed_costs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    by_stage = {}
    for stage in context["stages"]:
        with tempfile.TemporaryDirectory() as out:
            by_stage[stage] = stage_costs(stage, context, Path(out))
    text = markdown(by_stage)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fixed_costs.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
