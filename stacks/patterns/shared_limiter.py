"""The shared limiter for functions of your own: its table, each downstream's tunables, and the wiring.

One bucket per downstream, whoever calls it: each call takes a token with one conditional write to
the limiter's table (`throttling.adapters.dynamodb_rate_limiter`), at the rate the downstream's
tunables document holds (seeded here from its contract less a headroom, then owned by operators and
the controller). `connect(function, downstream)` gives a function what
`throttling.runtime.shared_limiter.SharedLimiter.from_environment()` reads, and the least grants
it needs; the function also needs the runtime, from this app's asset or from `RuntimeLayer`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from throttling.core import names, planning

from .limit_tables import RateLimiterTable
from .tunable_parameters import TunableParameters

DEFAULT_TUNABLES_CACHE_SEC = 5


@dataclass(frozen=True)
class DownstreamLimit:
    """A downstream's contract, and how much of it the limiter plans to use.

    :param rate_limit_per_sec: what the downstream allows (its documented rate).
    :param burst: its bucket's depth; default 1 (no burst).
    :param headroom: the share of the rate kept unused for the lag between a token and the call's
        arrival (`throttling.core.planning.limiter_settings`); default 0.1.
    :param max_concurrency: the concurrency seeded beside the rate, for your workflows' Map states
        or consumers that read it; default 2.
    """

    rate_limit_per_sec: float
    burst: int = 1
    headroom: float = 0.1
    max_concurrency: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.rate_limit_per_sec, bool) or not isinstance(self.rate_limit_per_sec, (int, float)) \
                or not math.isfinite(self.rate_limit_per_sec) or self.rate_limit_per_sec <= 0:
            raise ValueError(f"rate_limit_per_sec must be a finite number > 0, got {self.rate_limit_per_sec!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst must be a whole number >= 1, got {self.burst!r}")
        if not 0 <= self.headroom < 1:
            raise ValueError(f"headroom must be from 0 to below 1 (a share of the rate), got {self.headroom!r}")
        if isinstance(self.max_concurrency, bool) or not isinstance(self.max_concurrency, int) \
                or self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a whole number >= 1, got {self.max_concurrency!r}")

    def tunables_seed(self) -> str:
        """The downstream's first tunables document: the planned rate and burst under the contract."""
        rate, burst = planning.limiter_settings(self.rate_limit_per_sec, self.burst, self.headroom)
        return json.dumps(planning.tunables_document(rate, burst, self.max_concurrency), sort_keys=True)


def shared_limiter_environment(*, downstream: str, rate_limit_per_sec: float, burst: int, tunables_parameter_name: str,
                               tunables_seed: str, tunables_cache_sec: int, table_name: str) -> dict[str, str]:
    """What a caller of `downstream` reads to take its tokens (the runtime's `SharedLimiter.from_environment`
    and the app's own callers alike)."""
    return {
        names.ENV_DOWNSTREAM_NAME: downstream,
        names.ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC: str(rate_limit_per_sec),
        names.ENV_DOWNSTREAM_BURST: str(burst),
        names.ENV_TUNABLES_PARAMETER_NAME: tunables_parameter_name,
        names.ENV_TUNABLES_DEFAULTS: tunables_seed,
        names.ENV_TUNABLES_CACHE_SEC: str(tunables_cache_sec),
        names.ENV_RATE_LIMITER_TABLE_NAME: table_name,
    }


class SharedLimiter(Construct):
    """A rate limiter table and one tunables document per downstream, under `tunables_prefix`.

    :param downstreams: name (the bucket's, e.g. `orders_api`) -> its `DownstreamLimit`.
    :param tunables_prefix: where the documents live in Parameter Store, e.g. `/my-app/prod`
        (each is `<prefix>/downstreams/<name>`).
    :param removal_policy: of the table; default RETAIN.
    :param tunables_cache_sec: how long a function keeps a document before reading it again; default 5 s.
    :param existing_table: a limiter table of yours (string key `pk`, TTL on `expires_at`).
    :param table_props: overrides of the new table's props; not with `existing_table`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, downstreams: Mapping[str, DownstreamLimit],
                 tunables_prefix: str, removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
                 tunables_cache_sec: int = DEFAULT_TUNABLES_CACHE_SEC, existing_table: dynamodb.ITable | None = None,
                 table_props: Mapping[str, Any] | None = None) -> None:
        super().__init__(scope, construct_id)
        if not downstreams:
            raise ValueError("downstreams is empty: name at least one downstream and its DownstreamLimit")
        if isinstance(tunables_cache_sec, bool) or not isinstance(tunables_cache_sec, int) or tunables_cache_sec < 0:
            raise ValueError(f"tunables_cache_sec must be a whole number of seconds >= 0, got {tunables_cache_sec!r}")
        self.downstreams = dict(downstreams)
        self.tunables_cache_sec = tunables_cache_sec
        self.rate_limiter = RateLimiterTable(self, "RateLimiter", removal_policy=removal_policy,
                                             existing_table=existing_table, table_props=table_props)
        self.table = self.rate_limiter.table
        self.tunables = TunableParameters(self, "Tunables", prefix=tunables_prefix, documents={
            names.downstream_tunables_key(name): limit.tunables_seed() for name, limit in self.downstreams.items()})

    def environment(self, downstream: str) -> dict[str, str]:
        """What a caller of `downstream` needs in its environment."""
        limit = self._limit(downstream)
        return shared_limiter_environment(
            downstream=downstream, rate_limit_per_sec=limit.rate_limit_per_sec, burst=limit.burst,
            tunables_parameter_name=self.tunables.parameter(names.downstream_tunables_key(downstream)).parameter_name,
            tunables_seed=limit.tunables_seed(), tunables_cache_sec=self.tunables_cache_sec,
            table_name=self.table.table_name)

    def grant_acquire(self, grantee: iam.IGrantable, downstream: str) -> None:
        """Take tokens of `downstream` and read its tunables document (no other downstream's)."""
        self._limit(downstream)
        self.tunables.grant_read(grantee, names.downstream_tunables_key(downstream))
        self.rate_limiter.grant_acquire(grantee)

    def connect(self, function: lambda_.Function, downstream: str) -> None:
        """Wire `function` to take `downstream`'s tokens: its environment and its grants."""
        for key, value in self.environment(downstream).items():
            function.add_environment(key, value)
        self.grant_acquire(function, downstream)

    def _limit(self, downstream: str) -> DownstreamLimit:
        if downstream not in self.downstreams:
            raise KeyError(f"no downstream {downstream!r} in this SharedLimiter; known: {sorted(self.downstreams)}")
        return self.downstreams[downstream]
