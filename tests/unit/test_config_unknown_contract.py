"""A downstream whose limit nobody told us: configured with a ceiling, planned from it, discovered under it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from stacks.config import ConfigError, load_config
from stacks.shared_limits_stack import downstream_tunables_seed
from throttling.core import planning
from throttling.core.adaptive_rate import AdaptiveRatePolicy
from throttling.core.tunables import parse_tunables


@pytest.fixture
def stages(cdk_stages: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(cdk_stages)


def crm_known_only_below(stages: dict[str, Any], ceiling: float = 50, **discovery: Any) -> dict[str, Any]:
    """The dev stage with the CRM's limit unknown: all anyone knows is that it is below `ceiling`."""
    crm = stages["dev"]["downstreams"]["crm"]
    crm.pop("rate_limit_per_sec")
    crm.update(rate_ceiling_per_sec=ceiling, **discovery)
    return stages


def test_a_ceiling_is_planned_from_as_a_contract_would_be_and_the_seed_document_starts_the_loop_low(stages):
    # GIVEN the CRM configured only as "below 50 req/s", burst 10, 200 ms
    crm = load_config(crm_known_only_below(stages)).downstream("crm")
    # THEN the contract is unknown, and everything planned is planned from the ceiling
    assert (crm.contract_known, crm.rate_limit_per_sec, crm.max_rate_per_sec) == (False, None, 50.0)
    assert (crm.planned_rate_per_sec, crm.planned_burst) == planning.limiter_settings(50.0, 10, crm.headroom)
    assert crm.default_max_concurrency == planning.planned_concurrency(50.0, 200) == 15
    # AND the tunables document the stack seeds carries the discovery's seed (default a tenth) and floor (half it)
    document = json.loads(downstream_tunables_seed(crm))
    assert (document["rate_per_sec"], document["seed_fraction"], document["floor_fraction"]) == (49.5, 0.1, 0.05)
    # AND the callers, deployed with the ceiling as the rate they clamp to, take it whole and start a bucket at 4.95 req/s
    parsed = parse_tunables(json.dumps(document), ceiling_rate_per_sec=crm.max_rate_per_sec, ceiling_burst=crm.burst)
    assert parsed.clamped_fields == ()
    assert parsed.tunables.adaptive == AdaptiveRatePolicy(seed_fraction=0.1, floor_fraction=0.05)


def test_a_known_contracts_document_carries_no_discovery(stages):
    # GIVEN the shipped CRM, whose contract is 10 req/s
    crm = load_config(stages).downstream("crm")
    # THEN its bucket starts at the planned rate: the document holds no seed and no floor
    assert crm.contract_known and crm.max_rate_per_sec == 10.0
    assert not {"seed_fraction", "floor_fraction"} & set(json.loads(downstream_tunables_seed(crm)))


def test_the_seed_and_floor_are_the_operators_where_given(stages):
    # GIVEN a seed of a fifth of the ceiling and a floor of a tenth
    crm = load_config(crm_known_only_below(stages, discovery_seed_fraction=0.2, discovery_floor_fraction=0.1)
                      ).downstream("crm")
    # THEN the document carries them as given
    document = json.loads(downstream_tunables_seed(crm))
    assert (document["seed_fraction"], document["floor_fraction"]) == (0.2, 0.1)


def test_the_controller_bounds_follow_the_ceiling(stages):
    config = load_config(crm_known_only_below(stages))
    crm = config.downstream("crm")
    # THEN the controller may move the rate up to the planned rate under the ceiling, never the unknown limit
    bounds = config.control_loop.controller_bounds(crm)
    assert bounds == planning.controller_bounds(50.0, 10, 200, crm.headroom,
                                                max_concurrency_factor=config.control_loop.max_concurrency_factor,
                                                min_rate_fraction=config.control_loop.min_rate_fraction)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # both: which one would the limiter honour?
        ({"rate_limit_per_sec": 10, "rate_ceiling_per_sec": 50},
         "stages.dev.downstreams.crm gives both rate_limit_per_sec 10, rate_ceiling_per_sec 50; give exactly one:"
         " rate_limit_per_sec when the downstream documents its limit, or rate_ceiling_per_sec (a rate we must never"
         " pass) when it does not, for the shared limiter to discover the limit below it"),
        # neither: nothing to plan from
        ({"rate_limit_per_sec": None},
         "stages.dev.downstreams.crm gives neither rate_limit_per_sec nor rate_ceiling_per_sec; give exactly one:"),
        ({"rate_limit_per_sec": None, "rate_ceiling_per_sec": 0},
         "stages.dev.downstreams.crm.rate_ceiling_per_sec must be a number in [0.01, 10000], got 0"),
        ({"rate_limit_per_sec": None, "rate_ceiling_per_sec": 50, "burst": 501},
         "stages.dev.downstreams.crm.burst must be between 1 and 10 s worth of rate_ceiling_per_sec (500), got 501"),
        # a seed or floor out of the tunables' range
        ({"rate_limit_per_sec": None, "rate_ceiling_per_sec": 50, "discovery_seed_fraction": 0},
         "stages.dev.downstreams.crm.discovery_seed_fraction must be a number in [0.01, 1], got 0"),
        ({"rate_limit_per_sec": None, "rate_ceiling_per_sec": 50, "discovery_seed_fraction": 1.5},
         "stages.dev.downstreams.crm.discovery_seed_fraction must be a number in [0.01, 1], got 1.5"),
        ({"rate_limit_per_sec": None, "rate_ceiling_per_sec": 50, "discovery_floor_fraction": "low"},
         "stages.dev.downstreams.crm.discovery_floor_fraction must be a number in [0.01, 1], got 'low'"),
        # a floor above the seed: the first 429 could only raise the rate
        ({"rate_limit_per_sec": None, "rate_ceiling_per_sec": 50, "discovery_floor_fraction": 0.2},
         "stages.dev.downstreams.crm.discovery_floor_fraction 0.2 is above the seed, discovery_seed_fraction 0.1"
         " (the default): an unused bucket starts at the seed and the floor is the lowest a 429 may cut it to;"
         " give a floor at most the seed"),
        # a seed for a known contract would say nothing: its bucket starts at the rate
        ({"discovery_seed_fraction": 0.1},
         "stages.dev.downstreams.crm.discovery_seed_fraction 0.1 applies only where the limit is unknown: the inner"
         " loop starts a known contract's bucket at its rate; remove it, or give rate_ceiling_per_sec instead of"
         " rate_limit_per_sec 10"),
    ],
)
def test_a_wrong_rate_or_discovery_setting_is_refused_with_the_value_and_the_remedy(stages, change, message):
    # GIVEN one wrong combination under the CRM
    crm = stages["dev"]["downstreams"]["crm"]
    for name, value in change.items():
        if value is None:
            crm.pop(name)
        else:
            crm[name] = value
    # WHEN the config is built THEN it is refused with that message
    with pytest.raises(ConfigError) as error:
        load_config(stages)
    assert str(error.value).startswith(message)
