"""The lab's unknown-limit runs discover the rate with the inner loop a stage's callers would run: the one its
tunables document gives, parsed as the callers parse it."""

from __future__ import annotations

import dataclasses

import pytest

import lab.run
from lab.run import run
from lab.scenarios import UNKNOWN_LIMIT
from lab.strategies import strategy
from throttling.core.tunables import DEFAULT_DISCOVERY_SEED_FRACTION

TWO_MINUTES = 120.0


def test_the_unknown_limit_starts_at_the_tunables_seed_and_never_falls_below_their_floor():
    # GIVEN two minutes of the unknown limit (10 req/s in truth, 50 configured as the ceiling), 30 req/s offered
    scenario = dataclasses.replace(UNKNOWN_LIMIT, duration_sec=TWO_MINUTES)
    # WHEN the inner loop runs through it
    result = run(strategy("inner_loop"), scenario, seed=1)
    ceiling, rates = result.limiter_policy.rate_per_sec, result.ledger.rate_limit
    # THEN the bucket started at the seed a stage's document carries, a tenth of the ceiling
    assert rates[0] == pytest.approx(DEFAULT_DISCOVERY_SEED_FRACTION * ceiling)
    # AND no cut took it below the floor, half the seed
    assert min(rates) >= DEFAULT_DISCOVERY_SEED_FRACTION / 2 * ceiling - 1e-9
    # AND it found the real limit: its last minute's rate is within the band around 10 req/s
    assert 0.95 * 10 <= sum(rates[60:]) / len(rates[60:]) <= 1.3 * 10


def test_the_lab_takes_the_seed_from_the_tunables_code_path(monkeypatch):
    # GIVEN the document's discovery fields changed where the stacks read them too (a seed of a fifth)
    fields = lab.run.discovery_fields
    monkeypatch.setattr(lab.run, "discovery_fields", lambda: fields(0.2))
    # WHEN the lab runs the unknown limit THEN its bucket starts at that seed, not at a constant of its own
    result = run(strategy("inner_loop"), dataclasses.replace(UNKNOWN_LIMIT, duration_sec=10.0), seed=1)
    assert result.ledger.rate_limit[0] == pytest.approx(0.2 * result.limiter_policy.rate_per_sec)
