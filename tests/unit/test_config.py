"""Every validation rule of the typed config, and what the error message tells the user."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from stacks.config import ConfigError, DownstreamConfig, load_config, merge_defaults


@pytest.fixture
def stages(cdk_stages: dict[str, Any]) -> dict[str, Any]:
    """Every stage with the shared defaults merged in, so a test changes one stage's value in one place."""
    return copy.deepcopy(cdk_stages)


def dev(stages: dict[str, Any]) -> dict[str, Any]:
    return stages["dev"]


def test_dev_is_the_default_stage_and_loads(stages):
    # WHEN no stage is given
    config = load_config(stages)
    # THEN dev is built, with every downstream cdk.json declares typed, in its order
    assert config.stage == "dev"
    assert config.ssm_prefix == "/throttling/dev"
    assert [d.name for d in config.downstreams] == list(stages["dev"]["downstreams"])
    assert all(isinstance(d, DownstreamConfig) for d in config.downstreams)
    assert config.nag is False


def test_prod_loads(stages):
    assert load_config(stages, "prod").removal_policy == "retain"


def test_little_law_sets_default_concurrency(stages):
    # GIVEN the CRM's 10 req/s limit at 200 ms, planned at 9.9 req/s with half its burst (jitter's room)
    crm = load_config(stages).downstream("crm")
    assert (crm.planned_rate_per_sec, crm.planned_burst) == (9.9, 5)
    # THEN 3 calls in flight spend every token at 300 ms a call (2 would leave a third unspent; the seed's 5
    # would offer 25 req/s for the limiter to hold back)
    assert crm.default_max_concurrency == 3
    # AND a downstream slower than one call per second still gets one call in flight
    assert load_config(stages).downstream("legacy_mainframe").default_max_concurrency == 1
    # AND one with a concurrency contract never more than it allows (the AI model: 6 needed, 3 allowed)
    assert load_config(stages).downstream("ai_model").default_max_concurrency == 3


def test_a_concurrency_contract_is_read_where_a_downstream_has_one(stages):
    # GIVEN the shipped stages WHEN they are loaded
    config = load_config(stages)
    # THEN the AI model allows 3 of our calls in flight at once, and a downstream without the key sets no bound
    assert config.downstream("ai_model").max_in_flight == 3
    assert config.downstream("crm").max_in_flight is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["dev"].update(region="mars-1"), "stages.dev.region must be an AWS region"),
        (lambda s: s["dev"].pop("region"), "stages.dev.region is required"),
        (lambda s: s["dev"].update(account="12345"), "stages.dev.account must be a 12-digit"),
        (lambda s: s["dev"].update(log_retention_days=10), "stages.dev.log_retention_days must be one of"),
        (lambda s: s["dev"].update(removal_policy="keep"), "stages.dev.removal_policy must be one of ['destroy', 'retain'], got 'keep'"),
        (lambda s: s["dev"].update(reserve_concurrency="no"), "stages.dev.reserve_concurrency must be true or false, got 'no'"),
        (lambda s: s["dev"].update(parameter_store_high_throughput=1),
         "stages.dev.parameter_store_high_throughput must be true or false, got 1"),
        (lambda s: s["dev"].update(powertools_layer_version=27), "stages.dev.powertools_layer_version is no longer read: a layer number pins some Powertools release the tests never ran"),
        (lambda s: s["dev"].update(tunables_cache_sec=301), "stages.dev.tunables_cache_sec must be an integer in [0, 300], got 301"),
        (lambda s: s["dev"].update(downstreams={}), "stages.dev.downstreams must be a non-empty object"),
        (lambda s: s["dev"]["downstreams"].update({"Bad-Name": s["dev"]["downstreams"]["crm"]}), "downstream names must be snake_case"),
        (lambda s: s["dev"]["downstreams"]["crm"].update(rate_limit_per_sec=0), "stages.dev.downstreams.crm.rate_limit_per_sec must be a number in [0.01, 10000], got 0"),
        (lambda s: s["dev"]["downstreams"]["crm"].update(rate_limit_per_sec="10"), "rate_limit_per_sec must be a number"),
        (lambda s: s["dev"]["downstreams"]["crm"].update(rate_limit_per_sec=True), "rate_limit_per_sec must be a number"),
        (lambda s: s["dev"]["downstreams"]["crm"].update(burst=0), "stages.dev.downstreams.crm.burst must be an integer in [1, 5000], got 0"),
        (lambda s: s["dev"]["downstreams"]["crm"].update(burst=101), "burst must be between 1 and 10 s worth of rate_limit_per_sec (100), got 101"),
        (lambda s: s["dev"]["downstreams"]["crm"].update(expected_latency_ms=0), "expected_latency_ms must be an integer in [1, 60000]"),
        (lambda s: s["dev"]["downstreams"]["crm"].update(timeout_sec=0), "timeout_sec must be a number in [0.1, 900]"),
        (lambda s: s["dev"]["downstreams"]["crm"].update(headroom=0.6), "crm.headroom must be a number in [0, 0.5], got 0.6"),
        (lambda s: s["dev"]["downstreams"]["crm"].update(max_batch_size=251),
         "crm.max_batch_size must be an integer in [1, 250], got 251"),
        (lambda s: s["dev"]["downstreams"]["ai_model"].update(max_in_flight=0),
         "stages.dev.downstreams.ai_model.max_in_flight must be an integer in [1, 1000], got 0"),
        (lambda s: s["dev"]["downstreams"]["ai_model"].update(max_in_flight=2.5), "ai_model.max_in_flight must be an integer"),
        (lambda s: s["dev"]["downstreams"]["ai_model"].update(max_in_flight=True), "ai_model.max_in_flight must be an integer"),
        (lambda s: s["dev"]["downstreams"]["legacy_mainframe"].pop("headroom"),
         "legacy_mainframe.headroom 0.01 (the default) leaves a jitter margin of 0.0101 s at 0.99 req/s, burst 1 under"
         " legacy_mainframe's 1 req/s, burst 1; calls must be allowed to lag our limiter's decisions by 0.1 s unevenly"
         " without a 429: set stages.dev.downstreams.legacy_mainframe.headroom to at least 0.1"),
        (lambda s: s["dev"]["downstreams"]["legacy_mainframe"].update(rate_limit_per_sec=30),
         "no headroom up to 0.5 does (it needs 0.75): ask the downstream for a burst of 2 or more"),
        (lambda s: s["dev"]["downstreams"]["crm"].update(base_url="ftp://crm"), "stages.dev.downstreams.crm.base_url must be an http(s) URL"),
        (lambda s: s["dev"]["downstreams"]["crm"].pop("base_url"), "stages.dev.downstreams.crm.base_url is required"),
        # Every name and id is matched whole: none takes a trailing newline, nor a digit outside 0-9
        (lambda s: s["dev"].update(region="eu-west-1\n"), "stages.dev.region must be an AWS region"),
        (lambda s: s["dev"].update(account="123456789012\n"), "stages.dev.account must be a 12-digit"),
        (lambda s: s["dev"].update(account="\u0661" * 12), "stages.dev.account must be a 12-digit"),
        (lambda s: s["dev"]["downstreams"].update({"crm\n": s["dev"]["downstreams"]["crm"]}), "downstream names must be snake_case"),
        (lambda s: s["dev"]["downstreams"]["crm"].update(base_url="https://crm.example.com\n"), "base_url must be an http(s) URL"),
        (lambda s: s["dev"]["control_loop"].update(alarm_emails=["ops@example.com\n"]), "alarm_emails must be a list of e-mail addresses"),
        (lambda s: s["dev"]["ingress"]["tiers"]["free"].update(api_keys=["example-free-client\n"]), "api_keys must be a list of client names"),
        (lambda s: s["dev"]["ingress"]["method_throttles"].update({"POST /payments\n": {"rate_limit_per_sec": 1, "burst": 1}}),
         "routes are written 'VERB /path'"),
    ],
)
def test_invalid_values_fail_with_key_value_and_range(stages, mutate, message):
    # GIVEN one bad value
    mutate(stages)
    # WHEN the config is built THEN the error names the key, the value and what is allowed
    with pytest.raises(ConfigError) as error:
        load_config(stages)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("qa", "stage 'qa' is not in cdk.json's stages; configured: dev, prod; pass one of them with -c stage=<name>,"
               " or add stages.qa"),
        ("prd", "stage 'prd' is not in cdk.json's stages (did you mean 'prod'?); configured: dev, prod"),
        # `-c stage=` with nothing after it: refused, never read as "use the default"
        ("", "stage is empty (-c stage=): pass -c stage=<name>, one of: dev, prod"),
        ("  ", "stage is empty (-c stage=  ): pass -c stage=<name>, one of: dev, prod"),
    ],
)
def test_a_stage_cdk_json_does_not_hold_is_refused_with_the_ones_it_does(stages, stage, message):
    with pytest.raises(ConfigError) as error:
        load_config(stages, stage)
    assert str(error.value).startswith(message)


def test_missing_stage_entry(stages):
    del stages["prod"]
    with pytest.raises(ConfigError, match="stage 'prod' is not in cdk.json's stages"):
        load_config(stages, "prod")


# -- any stage, built from the shared defaults -----------------------------------------------------------


def test_any_stage_cdk_json_holds_is_built_from_the_defaults_and_its_own_settings(cdk_context):
    # GIVEN a third stage that states only what differs from the shared defaults
    context = copy.deepcopy(cdk_context)
    context["stages"]["qa"] = {"log_retention_days": 30, "removal_policy": "destroy", "reserve_concurrency": False,
                               "downstreams": {"crm": {"rate_limit_per_sec": 20, "burst": 20}}}
    # WHEN it is loaded
    config = load_config(context["stages"], "qa", defaults=context["defaults"])
    # THEN it is a stage like any other, named by its key
    assert (config.stage, config.stack_prefix, config.ssm_prefix) == ("qa", "Throttling-qa", "/throttling/qa")
    assert (config.log_retention_days, config.removal_policy, config.reserve_concurrency) == (30, "destroy", False)
    # AND what it overrides of a shared downstream replaces only those fields
    crm = config.downstream("crm")
    defaults = context["defaults"]["downstreams"]["crm"]
    assert (crm.rate_limit_per_sec, crm.burst) == (20, 20)
    assert (crm.base_url, crm.expected_latency_ms, crm.timeout_sec) == (
        defaults["base_url"], defaults["expected_latency_ms"], defaults["timeout_sec"])
    # AND the rest comes from the defaults, as it does for dev
    dev_config = load_config(context["stages"], "dev", defaults=context["defaults"])
    assert [d.name for d in config.downstreams] == [d.name for d in dev_config.downstreams]
    assert (config.region, config.control_loop, config.moderation) == (
        dev_config.region, dev_config.control_loop, dev_config.moderation)


def test_merging_the_defaults_changes_neither_side_and_replaces_lists_whole():
    # GIVEN defaults and a stage's overrides
    defaults = {"control_loop": {"mode": "aimd", "alarm_emails": ["a@example.com", "b@example.com"]}, "region": "us-east-1"}
    overrides = {"control_loop": {"alarm_emails": ["ops@example.com"]}, "account": "123456789012"}
    before = copy.deepcopy((defaults, overrides))
    # WHEN merged
    merged = merge_defaults(defaults, overrides)
    # THEN objects merge key by key, a list replaces the default list, a new key is added, and the inputs are untouched
    assert merged == {"control_loop": {"mode": "aimd", "alarm_emails": ["ops@example.com"]}, "region": "us-east-1",
                      "account": "123456789012"}
    assert (defaults, overrides) == before
    merged["control_loop"]["mode"] = "gradient"
    assert defaults["control_loop"]["mode"] == "aimd"


def test_each_stage_in_cdk_json_states_only_what_differs_from_the_defaults(cdk_context):
    # GIVEN cdk.json's stages THEN no setting repeats the default it would get anyway: a stage reads as its
    # differences, and a shared value is changed in one place
    def repeats(own: Any, shared: Any, path: str) -> list[str]:
        if isinstance(own, dict) and isinstance(shared, dict):
            return [p for name, value in own.items() if name in shared
                    for p in repeats(value, shared[name], f"{path}.{name}")]
        return [path] if own == shared else []

    for name, own in cdk_context["stages"].items():
        assert repeats(own, cdk_context["defaults"], f"stages.{name}") == []


@pytest.mark.parametrize("name", ["Qa", "qa-eu", "1qa", "q" * 21])
def test_a_stage_name_that_cannot_name_stacks_is_refused(cdk_context, name):
    # GIVEN a stage whose name cannot prefix its stacks unambiguously (a hyphen would let "eu" match "eu-prod")
    context = copy.deepcopy(cdk_context)
    context["stages"][name] = {"log_retention_days": 7, "removal_policy": "destroy"}
    # THEN it is refused, naming it and the rule
    with pytest.raises(ConfigError) as error:
        load_config(context["stages"], name, defaults=context["defaults"])
    assert str(error.value) == (
        f"stage names must be lower-case letters and digits, starting with a letter, at most 20 (they name stacks,"
        f" SSM paths and the API's stage), got {name!r}; rename stages.{name}")


@pytest.mark.parametrize(
    ("stages", "defaults", "message"),
    [
        (None, None, "cdk.json context 'stages' must be an object of stage name -> settings, got None"),
        ({"dev": "prod-like"}, None, "stages.dev must be an object of settings, got 'prod-like'"),
        ({"dev": {}}, ["region"], "cdk.json context 'defaults' must be an object of settings every stage shares"),
    ],
)
def test_a_malformed_stages_or_defaults_object_is_refused(stages, defaults, message):
    with pytest.raises(ConfigError) as error:
        load_config(stages, "dev", defaults=defaults)
    assert str(error.value).startswith(message)


# -- typos: a key no config field names is refused with the closest one ----------------------------------


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["dev"].update(tunables_cache_secs=5),
         "unknown key stages.dev.tunables_cache_secs (did you mean 'tunables_cache_sec'?); stages.dev takes: account,"
         " control_loop, downstreams, ingress, log_retention_days, moderation, nag, parameter_store_high_throughput,"
         " region, removal_policy, reserve_concurrency, tunables_cache_sec"),
        (lambda s: s["dev"].update(contol_loop={"cooldown_sec": 60}),
         "unknown key stages.dev.contol_loop (did you mean 'control_loop'?); stages.dev takes: account,"),
        (lambda s: s["dev"]["downstreams"]["crm"].update(head_room=0.1),
         "unknown key stages.dev.downstreams.crm.head_room (did you mean 'headroom'?); stages.dev.downstreams.crm"
         " takes: auth, base_url, burst, discovery_floor_fraction, discovery_seed_fraction, expected_latency_ms, headroom,"
         " max_batch_size, max_in_flight, rate_ceiling_per_sec, rate_limit_per_sec, timeout_sec"),
        (lambda s: s["dev"]["downstreams"]["crm"].update(timeout_secs=3, owner="crm-team"),
         "unknown keys stages.dev.downstreams.crm.owner, stages.dev.downstreams.crm.timeout_secs (did you mean"
         " 'timeout_sec'?); stages.dev.downstreams.crm takes: auth, base_url,"),
        (lambda s: s["dev"]["control_loop"].update(cooldown=60),
         "unknown key stages.dev.control_loop.cooldown (did you mean 'cooldown_sec'?)"),
        (lambda s: s["dev"]["moderation"].update(reject=0.9),
         "unknown key stages.dev.moderation.reject (did you mean 'reject_score'?)"),
        (lambda s: s["dev"]["ingress"]["tiers"]["free"].update(api_key=["x"]),
         "unknown key stages.dev.ingress.tiers.free.api_key (did you mean 'api_keys'?); stages.dev.ingress.tiers.free"
         " takes: api_keys, method_throttles, quota, throttle"),
        (lambda s: s["dev"]["ingress"]["tiers"]["free"]["quota"].update(periods="DAY"),
         "unknown key stages.dev.ingress.tiers.free.quota.periods (did you mean 'period'?)"),
        (lambda s: s["dev"]["ingress"]["waf"].update(enable=True),
         "unknown key stages.dev.ingress.waf.enable (did you mean 'enabled'?)"),
        (lambda s: s["dev"]["ingress"]["throttle"].update(rate_limit=5),
         "unknown key stages.dev.ingress.throttle.rate_limit (did you mean 'rate_limit_per_sec'?)"),
    ],
)
def test_a_misspelt_key_at_any_level_is_refused_with_a_did_you_mean(stages, mutate, message):
    # GIVEN one misspelt or unknown key, which would otherwise leave its setting at the default
    mutate(stages)
    # WHEN the config is built THEN it is refused, naming the key, the closest known one and every known one
    with pytest.raises(ConfigError) as error:
        load_config(stages)
    assert str(error.value).startswith(message)


def test_a_field_added_to_a_config_class_is_a_key_the_loader_accepts(stages, monkeypatch):
    # GIVEN a field someone adds to DownstreamConfig (with its default), and no change to the loader
    import dataclasses

    import stacks.config

    extended = dataclasses.make_dataclass(
        "DownstreamConfig", [("max_in_flight", int, dataclasses.field(default=0))], bases=(DownstreamConfig,),
        frozen=True)
    monkeypatch.setattr(stacks.config, "DownstreamConfig", extended)
    stages["dev"]["downstreams"]["crm"]["max_in_flight"] = 4
    # WHEN cdk.json gives it THEN it is not refused as unknown
    assert load_config(stages).downstream("crm").name == "crm"
    # AND a misspelling of it is, naming it
    stages["dev"]["downstreams"]["crm"]["max_inflight"] = 4
    with pytest.raises(ConfigError, match=r"stages.dev.downstreams.crm.max_inflight \(did you mean 'max_in_flight'\?\)"):
        load_config(stages)


@pytest.mark.parametrize(("given", "expected"), [("true", True), ("false", False), (True, True), ("FALSE", False)])
def test_nag_accepts_command_line_strings(stages, given, expected):
    assert load_config(stages, nag=given).nag is expected


def test_nag_refuses_other_values(stages):
    with pytest.raises(ConfigError, match="nag must be true or false, got 'yes'"):
        load_config(stages, nag="yes")


def test_downstream_base_urls_override_from_the_command_line(stages):
    # WHEN a JSON object of base URLs is passed as context
    config = load_config(stages, downstream_base_urls=json.dumps({"crm": "http://127.0.0.1:8080/"}))
    # THEN only that downstream moves (trailing slash dropped)
    assert config.downstream("crm").base_url == "http://127.0.0.1:8080"
    assert config.downstream("ai_model").base_url == "https://models.example.com"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("not json", "downstream_base_urls must be a JSON object"),
        ('["x"]', "downstream_base_urls must be an object"),
        ('{"erp": "http://x"}', "no downstream named ['erp']"),
        ('{"crm": "crm.local"}', "downstreams.crm.base_url must be an http(s) URL"),
    ],
)
def test_bad_downstream_base_urls_are_refused(stages, given, message):
    with pytest.raises(ConfigError) as error:
        load_config(stages, downstream_base_urls=given)
    assert message in str(error.value)


def test_unknown_downstream_lookup_lists_the_known_ones(stages):
    with pytest.raises(ConfigError, match="no downstream named 'erp'; configured downstreams: crm"):
        load_config(stages).downstream("erp")


# -- control loop ----------------------------------------------------------------------------------


def test_the_control_loop_loads_from_cdk_json_and_defaults_what_is_left_out(stages):
    # GIVEN dev's control_loop object, and one stage without any
    loop = load_config(stages).control_loop
    assert (loop.mode, loop.throttle_rate_threshold, loop.cooldown_sec) == ("aimd", 0.01, 120)
    del stages["prod"]["control_loop"]
    # THEN the missing object means every default
    from stacks.config import ControlLoopConfig

    assert load_config(stages, "prod").control_loop == ControlLoopConfig()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "pid"}, "stages.dev.control_loop.mode must be one of ['aimd', 'gradient'], got 'pid'"),
        ({"throttle_rate_threshold": 0}, "stages.dev.control_loop.throttle_rate_threshold must be a number in [0.001, 0.5], got 0"),
        ({"cooldown_sec": -1}, "stages.dev.control_loop.cooldown_sec must be an integer in [0, 3600], got -1"),
        ({"max_concurrency_factor": 0.5}, "stages.dev.control_loop.max_concurrency_factor must be an integer in [1, 100]"),
        ({"breaker_error_rate_threshold": 0.01}, "breaker_error_rate_threshold must be >= error_rate_threshold (0.05), got 0.01"),
        ({"alarm_emails": ["ops"]}, "stages.dev.control_loop.alarm_emails must be a list of e-mail addresses, got ['ops']"),
        ({"beta": 0.5}, "unknown key stages.dev.control_loop.beta; stages.dev.control_loop takes: adjust_rate, alarm_emails, "),
        ({"adjust_rate": "yes"}, "stages.dev.control_loop.adjust_rate must be true or false, got 'yes'"),
        ({"ingress_refused_rate_threshold": 0}, "ingress_refused_rate_threshold must be a number in [0.001, 1], got 0"),
        ({"ingress_p99_latency_ms": 30_000}, "ingress_p99_latency_ms must be an integer in [50, 29000], got 30000"),
    ],
)
def test_bad_control_loop_values_fail_with_key_value_and_range(stages, changes, message):
    dev(stages)["control_loop"].update(changes)
    with pytest.raises(ConfigError) as error:
        load_config(stages)
    assert message in str(error.value)


def test_the_control_loop_must_be_an_object(stages):
    dev(stages)["control_loop"] = "aimd"
    with pytest.raises(ConfigError, match="stages.dev.control_loop must be an object, got 'aimd'"):
        load_config(stages)


def ingress(stages: dict[str, Any]) -> dict[str, Any]:
    return stages["dev"]["ingress"]


def test_ingress_loads_tiers_throttles_and_the_retry_after_they_imply(stages):
    # GIVEN cdk.json's dev ingress WHEN it is loaded
    loaded = load_config(stages).ingress
    # THEN every limit is typed (the Retry-After and routes they imply: tests/infra/test_pattern_props.py)
    assert (loaded.throttle.rate_limit_per_sec, loaded.throttle.burst) == (100, 200)
    assert set(loaded.method_throttles) <= {"POST /payments", "GET /payments/{id}", "POST /legacy-records"}
    assert [t.name for t in loaded.tiers] == ["free", "standard", "partner"]
    free = loaded.tiers[0]
    assert (free.quota.limit, free.quota.period, free.api_keys) == (1000, "DAY", ("example-free-client",))
    # AND a tier's throttle is its own
    assert (free.throttle.rate_limit_per_sec, free.throttle.burst) == (1, 2)
    # AND WAF is off in dev and on in prod
    assert not loaded.waf.enabled and load_config(stages, "prod").ingress.waf.enabled


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda i: i["throttle"].update(rate_limit_per_sec=20_000),
         "stages.dev.ingress.throttle.rate_limit_per_sec must be a number in [0.01, 10000], got 20000"),
        (lambda i: i["throttle"].update(burst=6_000),
         "stages.dev.ingress.throttle.burst must be an integer in [1, 5000], got 6000"),
        (lambda i: i["throttle"].update(burst=10),
         "stages.dev.ingress.throttle.burst must be at least half a second of rate_limit_per_sec (50 for 100 req/s), got 10"),
        (lambda i: i["method_throttles"].update({"POST /payments": {"rate_limit_per_sec": 500, "burst": 500}}),
         "stages.dev.ingress.method_throttles.POST /payments (500 req/s, burst 500) exceeds the bucket it sits under"
         " (100 req/s, burst 200)"),
        (lambda i: i["method_throttles"].update({"payments": {"rate_limit_per_sec": 1, "burst": 1}}),
         "routes are written 'VERB /path', e.g. 'POST /payments', got 'payments'"),
        (lambda i: i["tiers"]["free"]["quota"].update(period="HOUR"),
         "stages.dev.ingress.tiers.free.quota.period must be one of ['DAY', 'WEEK', 'MONTH'], got 'HOUR'"),
        (lambda i: i["tiers"]["free"]["quota"].update(limit=0),
         "stages.dev.ingress.tiers.free.quota.limit must be an integer in [1, 2000000000], got 0"),
        (lambda i: i["tiers"]["standard"]["method_throttles"]["POST /payments"].update(rate_limit_per_sec=11),
         "stages.dev.ingress.tiers.standard.method_throttles.POST /payments (11 req/s, burst 4) exceeds the bucket it"
         " sits under (10 req/s, burst 20)"),
        (lambda i: i["tiers"]["partner"].update(api_keys=["example-free-client"]),
         "API key 'example-free-client' is in tiers 'free' and 'partner'"),
        (lambda i: i["tiers"]["partner"].update(api_keys=["Partner A"]),
         "stages.dev.ingress.tiers.partner.api_keys must be a list of client names"),
        (lambda i: i.update(tiers={}), "stages.dev.ingress.tiers must be a non-empty object"),
        (lambda i: i["waf"].update(requests_per_5_min_per_ip=5),
         "stages.dev.ingress.waf.requests_per_5_min_per_ip must be an integer in [10, 2000000000], got 5"),
        (lambda i: i["waf"].update(enabled="yes"), "stages.dev.ingress.waf.enabled must be true or false, got 'yes'"),
        (lambda i: i.update(throttles={}), "unknown key stages.dev.ingress.throttles (did you mean 'throttle'?);"
                                           " stages.dev.ingress takes: method_throttles, quota_retry_after_sec, throttle,"
                                           " tiers, waf"),
    ],
)
def test_bad_ingress_values_fail_with_key_value_and_range(stages, mutate, message):
    # GIVEN one bad ingress value
    mutate(ingress(stages))
    # WHEN the config is built THEN the error names the key, the value and what is allowed
    with pytest.raises(ConfigError) as error:
        load_config(stages)
    assert message in str(error.value)


def test_ingress_is_required(stages):
    del stages["dev"]["ingress"]
    with pytest.raises(ConfigError, match="stages.dev.ingress is required"):
        load_config(stages)
