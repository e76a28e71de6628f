"""The shared limiter from your own Lambda function: one downstream's bucket, as the stacks wire it.

The CDK side (`throttling_patterns.SharedLimiter.connect`) gives a function its downstream's name and
contract, its tunables parameter, the limiter's table and the grants; `SharedLimiter.from_environment`
reads the same variables, so a handler needs no configuration of its own:

    from throttling.runtime.shared_limiter import SharedLimiter

    limiter = SharedLimiter.from_environment()         # once per execution environment

    def handler(event, context):
        token = limiter.acquire(time_left_sec=context.get_remaining_time_in_millis() / 1000 - 5)
        if not token.admitted:                          # the bucket is empty for longer than we can wait
            raise RuntimeError(f"throttled; retry in {token.retry_after_sec:.1f} s")
        status, headers = call_my_api(event)            # your own HTTP call
        said = parse_rate_limit_headers(headers, now=time.time())  # throttling.core.rate_limit_headers
        limiter.report(token, status=status, retry_after_sec=said.wait_sec,  # a 429 slows every caller at once,
                       published_per_sec=said.published_per_sec)            # a published limit caps them all

Every caller of the downstream, in any function or workflow, draws from one bucket (a conditional
DynamoDB write per token), at the rate in force in the tunables (read through Powertools' SSM
provider with a cache, the last good value kept if a document is bad), never above the contract;
`report` feeds the bucket's inner loop (`throttling.core.adaptive_rate`): the rate limit an answer
publishes, then its throttling signal. The waiting, the stale
tokens and the reports are the token gate's (`throttling.runtime.token_gate`), as for the app's own callers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import boto3

from throttling.adapters.dynamodb_rate_limiter import DynamoDbRateLimiter
from throttling.adapters.ssm_tunables import TunablesReader, downstream_tunables_reader
from throttling.core import names
from throttling.core.rate_limiter import RatePolicy, stale_token_after_sec
from throttling.core.tunables import DownstreamTunables
from throttling.runtime.token_gate import GateKnobs, GateOutcome, TokenGate

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient
    from types_boto3_ssm import SSMClient

__all__ = ["SharedLimiter"]


# What a function waits at most for one token before it hands the wait back (a queue's visibility
# timeout, a workflow's Wait state are cheaper places to spend a long one).
DEFAULT_MAX_WAIT_SEC = 10.0


class SharedLimiter:
    """Tokens of one downstream's bucket, at the rate its tunables set.

    :param downstream: the bucket's name (the downstream's, shared by every caller).
    :param contract: the downstream's own limit; the tunables in force are clamped under it.
    :param tunables: the reader of the downstream's tunables document.
    :param gate: the token gate over the limiter's table.
    """

    def __init__(self, downstream: str, *, contract: RatePolicy, tunables: TunablesReader[DownstreamTunables],
                 gate: TokenGate) -> None:
        self.downstream = downstream
        self.contract = contract
        self.tunables = tunables
        self.gate = gate

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, *, dynamodb: DynamoDBClient | None = None,
                         ssm: SSMClient | None = None, max_wait_sec: float | None = None) -> SharedLimiter:
        """The limiter `SharedLimiter.connect` wired the function to; a missing variable names what to do.

        :param max_wait_sec: the most one `acquire` waits in the function; default `LIMITER_MAX_WAIT_SEC`
            from the environment, else 10 s (never past `time_left_sec` either).
        """
        environ = os.environ if environ is None else environ
        missing = [name for name in (names.ENV_DOWNSTREAM_NAME, names.ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC,
                                     names.ENV_DOWNSTREAM_BURST, names.ENV_TUNABLES_PARAMETER_NAME,
                                     names.ENV_RATE_LIMITER_TABLE_NAME) if not environ.get(name)]
        if missing:
            raise KeyError(f"the shared limiter's environment lacks {', '.join(missing)}: wire the function with"
                           " SharedLimiter.connect(function, downstream) in your stack and deploy again")
        contract = RatePolicy(rate_per_sec=float(environ[names.ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC]),
                              burst=int(environ[names.ENV_DOWNSTREAM_BURST]))
        if max_wait_sec is None:
            max_wait_sec = float(environ.get(names.ENV_LIMITER_MAX_WAIT_SEC, DEFAULT_MAX_WAIT_SEC))
        limiter = DynamoDbRateLimiter(environ[names.ENV_RATE_LIMITER_TABLE_NAME],
                                      client=dynamodb or boto3.client("dynamodb"))
        return cls(environ[names.ENV_DOWNSTREAM_NAME], contract=contract,
                   tunables=downstream_tunables_reader(environ, contract, ssm=ssm),
                   gate=TokenGate(limiter, GateKnobs(max_wait_sec=max_wait_sec)))

    def acquire(self, *, time_left_sec: float, tenant: str | None = None, priority: str | None = None) -> GateOutcome:
        """One token, waiting for it while the wait ends within `time_left_sec` (and `max_wait_sec`).

        With a `tenant`, from that tenant's share of the bucket (and what it may borrow: the shares in the
        downstream's tunables); with a `priority` class (`critical`, `standard`, `batch`), only as deep into
        the bucket as the class may reach. Never raises for a refusal: `admitted` is False and
        `retry_after_sec` says when to come back.
        """
        if priority is not None and priority not in names.PRIORITY_CLASSES:
            raise ValueError(f"priority must be one of {list(names.PRIORITY_CLASSES)} or None, got {priority!r}")
        in_force = self.tunables.get()
        policy = RatePolicy(rate_per_sec=in_force.rate_per_sec, burst=in_force.burst)
        return self.gate.take(self.downstream, policy, time_left_sec=max(0.0, time_left_sec),
                              stale_after_sec=stale_token_after_sec(policy, self.contract), adaptive=in_force.adaptive,
                              tenant=tenant, priority=priority, shares=in_force.shares)

    def report(self, token: GateOutcome, *, status: int, retry_after_sec: float | None = None,
               published_per_sec: float | None = None) -> bool:
        """Tell the bucket how the call `token` paid for was answered; whether it was a throttling signal.

        `published_per_sec`, the rate limit the answer published (`RateLimitInfo.published_per_sec`, in a
        2xx or a 429 alike), is reported first: while believed (`adaptive_rate.PUBLISHED_TTL_SEC`) it caps
        the bucket for every caller, and a 429 that comes with it cuts from it. It costs a write only when
        it is news. A 429 (or a 503 with a short Retry-After) then blocks the bucket until the Retry-After
        ends and cuts its rate for every caller at once; any other answer is not a signal. Never raises: a
        report is advice, and the next answer reports again.
        """
        in_force = self.tunables.get()
        policy = RatePolicy(rate_per_sec=in_force.rate_per_sec, burst=in_force.burst)
        return self.gate.report_answered(self.downstream, policy, in_force.adaptive, token, status=status,
                                         retry_after_sec=retry_after_sec, published_per_sec=published_per_sec)
