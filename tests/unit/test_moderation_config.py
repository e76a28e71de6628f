"""The moderation thresholds of a stage (`stages.<stage>.moderation`): loaded, defaulted, and refused when they cannot decide."""

from __future__ import annotations

import copy

import pytest

from moderation import ModerationThresholds
from stacks.config import ConfigError, ModerationConfig, load_config


@pytest.fixture
def stages(cdk_stages) -> dict:
    return copy.deepcopy(cdk_stages)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_each_stage_loads_thresholds_the_decision_takes(stages, stage):
    config = load_config(stages, stage).moderation
    assert (config.review_score, config.reject_score) == (0.4, 0.8)
    ModerationThresholds(review_score=config.review_score, reject_score=config.reject_score)


def test_a_stage_without_the_block_gets_the_decisions_defaults(stages):
    del stages["dev"]["moderation"]
    defaults = ModerationThresholds()
    assert load_config(stages, "dev").moderation == ModerationConfig(defaults.review_score, defaults.reject_score)


@pytest.mark.parametrize(("moderation", "message"), [
    ({"review_score": 0.8, "reject_score": 0.4}, "stages.dev.moderation.review_score must be below reject_score, got 0.8 >= 0.4"),
    ({"review_score": 0.5, "reject_score": 0.5}, "must be below reject_score, got 0.5 >= 0.5"),
    ({"reject_score": 1.5}, r"stages.dev.moderation.reject_score must be a number in \[0.01, 1\], got 1.5"),
    ({"review_score": 0}, r"stages.dev.moderation.review_score must be a number in \[0.01, 0.99\], got 0"),
    ({"review_score": "0.4"}, "review_score must be a number"),
    ({"reject_score": True}, "reject_score must be a number"),
    ({"flag_score": 0.5}, r"unknown key stages.dev.moderation.flag_score; stages.dev.moderation takes: reject_score, review_score"),
    ("strict", "stages.dev.moderation must be an object"),
])
def test_thresholds_that_cannot_decide_fail_synth_with_key_value_and_rule(stages, moderation, message):
    stages["dev"]["moderation"] = moderation
    with pytest.raises(ConfigError, match=message):
        load_config(stages, "dev")
