"""The control loop's CloudWatch adapter: one period of every downstream's caller metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from throttling.core import names
from throttling.core.controller import PeriodMetrics
from throttling.core.controller.plan import DownstreamPlan

if TYPE_CHECKING:
    from types_boto3_cloudwatch import CloudWatchClient
    from types_boto3_cloudwatch.type_defs import MetricDataQueryTypeDef

__all__ = ["CloudWatchPeriodReader", "MetricsUnavailable", "metric_queries"]


class MetricsUnavailable(RuntimeError):
    """CloudWatch did not answer the period's query: every downstream holds (and still reconciles)."""


_SUMS = {
    "calls": names.DOWNSTREAM_CALLS,
    "throttled": names.DOWNSTREAM_THROTTLED,
    "server_errors": names.DOWNSTREAM_UNAVAILABLE,
    "limiter_refused": names.RATE_LIMITED,
    "down": names.DOWNSTREAM_DOWN,
}
_LATENCY = names.DOWNSTREAM_LATENCY
_LATENCY_STATS = {"p50": "p50", "p99": "p99", "mean": "Average", "samples": "SampleCount"}


class CloudWatchPeriodReader:
    """One period of every downstream's caller metrics, in one `GetMetricData` request.

    The callers publish Powertools EMF metrics (namespace `Throttling`, dimensions `service` and
    `Downstream`); a downstream called by several services is the sum of their counts. Across
    services the p99 is the largest (conservative) and the median and mean are weighted by each
    service's number of samples (the median so only approximately: CloudWatch cannot merge
    percentiles of separate metrics).
    """

    def __init__(self, client: CloudWatchClient, namespace: str = names.METRICS_NAMESPACE) -> None:
        self._client = client
        self.namespace = namespace

    def read(self, plans: Sequence[DownstreamPlan], start: float, end: float) -> dict[str, PeriodMetrics | None]:
        """Each plan's period `[start, end)`, None where nobody called; `MetricsUnavailable` when CloudWatch fails."""
        try:
            return self._read(plans, start, end)
        except (ClientError, BotoCoreError) as error:
            raise MetricsUnavailable(f"could not read the period's metrics from CloudWatch: {error}") from error

    def _read(self, plans: Sequence[DownstreamPlan], start: float, end: float) -> dict[str, PeriodMetrics | None]:
        period_sec = int(end - start)
        queries, keys = metric_queries(plans, period_sec, self.namespace)
        values: dict[tuple[str, str, str], float] = {}
        for chunk in range(0, len(queries), 500):
            next_token: dict[str, str] = {}
            while True:
                response = self._client.get_metric_data(
                    MetricDataQueries=queries[chunk : chunk + 500], StartTime=_utc(start), EndTime=_utc(end),
                    ScanBy="TimestampAscending", **next_token)
                for result in response.get("MetricDataResults", []):
                    datapoints = [float(v) for v in result.get("Values", []) if v is not None]
                    if datapoints:
                        key = keys[result["Id"]]
                        # One period asked for, so one datapoint; a sum keeps counts right if CloudWatch splits it.
                        values[key] = sum(datapoints) if key[2] in _SUMS or key[2] == "samples" else datapoints[0]
                token = response.get("NextToken")
                if not token:
                    break
                next_token = {"NextToken": token}
        return {plan.name: _combine(plan, values, float(period_sec)) for plan in plans}


def _combine(plan: DownstreamPlan, values: Mapping[tuple[str, str, str], float], period_sec: float) -> PeriodMetrics | None:
    def total(field_name: str) -> float | None:
        found = [values[(plan.name, s, field_name)] for s in plan.services if (plan.name, s, field_name) in values]
        return sum(found) if found else None

    calls = total("calls")
    if calls is None:
        return None
    down = total("down") or 0.0
    weighted: dict[str, float] = {}
    weights: dict[str, float] = {}
    p99: float | None = None
    for service in plan.services:
        samples = values.get((plan.name, service, "samples"), 1.0)
        for field_name in ("p50", "mean"):
            value = values.get((plan.name, service, field_name))
            if value is not None:
                weighted[field_name] = weighted.get(field_name, 0.0) + value * samples
                weights[field_name] = weights.get(field_name, 0.0) + samples
        value = values.get((plan.name, service, "p99"))
        if value is not None:
            p99 = value if p99 is None else max(p99, value)
    return PeriodMetrics(
        calls=calls,
        throttled=total("throttled") or 0.0,
        # The callers count a "down" answer as `DownstreamUnavailable` too; the controller wants them apart.
        server_errors=max(0.0, (total("server_errors") or 0.0) - down),
        limiter_refused=total("limiter_refused") or 0.0,
        down=down,
        latency_p50_ms=weighted["p50"] / weights["p50"] if weights.get("p50") else None,
        latency_p99_ms=p99,
        latency_mean_ms=weighted["mean"] / weights["mean"] if weights.get("mean") else None,
        period_sec=period_sec,
    )


def _utc(epoch_sec: float) -> datetime:
    return datetime.fromtimestamp(epoch_sec, tz=timezone.utc)


def metric_queries(
    plans: Sequence[DownstreamPlan], period_sec: int, namespace: str = names.METRICS_NAMESPACE
) -> tuple[list[MetricDataQueryTypeDef], dict[str, tuple[str, str, str]]]:
    """The `GetMetricData` queries of one read of `plans` (each billed as one metric) and what each answer means."""
    queries: list[MetricDataQueryTypeDef] = []
    keys: dict[str, tuple[str, str, str]] = {}
    for plan in plans:
        for service in plan.services:
            stats = [(field_name, metric, "Sum") for field_name, metric in _SUMS.items()]
            stats += [(field_name, _LATENCY, stat) for field_name, stat in _LATENCY_STATS.items()]
            for field_name, metric, stat in stats:
                query_id = f"q{len(queries)}"
                keys[query_id] = (plan.name, service, field_name)
                queries.append({
                    "Id": query_id,
                    "MetricStat": {
                        "Metric": {
                            "Namespace": namespace,
                            "MetricName": metric,
                            "Dimensions": [{"Name": names.DOWNSTREAM_DIMENSION, "Value": plan.name},
                                           {"Name": names.SERVICE_DIMENSION, "Value": service}],
                        },
                        "Period": period_sec,
                        "Stat": stat,
                    },
                    "ReturnData": True,
                })
    return queries, keys
