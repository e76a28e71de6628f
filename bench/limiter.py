"""Benchmark: the one-write GCRA limiter against a two-update token bucket, on the embedded emulator.

    .venv/bin/python -m bench.limiter

Counts DynamoDB calls per admitted and per denied request (a failed conditional write is billed as
a write, so it counts as one), measures admitted/s on the emulator, and models the ceiling of one
logical bucket with N shards at 1,000 writes/s per partition. Scenarios:

- saturated, 1 caller / 4 callers: requests offered at twice the policy rate on a FakeClock (exact
  and repeatable); 4 callers are 4 limiter instances taking turns, like 4 Lambda environments,
  so each one's last-seen state is stale.
- unsaturated, 8 threads: 8 instances in threads on the wall clock with a rate far above what
  the emulator serves, so every attempt is admitted and admitted/s is the limiter's own throughput.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lambdas"))

from localcloud.emulator.cloud import LocalCloud  # noqa: E402
from throttling.adapters.dynamodb_rate_limiter import DynamoDbRateLimiter  # noqa: E402
from throttling.core.clock import Clock, FakeClock, SystemClock  # noqa: E402
from throttling.core.rate_limiter import RatePolicy  # noqa: E402

T0 = 1_700_000_000.0
PARTITION_WRITES_PER_SEC = 1000.0
SATURATED_ATTEMPTS = 400
UNSATURATED_ATTEMPTS_PER_THREAD = 100
THREADS = 8
WRITE_OPERATIONS = {"update_item", "put_item", "delete_item"}
READ_OPERATIONS = {"get_item", "query", "scan", "batch_get_item"}


class CountingClient:
    """Forwards to a DynamoDB client and counts reads and writes, failed conditional writes included."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.writes = 0
        self.reads = 0

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        method = getattr(self._client, operation)

        def counted(**kwargs: Any) -> Any:
            if operation in WRITE_OPERATIONS:
                self.writes += 1
            elif operation in READ_OPERATIONS:
                self.reads += 1
            return method(**kwargs)

        return counted


class TwoUpdateTokenBucket:
    """BASELINE, not the project's design: "refill, then consume", as public DynamoDB token-bucket samples do it.

    Item: `tokens`, `last_refill`. Every request makes two UpdateItems, no read:
    1. refill: `SET last_refill = :now ADD tokens :one` if `last_refill <= :due AND tokens < :burst`
       (a token per elapsed emission interval; the condition fails, still billed, when none is due);
    2. consume: `ADD tokens :minus_one` if `tokens >= :one`.
    Without a read the refill cannot know how many intervals passed, so it adds at most one token
    per request; that only under-admits after idle periods and leaves the cost, what we compare,
    at the samples' two writes per request.
    """

    def __init__(self, table_name: str, *, client: Any, clock: Clock) -> None:
        self.table_name = table_name
        self._client = client
        self._clock = clock

    def create(self, bucket: str, policy: RatePolicy) -> None:
        self._client.put_item(
            TableName=self.table_name,
            Item={"pk": {"S": bucket}, "tokens": {"N": str(policy.burst)}, "last_refill": {"N": repr(self._clock.now())}},
        )

    def try_acquire(self, bucket: str, policy: RatePolicy) -> bool:
        now = self._clock.now()
        key = {"pk": {"S": bucket}}
        if not self._conditional(
            Key=key,
            UpdateExpression="SET last_refill = :now ADD tokens :one",
            ConditionExpression="last_refill <= :due AND tokens < :burst",
            ExpressionAttributeValues={
                ":now": {"N": repr(now)},
                ":due": {"N": repr(now - policy.emission_interval_sec)},
                ":one": {"N": "1"},
                ":burst": {"N": str(policy.burst)},
            },
        ):
            pass  # nothing due: consume from what is there
        return self._conditional(
            Key=key,
            UpdateExpression="ADD tokens :minus_one",
            ConditionExpression="tokens >= :one",
            ExpressionAttributeValues={":minus_one": {"N": "-1"}, ":one": {"N": "1"}},
        )

    def _conditional(self, **kwargs: Any) -> bool:
        try:
            self._client.update_item(TableName=self.table_name, **kwargs)
        except Exception as error:  # noqa: BLE001
            if getattr(error, "response", {}).get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            return False
        return True


@dataclass
class Tally:
    admitted: int = 0
    denied: int = 0
    writes_admitted: int = 0
    writes_denied: int = 0
    reads: int = 0
    wall_sec: float = 0.0

    def add(self, other: Tally) -> None:
        for name in ("admitted", "denied", "writes_admitted", "writes_denied", "reads"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def writes_per_admitted(self) -> float:
        return self.writes_admitted / self.admitted if self.admitted else float("nan")

    @property
    def writes_per_denied(self) -> float:
        return self.writes_denied / self.denied if self.denied else float("nan")


BUCKET = "bench"
POLICY = RatePolicy(rate_per_sec=50, burst=10)
FAST_POLICY = RatePolicy(rate_per_sec=100_000, burst=1_000)
Caller = tuple[Callable[[], bool], CountingClient]


def make_callers(design: str, cloud: LocalCloud, policy: RatePolicy, clock: Clock, count: int) -> list[Caller]:
    """`count` independent callers (own instance, own client) of one bucket in a fresh table."""
    table = new_table(cloud)
    if design == "baseline":
        TwoUpdateTokenBucket(table, client=cloud.client("dynamodb"), clock=clock).create(BUCKET, policy)
    callers: list[Caller] = []
    for _ in range(count):
        client = CountingClient(cloud.client("dynamodb"))
        if design == "gcra":
            limiter = DynamoDbRateLimiter(table, client=client, clock=clock)
            callers.append((lambda limiter=limiter: limiter.try_acquire(BUCKET, policy).allowed, client))
        else:
            bucket = TwoUpdateTokenBucket(table, client=client, clock=clock)
            callers.append((lambda bucket=bucket: bucket.try_acquire(BUCKET, policy), client))
    return callers


def attempt(caller: Callable[[], bool], client: CountingClient, tally: Tally) -> None:
    writes, reads = client.writes, client.reads
    allowed = caller()
    if allowed:
        tally.admitted += 1
        tally.writes_admitted += client.writes - writes
    else:
        tally.denied += 1
        tally.writes_denied += client.writes - writes
    tally.reads += client.reads - reads


def saturated(cloud: LocalCloud, design: str, callers_count: int) -> Tally:
    clock = FakeClock(T0)
    callers = make_callers(design, cloud, POLICY, clock, callers_count)
    tally = Tally()
    started = time.perf_counter()
    for index in range(SATURATED_ATTEMPTS):
        caller, client = callers[index % callers_count]
        attempt(caller, client, tally)
        clock.advance(POLICY.emission_interval_sec / 2)  # offered at twice the rate
    tally.wall_sec = time.perf_counter() - started
    return tally


def unsaturated(cloud: LocalCloud, design: str) -> Tally:
    callers = make_callers(design, cloud, FAST_POLICY, SystemClock(), THREADS)
    start = threading.Barrier(THREADS)

    def run(index: int) -> Tally:
        caller, client = callers[index]
        tally = Tally()
        start.wait()
        for _ in range(UNSATURATED_ATTEMPTS_PER_THREAD):
            attempt(caller, client, tally)
        return tally

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        tallies = list(pool.map(run, range(THREADS)))
    total = Tally(wall_sec=time.perf_counter() - started)
    for tally in tallies:
        total.add(tally)
    return total


_tables = 0


def new_table(cloud: LocalCloud) -> str:
    global _tables
    _tables += 1
    name = f"bench-{_tables}"
    cloud.client("dynamodb").create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )
    return name


def main() -> None:
    labels = {"gcra": "GCRA, 1 conditional write (this project)", "baseline": "BASELINE two-update token bucket"}
    scenarios = [
        ("saturated, 1 caller", lambda cloud, design: saturated(cloud, design, 1)),
        ("saturated, 4 callers", lambda cloud, design: saturated(cloud, design, 4)),
        (f"unsaturated, {THREADS} threads", unsaturated),
    ]
    results: dict[tuple[str, str], Tally] = {}
    with LocalCloud() as cloud:
        for scenario, run in scenarios:
            for design in labels:
                results[(scenario, design)] = run(cloud, design)

    print(f"\nPolicy {POLICY.rate_per_sec:g}/s burst {POLICY.burst} (saturated: offered at 2x, FakeClock); "
          f"unsaturated: {FAST_POLICY.rate_per_sec:g}/s on the wall clock.")
    header = f"{'scenario':<24} {'design':<42} {'admitted':>8} {'denied':>6} {'W/admit':>8} {'W/deny':>7} {'R/req':>6} {'admit/s':>8}"
    print(header)
    print("-" * len(header))
    for scenario, _ in scenarios:
        for design, label in labels.items():
            t = results[(scenario, design)]
            print(f"{scenario:<24} {label:<42} {t.admitted:>8} {t.denied:>6} {t.writes_per_admitted:>8.2f} "
                  f"{t.writes_per_denied:>7.2f} {t.reads / (t.admitted + t.denied):>6.2f} {t.admitted / t.wall_sec:>8.0f}")
        gcra, base = results[(scenario, "gcra")], results[(scenario, "baseline")]
        print(f"{'':<24} {'ratio baseline / GCRA':<42} {'':>8} {'':>6} "
              f"{base.writes_per_admitted / gcra.writes_per_admitted:>7.2f}x "
              f"{ratio(base.writes_per_denied, gcra.writes_per_denied):>7} {'':>6} "
              f"{gcra.admitted / gcra.wall_sec / (base.admitted / base.wall_sec):>7.2f}x")

    print(f"\nModelled ceiling of one logical bucket: N shards x {PARTITION_WRITES_PER_SEC:g} writes/s / writes per admitted "
          "request (admissions only; denied traffic takes its writes from the same budget)")
    header = f"{'regime':<24} {'design':<42} " + " ".join(f"{f'N={n}':>8}" for n in (1, 2, 4, 8))
    print(header)
    print("-" * len(header))
    for scenario in ("saturated, 4 callers", f"unsaturated, {THREADS} threads"):
        ceilings = {}
        for design, label in labels.items():
            per_admit = results[(scenario, design)].writes_per_admitted
            ceilings[design] = [n * PARTITION_WRITES_PER_SEC / per_admit for n in (1, 2, 4, 8)]
            print(f"{scenario:<24} {label:<42} " + " ".join(f"{c:>8.0f}" for c in ceilings[design]))
        print(f"{'':<24} {'ratio GCRA / baseline':<42} "
              + " ".join(f"{g / b:>7.2f}x" for g, b in zip(ceilings["gcra"], ceilings["baseline"])))


def ratio(numerator: float, denominator: float) -> str:
    if denominator != denominator or numerator != numerator:  # nan: nothing was denied
        return "-"
    if denominator == 0:
        return "inf"
    return f"{numerator / denominator:.2f}x"


if __name__ == "__main__":
    main()
