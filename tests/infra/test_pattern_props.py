"""The patterns take their own props with documented defaults, never the app's config (`stacks/config.py`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PATTERNS_DIR = Path(__file__).resolve().parents[2] / "stacks" / "patterns"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return found | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


@pytest.mark.parametrize("path", sorted(PATTERNS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_a_pattern_imports_nothing_of_the_app_but_other_patterns(path):
    # GIVEN a pattern module WHEN its imports are read THEN none is a stack, the config or a use case
    of_the_app = {m for m in imported_modules(path) if m.startswith("stacks") and not m.startswith("stacks.patterns")}
    assert of_the_app == set()


def test_the_retry_after_of_a_throttled_request_is_one_token_of_the_slowest_bucket():
    from stacks.patterns.throttled_api import ApiLimits, Throttle, UsageTier

    # GIVEN a stage at 100 req/s, a method at 10 req/s and a tier whose method gets 0.2 req/s
    limits = ApiLimits(
        stage_throttle=Throttle(rate_limit_per_sec=100, burst=200),
        method_throttles={"POST /payments": Throttle(rate_limit_per_sec=10, burst=20)},
        tiers=(UsageTier(name="free", throttle=Throttle(rate_limit_per_sec=1, burst=2), quota_limit=100,
                         quota_period="DAY", method_throttles={"GET /payments/{id}": Throttle(0.2, 1)}),),
    )
    # THEN a throttled client is told to wait for that bucket's next token, and every throttled route is known
    assert limits.throttle_retry_after_sec == 5
    assert limits.routes() == {"POST /payments", "GET /payments/{id}"}
    # AND the defaults say what they mean: no WAF, an hour's Retry-After for a used-up quota
    assert (limits.waf_requests_per_5_min_per_ip, limits.quota_retry_after_sec) == (None, 3600)


def test_the_stage_ingress_config_becomes_the_same_limits(dev_config):
    from stacks.ingress_stack import api_limits

    # GIVEN the dev stage's ingress config WHEN translated into the API's limits
    limits = api_limits(dev_config.ingress)
    # THEN every throttle the config names is there: the stage's, each method's and each tier's
    assert limits.stage_throttle.rate_limit_per_sec == dev_config.ingress.throttle.rate_limit_per_sec
    assert limits.routes() == {"POST /payments", "GET /payments/{id}", "POST /legacy-records"}
    assert limits.throttle_retry_after_sec == 1  # the free tier's 1 req/s is the slowest bucket
    assert [t.name for t in limits.tiers] == [t.name for t in dev_config.ingress.tiers]
