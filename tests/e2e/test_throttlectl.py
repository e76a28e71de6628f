"""`throttlectl` against the whole app deployed into the emulator: every command and every refusal.

The CLI runs in process through `main(argv) -> int` with `--endpoint-url` of the emulator. moto
allows every call, so "no permission" is simulated with clients that raise AWS's AccessDenied for
one operation (a botocore `before-call` hook, so paginated calls are denied too).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.e2e.conftest import store_past_allowed_pattern
from throttling.adapters.dynamodb_circuit_breaker import DynamoDbCircuitBreaker
from throttling.adapters.dynamodb_rate_limiter import DynamoDbRateLimiter
from throttling.core.circuit_breaker import BreakerPolicy
from throttling.core.clock import FakeClock
from throttling.core.rate_limiter import RatePolicy
from throttling.core.tunables import parse_tunables
from throttlectl.cli import main

pytestmark = pytest.mark.emulator

STAGE_PREFIX = "/throttling/dev"
CRM = f"{STAGE_PREFIX}/downstreams/crm"
REASON = "CRM asked for 5 req/s until Friday (OPS-42)"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def ctl(cloud, deployed) -> Callable[..., Run]:
    """Run throttlectl in process against the emulator; `--stage dev` unless `stage` says otherwise."""

    def run(*argv: str, stage: str | None = "dev", client_factory=None, environ=None, clock=time.time) -> Run:
        out, err = io.StringIO(), io.StringIO()
        args = [*(["--stage", stage] if stage else []), *argv]
        if argv[0] != "plan":
            args += ["--endpoint-url", cloud.endpoint_url]
        code = main(args, client_factory=client_factory, stdout=out, stderr=err,
                    environ={} if environ is None else environ, clock=clock)
        return Run(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture(autouse=True)
def restored_tunables(cloud, deployed) -> Iterator[None]:
    """Every tunable back to its value before the test (tests share the module's deployment)."""
    ssm = cloud.client("ssm")
    before = _values(ssm)
    yield
    for name, value in _values(ssm).items():
        if before.get(name) != value:
            ssm.put_parameter(Name=name, Value=before[name], Overwrite=True)


def _values(ssm) -> dict[str, str]:
    pages = ssm.get_paginator("get_parameters_by_path").paginate(Path=STAGE_PREFIX, Recursive=True)
    return {p["Name"]: p["Value"] for page in pages for p in page["Parameters"]}


def _version(cloud, name: str = CRM) -> int:
    return cloud.client("ssm").get_parameter(Name=name)["Parameter"]["Version"]


def denying(cloud, service: str, operation: str) -> Callable[[str], Any]:
    """A client factory whose `service` client is refused `operation` as by IAM."""

    def deny(**kwargs: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": f"User: arn:aws:sts::123456789012:assumed-role/"
                       f"ReadOnly/alice is not authorized to perform: {service}:{operation}"}}, operation)

    def factory(name: str) -> Any:
        client = cloud.client(name)
        if name == service:
            client.meta.events.register(f"before-call.{client.meta.service_model.endpoint_prefix}.{operation}", deny)
        return client

    return factory


# -- show ----------------------------------------------------------------------------------------


def test_show_lists_every_tunable_with_its_value_seed_bounds_and_origin(ctl, dev_config):
    # GIVEN the freshly deployed dev stage
    # WHEN an operator shows the tunables, as a table and as JSON
    text = ctl("show")
    result = ctl("show", "--json")
    # THEN every downstream and breaker document is there, with the seeded values and the bounds
    assert (text.code, result.code) == (0, 0)
    entries = {e["key"]: e for e in result.json()["tunables"]}
    assert set(entries) == {f"{kind}/{d.name}" for d in dev_config.downstreams for kind in ("downstreams", "breakers")}
    crm = entries["downstreams/crm"]
    assert crm["value"] == crm["seed"] == {"rate_per_sec": 9.9, "burst": 5, "max_concurrency": 3, "mode": "auto"}
    assert crm["bounds"] == {"rate_per_sec": "0.01..10 (contract)", "burst": "whole 1..10 (contract)",
                             "max_concurrency": "whole 1..1000", "mode": "auto|manual"}
    # AND the mainframe's burst bound comes from its consumer, the one function that calls it
    assert entries["downstreams/legacy_mainframe"]["bounds"]["burst"] == "whole 1..1 (contract)"
    assert (crm["pinned"], crm["changed_by"], crm["lambdas_see"]) == (False, "CloudFormation (seed)", "as stored")
    assert entries["breakers/crm"]["bounds"]["failure_rate_threshold"] == "(0, 1]"
    # AND the table shows the same, one block per tunable
    assert "downstreams/crm  v1 | changed " in text.out
    assert "rate_per_sec     9.9    9.9   0.01..10 (contract)" in text.out
    assert "window_buckets            (6)" in text.out  # absent: the Lambdas use BreakerPolicy's default


def test_show_flags_a_value_the_lambdas_would_refuse_and_names_the_controller(ctl, cloud):
    # GIVEN garbage written to one document, and a parameter last written by the controller's role
    ssm = cloud.client("ssm")
    store_past_allowed_pattern(cloud, CRM, '{"rate_per_sec": "fast"')
    controller = "arn:aws:sts::123456789012:assumed-role/Throttling-dev-Controller-ControllerRole1A2B/tuner"

    def factory(name: str) -> Any:
        client = cloud.client(name)
        if name == "ssm":
            def as_controller(parsed: dict, **kwargs: Any) -> None:
                for parameter in parsed.get("Parameters", []):
                    if parameter["Name"].endswith("/breakers/crm"):
                        parameter["LastModifiedUser"] = controller
            client.meta.events.register("after-call.ssm.DescribeParameters", as_controller)
        return client

    # WHEN the tunables are shown
    result = ctl("show", "--json", client_factory=factory)
    # THEN the garbage is flagged as refused by the Lambdas, and the controller's write is labelled
    entries = {e["key"]: e for e in result.json()["tunables"]}
    assert entries["downstreams/crm"]["lambdas_see"].startswith("refused (the value is not JSON")
    assert entries["breakers/crm"]["changed_by"] == "controller"


# -- set -----------------------------------------------------------------------------------------


def test_set_merges_validates_pins_and_audits_and_the_lambda_reads_it(ctl, cloud, deployed, fresh_simulators, tmp_path):
    # GIVEN the seeded CRM limits (9 req/s, burst 9, 2 in flight, auto)
    audit_log = tmp_path / "audit.jsonl"
    before = _version(cloud)
    # WHEN an operator lowers the rate and pins it, with a reason
    result = ctl("set", "downstreams/crm", "rate_per_sec=5", "--pin", "--reason", REASON,
                 "--audit-log", str(audit_log))
    # THEN the merged document is written as version 2, and the output shows the diff and the audit
    assert result.code == 0, result.err
    assert json.loads(cloud.client("ssm").get_parameter(Name=CRM)["Parameter"]["Value"]) == {
        "rate_per_sec": 5.0, "burst": 5, "max_concurrency": 3, "mode": "manual"}
    assert f"downstreams/crm: version {before} -> {before + 1}" in result.out
    assert "rate_per_sec  9.9   5.0" in result.out and "mode          auto  manual" in result.out
    assert f'by arn:aws:sts::123456789012:user/moto: "{REASON}"' in result.out
    # AND the audit (who, when, old, new, why) is in the local log and in the parameter's history
    (line,) = [json.loads(text) for text in audit_log.read_text().splitlines()]
    assert (line["old"]["rate_per_sec"], line["new"]["rate_per_sec"], line["audit"]["reason"]) == (9.9, 5.0, REASON)
    assert line["audit"]["by"] == "arn:aws:sts::123456789012:user/moto"
    history = ctl("history", "downstreams/crm", "--json").json()["versions"]
    assert (history[0]["version"], history[0]["by"]) == (1, "CloudFormation (seed)")
    assert [(v["version"], v["by"], v["reason"]) for v in history[-1:]] == [
        (before + 1, "arn:aws:sts::123456789012:user/moto", REASON)]
    shown = {e["key"]: e for e in ctl("show", "--json").json()["tunables"]}["downstreams/crm"]
    assert (shown["pinned"], shown["reason"]) == (True, REASON)
    # AND the deployed CRM caller parses it with its own reader: the CLI wrote what the Lambdas use
    caller = deployed["Throttling-dev-Workflows"].outputs["CrmCallerName"]
    response = cloud.client("lambda").invoke(FunctionName=caller, Payload=json.dumps({"path": "/users/1"}))
    answer = json.loads(response["Payload"].read())
    assert answer.get("tunables_in_force") == {
        "rate_per_sec": 5.0, "burst": 5, "max_concurrency": 3, "mode": "manual"}, answer


def test_a_write_racing_another_writer_is_reported(ctl, cloud):
    # GIVEN the controller writes the CRM document between the operator's read and write
    def controller_writes_first(**kwargs: Any) -> None:
        if kwargs["params"].get("Description", "").startswith("throttlectl: "):
            cloud.client("ssm").put_parameter(Name=CRM, Overwrite=True, Value=json.dumps(
                {"rate_per_sec": 8.0, "burst": 5, "max_concurrency": 2, "mode": "auto"}))

    def factory(name: str) -> Any:
        client = cloud.client(name)
        if name == "ssm":
            client.meta.events.register("before-parameter-build.ssm.PutParameter", controller_writes_first)
        return client

    before = _version(cloud)
    # WHEN the operator's write lands
    result = ctl("set", "downstreams/crm", "rate_per_sec=5", "--pin", "--reason", REASON, client_factory=factory)
    # THEN it is written (a pin is meant to win) and the interleaved version is pointed out
    assert result.code == 0, result.err
    assert f"someone else wrote downstreams/crm meanwhile (version {before} -> {before + 2})" in result.out
    assert json.loads(cloud.client("ssm").get_parameter(Name=CRM)["Parameter"]["Value"])["rate_per_sec"] == 5.0


def test_dry_run_prints_the_diff_and_writes_nothing(ctl, cloud):
    # GIVEN / WHEN a change is tried with --dry-run (no reason needed)
    before = _version(cloud)
    result = ctl("set", "downstreams/crm", "max_concurrency=1", "burst=3", "--dry-run")
    # THEN the diff is printed and the parameter is untouched
    assert result.code == 0, result.err
    assert f"dry run, version {before} would become" in result.out
    assert "burst            5    3" in result.out and "max_concurrency  3    1" in result.out
    assert result.out.rstrip().endswith("nothing written")
    assert _version(cloud) == before


def test_unpin_and_reset_to_the_seed(ctl, cloud):
    # GIVEN a pinned, lowered CRM rate
    before = _version(cloud)
    assert ctl("set", "downstreams/crm", "rate_per_sec=3", "--pin", "--reason", REASON).code == 0
    # WHEN the operator unpins it, then resets it to the seed
    unpinned = ctl("set", "downstreams/crm", "--unpin", "--reason", "incident over", "--json")
    reset = ctl("set", "downstreams/crm", "--reset", "--reason", "back to the plan", "--json")
    # THEN the first only flips the mode and the second restores the seeded document
    assert [(c["field"], c["new"]) for c in unpinned.json()["changes"]] == [("mode", "auto")]
    assert reset.json()["new"] == {"rate_per_sec": 9.9, "burst": 5, "max_concurrency": 3, "mode": "auto"}
    assert _version(cloud) == before + 3
    # AND setting what is already there writes nothing
    same = ctl("set", "downstreams/crm", "rate_per_sec=9.9", "--reason", "no-op")
    assert (same.code, _version(cloud)) == (0, before + 3)
    assert "no change" in same.out


def test_a_breaker_policy_is_validated_by_the_breaker_parser(ctl, cloud):
    # GIVEN / WHEN a breaker's open duration is lengthened
    result = ctl("set", "breakers/crm", "open_duration_sec=120", "--reason", "flapping CRM", "--json")
    # THEN it is written, the other fields kept
    assert result.code == 0, result.err
    stored = json.loads(cloud.client("ssm").get_parameter(Name=f"{STAGE_PREFIX}/breakers/crm")["Parameter"]["Value"])
    assert stored["open_duration_sec"] == 120 and stored["failure_rate_threshold"] == 0.5


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        # unknown parameter
        (("set", "downstreams/billing", "rate_per_sec=5", "--reason", REASON), 3,
         "no tunable 'downstreams/billing' in stage 'dev'; known: breakers/ai_model"),
        # out of bounds: above the contract, and below a hard bound
        (("set", "downstreams/crm", "rate_per_sec=50", "--reason", REASON), 2,
         "rate_per_sec 50 is above crm's contract of 10 req/s"),
        (("set", "downstreams/crm", "max_concurrency=0", "--reason", REASON), 2,
         "max_concurrency 0 is below the lower bound 1; the Lambdas would clamp it to 1: give a value in [1, 1000]"),
        (("set", "downstreams/crm", "burst=50", "--reason", REASON), 2,
         "burst 50 is above crm's contract burst of 10 (the DOWNSTREAM_BURST its functions are deployed with); "
         "the Lambdas would clamp it to 10: give a whole number in [1, 10]"),
        (("set", "downstreams/legacy_mainframe", "burst=2", "--reason", REASON), 2,
         "burst 2 is above legacy_mainframe's contract burst of 1"),
        (("set", "downstreams/crm", "rate_per_sec=1e400", "--reason", REASON), 2,
         "rate_per_sec must be a finite number, got '1e400'"),
        (("set", "downstreams/crm", "burst=" + "[" * 3000 + "]" * 3000, "--reason", REASON), 2,
         "burst must be a finite number, got '[[[["),
        (("set", "breakers/crm", "failure_rate_threshold=1.5", "--reason", REASON), 2,
         "failure_rate_threshold must be a rate in (0, 1], got 1.5"),
        # wrong type and malformed input
        (("set", "downstreams/crm", "rate_per_sec=fast", "--reason", REASON), 2,
         "rate_per_sec must be a finite number, got 'fast'"),
        (("set", "downstreams/crm", "burst=2.5", "--reason", REASON), 2, "burst must be a whole number, got 2.5"),
        (("set", "downstreams/crm", "mode=off", "--reason", REASON), 2, "mode must be one of ['auto', 'manual']"),
        (("set", "downstreams/crm", "rate_per_sec", "--reason", REASON), 2, "expected FIELD=VALUE"),
        (("set", "downstreams/crm", "rate=5", "--reason", REASON), 2,
         "unknown field rate for downstreams/crm; known fields: borrow_depth, burst, decrease_factor,"
         " default_tenant_share, floor_fraction, increase_fraction_per_sec, max_concurrency, mode, rate_per_sec,"
         " reserve_batch, reserve_standard, seed_fraction, share_<name>"),
        # a write needs a reason; a breaker has no mode; nothing to do
        (("set", "downstreams/crm", "rate_per_sec=5"), 2, "--reason is required to write"),
        (("set", "breakers/crm", "--pin", "--reason", REASON), 2, "breakers/crm has no mode to pin"),
        (("set", "downstreams/crm", "--reason", REASON), 2, "nothing to change"),
        (("set", f"/throttling/prod/downstreams/crm", "rate_per_sec=5", "--reason", REASON), 2,
         "belongs to stage 'prod', not 'dev'"),
    ],
    ids=["unknown-name", "above-contract", "below-bound", "burst-above-contract", "mainframe-burst-above-contract",
         "overflowing-number", "deep-nesting", "breaker-range", "wrong-type",
         "not-whole", "bad-mode", "malformed", "unknown-field", "no-reason", "pin-breaker", "no-change-given",
         "other-stage"],
)
def test_set_refuses_and_writes_nothing(ctl, cloud, argv, code, message):
    # GIVEN the seeded parameters
    values = _values(cloud.client("ssm"))
    # WHEN a bad change is asked for
    result = ctl(*argv)
    # THEN it is refused with the documented exit code and a message naming the problem, and nothing changed
    assert result.code == code, result.err
    assert message in result.err
    assert result.out == ""
    assert _values(cloud.client("ssm")) == values


def test_a_document_refused_by_the_lambdas_can_be_replaced_whole_or_reset(ctl, cloud):
    # GIVEN garbage in the CRM document, stored before its AllowedPattern was deployed
    store_past_allowed_pattern(cloud, CRM, '{"rate_per_sec": "fast"')
    # WHEN the operator sets one field, then every field
    partial = ctl("set", "downstreams/crm", "rate_per_sec=5", "--reason", REASON)
    whole = ctl("set", "downstreams/crm", "rate_per_sec=5", "burst=5", "max_concurrency=1", "--reason", REASON)
    # THEN the partial change is refused with the way out, and the whole document is accepted
    assert partial.code == 2 and "is not a JSON object: give every field, or --reset" in partial.err
    assert whole.code == 0, whole.err


# -- connection and permission refusals ----------------------------------------------------------


def test_missing_or_malformed_stage_is_a_usage_error(ctl):
    # GIVEN no --stage and no THROTTLING_STAGE / WHEN a command needs one / THEN exit 2 saying so
    missing = ctl("show", stage=None)
    assert (missing.code, missing.out) == (2, "")
    assert "--stage is required (a stage of cdk.json, e.g. dev), or set THROTTLING_STAGE" in missing.err
    # AND a name no stage can have is refused, from the flag or the environment
    from_flag = ctl("show", stage="Dev")
    assert from_flag.code == 2 and "got 'Dev' (from --stage)" in from_flag.err
    from_env = ctl("show", stage=None, environ={"THROTTLING_STAGE": "qa-1"})
    assert from_env.code == 2 and "got 'qa-1' (from THROTTLING_STAGE)" in from_env.err
    # AND THROTTLING_STAGE alone is enough
    assert ctl("show", stage=None, environ={"THROTTLING_STAGE": "dev"}).code == 0


def test_a_stage_that_is_not_deployed_is_not_found(ctl):
    result = ctl("status", stage="prod")
    assert result.code == 3
    assert "stack Throttling-prod-SharedLimits is not deployed (stages deployed here: dev)" in result.err
    # AND any stage name cdk.json may hold is looked up, not refused by a fixed list
    other = ctl("status", stage="qa")
    assert other.code == 3 and "stack Throttling-qa-SharedLimits is not deployed" in other.err


def test_no_permission_to_write_is_exit_4_and_changes_nothing(ctl, cloud):
    # GIVEN an operator whose role may read but not ssm:PutParameter
    factory = denying(cloud, "ssm", "PutParameter")
    before = _version(cloud)
    # WHEN they set a valid value
    result = ctl("set", "downstreams/crm", "rate_per_sec=5", "--reason", REASON, client_factory=factory)
    # THEN exit 4 with AWS's words, and the value is unchanged
    assert result.code == 4
    assert "permission denied: PutParameter (AccessDeniedException)" in result.err
    assert "not authorized to perform: ssm:PutParameter" in result.err
    assert _version(cloud) == before


@pytest.mark.parametrize(("service", "operation", "argv"), [
    ("cloudformation", "DescribeStacks", ("show",)),
    ("ssm", "GetParametersByPath", ("show",)),
    ("dynamodb", "Scan", ("status",)),
    ("sqs", "GetQueueAttributes", ("redrive", "LegacyConsumerDeadLetterQueue", "--dry-run")),
])
def test_no_permission_to_read_is_exit_4(ctl, cloud, service, operation, argv):
    result = ctl(*argv, client_factory=denying(cloud, service, operation))
    assert result.code == 4, result.err
    assert f"permission denied: {operation} (AccessDeniedException)" in result.err


# -- status --------------------------------------------------------------------------------------


@pytest.fixture
def limit_state(cloud, deployed) -> Iterator[float]:
    """An open CRM breaker, 3 CRM tokens taken, a semaphore with a live and an expired lease; all at `now`."""
    shared = deployed["Throttling-dev-SharedLimits"].outputs
    dynamodb = cloud.client("dynamodb")
    now = time.time()
    clock = FakeClock(now)
    DynamoDbCircuitBreaker(shared["CircuitBreakerTableName"], client=dynamodb, policy=BreakerPolicy(),
                           clock=clock).force_open("crm", "operator drill", duration_sec=600)
    limiter = DynamoDbRateLimiter(shared["RateLimiterTableName"], client=dynamodb, clock=clock)
    for _ in range(3):
        assert limiter.try_acquire("crm", RatePolicy(9.9, 5)).allowed
    dynamodb.put_item(TableName=shared["SemaphoreTableName"], Item={
        "pk": {"S": "ai_model"}, "lease_count": {"N": "2"},
        "leases": {"M": {"dead": {"N": str(now - 60)}, "live": {"N": str(now + 600)}}}})
    yield now
    for table, key in ((shared["CircuitBreakerTableName"], "crm"), (shared["RateLimiterTableName"], "crm#0"),
                       (shared["SemaphoreTableName"], "ai_model")):
        dynamodb.delete_item(TableName=table, Key={"pk": {"S": key}})


def test_status_shows_breakers_limiters_leases_queues_and_concurrency(ctl, cloud, deployed, limit_state):
    # GIVEN the limit state above, a pinned CRM concurrency of 1 and two dead letters of the CRM batch
    now = limit_state
    assert ctl("set", "downstreams/crm", "max_concurrency=1", "--pin", "--reason", REASON).code == 0
    dead_letters = deployed["Throttling-dev-Workflows"].outputs["CrmBatchEmailDeadLetterQueueUrl"]
    sqs = cloud.client("sqs")
    for user in ("u1", "u2"):
        sqs.send_message(QueueUrl=dead_letters, MessageBody=json.dumps({"user_id": user}))
    try:
        # WHEN the operator asks for the status (at the same instant the state was written)
        result = ctl("status", "--json", clock=lambda: now)
        text = ctl("status", clock=lambda: now)
    finally:
        _discard(cloud, dead_letters)
    # THEN each part reads as the fleet sees it
    assert (result.code, text.code) == (0, 0), result.err
    status = result.json()
    breakers = {b["name"]: b for b in status["breakers"]}
    assert (breakers["crm"]["status"], breakers["crm"]["reason"]) == ("open", "forced: operator drill")
    assert breakers["crm"]["retry_after_sec"] == pytest.approx(600, abs=0.01)
    assert breakers["payment_gateway"]["status"] == "closed"
    limiters = {r["bucket"]: r for r in status["limiters"]}
    # the limiter runs at the document's 9.9 req/s, burst 5; 3 tokens were taken at `now`
    assert (limiters["crm"]["tokens_available"], limiters["crm"]["burst"]) == (2.0, 5)
    assert limiters["crm"]["full_in_sec"] == pytest.approx(3 / 9.9, abs=0.001)
    assert limiters["ai_model"]["tokens_available"] == 2.0  # untouched: a full burst
    (semaphore,) = status["semaphores"]
    assert (semaphore["name"], semaphore["live"], semaphore["expired"], semaphore["lease_count"]) == ("ai_model", 1, 1, 2)
    queues = {q["label"]: q for q in status["queues"]}
    assert (queues["CrmBatchEmailDeadLetterQueue"]["role"], queues["CrmBatchEmailDeadLetterQueue"]["visible"]) == (
        "dead-letter", 2)
    assert queues["LegacyConsumerQueue"]["dead_letter_queue"] == "LegacyConsumerDeadLetterQueue"
    assert queues["LegacyConsumerDeadLetterQueue"]["sources"] == ["LegacyConsumerQueue"]
    concurrency = {c["downstream"]: c for c in status["concurrency"]}
    assert (concurrency["crm"]["max_concurrency"], concurrency["crm"]["note"]) == (1, "pinned (manual)")
    assert concurrency["ai_model"]["max_concurrency"] == 3  # the seed: its max_in_flight caps the plan
    # AND the table says the same
    assert "crm               open" in text.out
    assert "CrmBatchEmailDeadLetterQueue   dead-letter  2" in text.out


def test_status_shows_each_downstreams_tenant_shares_and_the_most_backed_up_tenants(ctl, cloud, deployed):
    # GIVEN shares for the CRM set by the operator, and two tenants' batch calls taken by the real limiter
    assert ctl("set", "downstreams/crm", "share_acme=0.5", "share_initech=0.2", "--reason", REASON).code == 0
    shared = deployed["Throttling-dev-SharedLimits"].outputs
    dynamodb = cloud.client("dynamodb")
    now = time.time()
    in_force = parse_tunables(cloud.client("ssm").get_parameter(Name=CRM)["Parameter"]["Value"]).tunables
    limiter = DynamoDbRateLimiter(shared["RateLimiterTableName"], client=dynamodb, clock=FakeClock(now))
    policy = RatePolicy(in_force.rate_per_sec, in_force.burst)
    try:
        for tenant, calls in (("acme", 1), ("initech", 1)):
            for _ in range(calls):
                assert limiter.try_acquire("crm", policy, tenant=tenant, priority="batch", shares=in_force.shares).allowed
        # WHEN the operator asks for the status, listing one tenant per downstream
        result = ctl("status", "--json", "--top-tenants", "1", clock=lambda: now)
        text = ctl("status", "--top-tenants", "1", clock=lambda: now)
    finally:
        dynamodb.delete_item(TableName=shared["RateLimiterTableName"], Key={"pk": {"S": "crm#0"}})
    # THEN the CRM's shares are the stored ones, both tenants are counted and only the most backed up is listed
    assert (result.code, text.code) == (0, 0), result.err
    status = result.json()
    crm = next(row for row in status["tenant_shares"] if row["downstream"] == "crm")
    assert (crm["shares"], crm["tenants_seen"], crm["tenants_left_out"]) == ({"acme": 0.5, "initech": 0.2}, 2, 1)
    (listed,) = [row for row in status["tenants"] if row["downstream"] == "crm"]
    assert listed["tenant"] in ("acme", "initech") and listed["backlog_sec"] > 0
    assert "tenants now (the 1 most backed up per downstream" in text.out
    assert "acme 0.5, initech 0.2" in text.out and "2 (1 not listed)" in text.out


# -- redrive -------------------------------------------------------------------------------------


@pytest.fixture
def legacy_queues(cloud, deployed) -> Iterator[dict[str, str]]:
    """The legacy buffer's queues with its consumer's mapping paused, so moved messages stay put; emptied after."""
    outputs = deployed["Throttling-dev-Buffers"].outputs
    lambda_ = cloud.client("lambda")
    (mapping,) = lambda_.list_event_source_mappings(FunctionName=outputs["LegacyConsumerName"])["EventSourceMappings"]
    lambda_.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    cloud.event_sources.sync()
    queues = {"queue": outputs["LegacyQueueUrl"], "dead_letters": outputs["LegacyDeadLetterQueueUrl"]}
    yield queues
    for url in queues.values():
        _discard(cloud, url)
    lambda_.update_event_source_mapping(UUID=mapping["UUID"], Enabled=True)
    cloud.event_sources.sync()


def _dead(cloud, url: str, count: int) -> list[str]:
    bodies = [json.dumps({"record_id": f"r-{i}", "payload": {"n": i}}) for i in range(count)]
    for body in bodies:
        cloud.client("sqs").send_message(QueueUrl=url, MessageBody=body, MessageAttributes={
            "origin": {"DataType": "String", "StringValue": "test"}})
    return bodies


def _discard(cloud, url: str) -> None:
    """Empty a queue (moto, like SQS, allows one PurgeQueue a minute)."""
    sqs = cloud.client("sqs")
    for message in _receive_all(cloud, url):
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def _receive_all(cloud, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while batch := cloud.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                                      MessageAttributeNames=["All"]).get("Messages", []):
        messages += batch
    return messages


def test_redrive_moves_dead_letters_back_with_progress_and_a_count(ctl, cloud, legacy_queues):
    # GIVEN 23 dead records (with a message attribute) in the legacy buffer's dead-letter queue
    bodies = _dead(cloud, legacy_queues["dead_letters"], 23)
    # WHEN the operator counts them, then redrives them by the queue's label
    dry = ctl("redrive", "LegacyConsumerDeadLetterQueue", "--dry-run", "--json")
    result = ctl("redrive", "LegacyConsumerDeadLetterQueue")
    # THEN the dry run counted 23 and moved nothing
    assert dry.code == 0 and dry.json()["approximate_count"] == 23 and dry.json()["dry_run"] is True
    # AND the redrive moved all 23 to the source queue, reporting progress per batch
    assert result.code == 0, result.err
    assert "moved 23 messages from LegacyConsumerDeadLetterQueue to LegacyConsumerQueue (copy)" in result.out
    assert result.err.splitlines() == ["redrive: 10/23 moved", "redrive: 20/23 moved", "redrive: 23/23 moved"]
    moved = _receive_all(cloud, legacy_queues["queue"])
    assert sorted(m["Body"] for m in moved) == sorted(bodies)
    assert {m["MessageAttributes"]["origin"]["StringValue"] for m in moved} == {"test"}
    assert _receive_all(cloud, legacy_queues["dead_letters"]) == []


def test_redrive_by_source_queue_with_a_limit(ctl, cloud, legacy_queues):
    # GIVEN 5 dead records / WHEN 2 are redriven, naming the source queue / THEN 2 moved, 3 stay
    _dead(cloud, legacy_queues["dead_letters"], 5)
    result = ctl("redrive", "LegacyConsumerQueue", "--max", "2", "--json")
    assert (result.code, result.json()["moved"]) == (0, 2)
    assert len(_receive_all(cloud, legacy_queues["queue"])) == 2


class _MoveTaskSqs:
    """SQS with message move tasks (which moto 5.2 lacks): the task moves everything at once."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.started: list[dict[str, str]] = []
        self.moved = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def start_message_move_task(self, **kwargs: str) -> dict[str, str]:
        self.started.append(kwargs)
        source = self._sqs.get_queue_url(QueueName=kwargs["SourceArn"].rsplit(":", 1)[-1])["QueueUrl"]
        target = self._sqs.get_queue_url(QueueName=kwargs["DestinationArn"].rsplit(":", 1)[-1])["QueueUrl"]
        while batch := self._sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10).get("Messages", []):
            for message in batch:
                self._sqs.send_message(QueueUrl=target, MessageBody=message["Body"])
                self._sqs.delete_message(QueueUrl=source, ReceiptHandle=message["ReceiptHandle"])
                self.moved += 1
        return {"TaskHandle": "task-1"}

    def list_message_move_tasks(self, **kwargs: Any) -> dict[str, Any]:
        return {"Results": [{"TaskHandle": "task-1", "Status": "COMPLETED", "ApproximateNumberOfMessagesMoved":
                             self.moved, "ApproximateNumberOfMessagesToMove": self.moved}]}


def test_redrive_with_a_message_move_task_where_sqs_has_them(ctl, cloud, legacy_queues):
    # GIVEN an SQS that runs message move tasks, and 4 dead records
    _dead(cloud, legacy_queues["dead_letters"], 4)
    sqs = _MoveTaskSqs(cloud.client("sqs"))
    # WHEN the redrive uses one
    result = ctl("redrive", "LegacyConsumerDeadLetterQueue", "--method", "move-task",
                 client_factory=lambda name: sqs if name == "sqs" else cloud.client(name))
    # THEN the task went from the dead-letter queue's ARN to the queue's, and its count is reported
    assert result.code == 0, result.err
    ((started),) = sqs.started
    assert started["SourceArn"].endswith(legacy_queues["dead_letters"].rsplit("/", 1)[-1])
    assert started["DestinationArn"].endswith(legacy_queues["queue"].rsplit("/", 1)[-1])
    assert "moved 4 messages" in result.out and "redrive: 4/4 moved" in result.err


@pytest.mark.parametrize(("argv", "code", "message"), [
    (("redrive", "NoSuchQueue"), 3, "no queue 'NoSuchQueue' in this stage; queues: LegacyConsumerQueue"),
    (("redrive", "CrmBatchEmailDeadLetterQueue"), 3,
     "no queue sends its dead letters to CrmBatchEmailDeadLetterQueue"),
    (("redrive", "LegacyConsumerDeadLetterQueue", "--to", "LegacyConsumerDeadLetterQueue"), 2,
     "cannot be redriven into itself"),
    (("redrive", "LegacyConsumerDeadLetterQueue", "--max", "0"), 2, "--max must be >= 1"),
])
def test_redrive_refusals(ctl, argv, code, message):
    result = ctl(*argv)
    assert result.code == code, result.err
    assert message in result.err


# -- plan ----------------------------------------------------------------------------------------


def test_plan_shows_the_arithmetic_and_fails_a_concurrency_that_overruns_the_limit(ctl):
    # GIVEN / WHEN the README's example is planned, with and without the Map of 5 it warns about
    checked = ctl("plan", "--limit-rps", "10", "--latency-ms", "200", "--concurrency", "5", stage=None)
    planned = ctl("plan", "--limit-rps", "10", "--latency-ms", "200", "--burst", "10", "--json", stage=None)
    bad = ctl("plan", "--limit-rps", "0", "--latency-ms", "200", stage=None)
    # THEN 5 x 200 ms is 25 req/s, too many (exit 2), and the plan itself is 3 in flight at 9.9 req/s
    assert checked.code == 2
    assert "check: 5 concurrent calls / 0.2 s = 25 req/s: too many for a 10 req/s limit (2.5x it)" in checked.out
    assert checked.err.splitlines()[-1].startswith("throttlectl: refused: 5 calls in flight of 200 ms offer 25 req/s")
    assert planned.code == 0
    assert planned.json()["tunables_document"] == {"rate_per_sec": 9.9, "burst": 5, "max_concurrency": 3,
                                                    "mode": "auto"}
    assert (bad.code, bad.out) == (2, "")
    assert "limit_rps must be a number in [0.01, 10000] (req/s, the rates the Lambdas' tunables take), got 0.0" in bad.err
