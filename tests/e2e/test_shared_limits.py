"""The deployed shared limits at work: the callers' limiter in front of a downstream, and the lease sweep."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.emulator

TUNABLES = "/throttling/dev/downstreams/crm"


def invoke(cloud, function_name: str, event: dict) -> tuple[dict, str | None]:
    response = cloud.client("lambda").invoke(FunctionName=function_name, Payload=json.dumps(event))
    return json.loads(response["Payload"].read()), response.get("FunctionError")


def test_the_shared_limiter_refuses_before_the_downstream_sees_the_call(cloud, deployed, fresh_simulators):
    # GIVEN an operator who allows the CRM one call per 100 s
    caller = deployed["Throttling-dev-Workflows"].outputs["CrmCallerName"]
    cloud.client("ssm").put_parameter(Name=TUNABLES, Overwrite=True, Type="String", Value=json.dumps(
        {"rate_per_sec": 0.01, "burst": 1, "max_concurrency": 1, "mode": "manual"}))
    try:
        # WHEN two calls arrive
        first, first_error = invoke(cloud, caller, {"path": "/users/1"})
        second, second_error = invoke(cloud, caller, {"path": "/users/2"})
    finally:
        cloud.client("ssm").put_parameter(Name=TUNABLES, Overwrite=True, Type="String", Value=json.dumps(
            {"rate_per_sec": 9.9, "burst": 5, "max_concurrency": 3, "mode": "auto"}))  # the CRM's seed, restored
    # THEN the second is refused by our limiter with the wait, and never reached the CRM
    assert first_error is None
    assert (second_error, second["errorType"]) == ("Handled", "RateLimited")
    assert 90 <= json.loads(second["errorMessage"])["retry_after_sec"] <= 100
    assert [r.path for r in fresh_simulators["crm"].requests] == ["/users/1"]


def test_the_sweep_reclaims_leases_whose_owners_died(cloud, deployed):
    # GIVEN a semaphore holding one dead owner's lease (expired a minute ago) and one live lease
    shared = deployed["Throttling-dev-SharedLimits"].outputs
    dynamodb = cloud.client("dynamodb")
    now = time.time()
    dynamodb.put_item(TableName=shared["SemaphoreTableName"], Item={
        "pk": {"S": "crm"}, "lease_count": {"N": "2"},
        "leases": {"M": {"dead-owner": {"N": str(now - 60)}, "live-owner": {"N": str(now + 600)}}},
    })
    # WHEN the scheduled sweep runs (invoked here as its schedule would)
    result, error = invoke(cloud, shared["LeaseReclaimerName"], {"source": "aws.events"})
    # THEN only the dead owner's lease is gone, and the count agrees
    assert error is None, result
    assert result == {"reclaimed": {"crm": ["dead-owner"]}}
    item = dynamodb.get_item(TableName=shared["SemaphoreTableName"], Key={"pk": {"S": "crm"}},
                             ConsistentRead=True)["Item"]
    assert set(item["leases"]["M"]) == {"live-owner"}
    assert item["lease_count"] == {"N": "1"}


# Each raised inside the seed's tunables reader (OverflowError, RecursionError), so every invocation of
# the deployed caller failed while it stayed in Parameter Store. Each fits a standard parameter (4 KB).
HOSTILE_DOCUMENTS = {
    "400-digit rate": '{"rate_per_sec": 1' + "0" * 400 + ', "burst": 5, "max_concurrency": 2}',
    "4,000-digit burst": '{"rate_per_sec": 5, "burst": 1' + "0" * 4000 + ', "max_concurrency": 2}',
    "2,000 nested arrays": "[" * 2000 + "]" * 2000,
    "1,000 nested objects": '{"":' * 1000 + "1" + "}" * 1000,
    "NaN rate": '{"rate_per_sec": NaN, "burst": 5, "max_concurrency": 2}',
    "1e400 rate": '{"rate_per_sec": 1e400, "burst": 5, "max_concurrency": 2}',
    "boolean burst": '{"rate_per_sec": 5, "burst": true, "max_concurrency": 2}',
    "not an object": '"rate_per_sec=5"',
}


class CrmCaller:
    """The deployed CRM caller on a full limiter bucket, in new execution environments on demand."""

    def __init__(self, cloud, deployed) -> None:
        self.cloud, self.name = cloud, deployed["Throttling-dev-Workflows"].outputs["CrmCallerName"]
        self.configuration = cloud.client("lambda").get_function_configuration(FunctionName=self.name)["Environment"]
        self.seed = cloud.client("ssm").get_parameter(Name=TUNABLES)["Parameter"]["Value"]
        # A full bucket, whatever the tests before left in it
        cloud.client("dynamodb").delete_item(
            TableName=deployed["Throttling-dev-SharedLimits"].outputs["RateLimiterTableName"], Key={"pk": {"S": "crm#0"}})
        self.new_environment("first")

    @property
    def deployed_defaults(self) -> dict:
        return json.loads(self.configuration["Variables"]["TUNABLES_DEFAULTS"])

    def new_environment(self, generation: str) -> None:
        # A changed configuration starts new execution environments: no last good value, no last-seen TAT.
        self.cloud.client("lambda").update_function_configuration(FunctionName=self.name, Environment={
            "Variables": {**self.configuration["Variables"], "ENVIRONMENT_GENERATION": generation}})

    def tune(self, document: str) -> None:
        """Store `document` whatever it is. Parameter Store refuses most hostile ones (the tunables carry an
        AllowedPattern: see the last test); the readers must survive them anyway, in a parameter written
        before the pattern was deployed or by anyone the pattern does not cover, so they are written past it."""
        from localcloud.emulator import patches

        patches.remove("ssm_allowed_pattern")
        try:
            self.cloud.client("ssm").put_parameter(Name=TUNABLES, Overwrite=True, Type="String", Value=document)
        finally:
            patches.apply("ssm_allowed_pattern")

    def call(self) -> tuple[dict, str | None]:
        """One call as a workflow makes it: our own limiter's refusal (the CRM saw nothing) is retried after
        the wait it names, as every workflow's Retry on RateLimited does. On a loaded machine the limiter's
        answer may come back too late to spend (a stale token), and that is the caller's to retry."""
        for _ in range(5):
            answer, error = invoke(self.cloud, self.name, {"path": "/users/1"})
            if error is None or answer.get("errorType") != "RateLimited":
                return answer, error
            time.sleep(min(2.0, json.loads(answer["errorMessage"]).get("retry_after_sec", 0.2) + 0.1))
        return answer, error

    def restore(self) -> None:
        self.cloud.client("lambda").update_function_configuration(FunctionName=self.name, Environment=self.configuration)
        self.tune(self.seed)


@pytest.fixture
def crm_caller(cloud, deployed, fresh_simulators):
    caller = CrmCaller(cloud, deployed)
    yield caller
    caller.restore()


def test_the_deployed_caller_answers_every_call_whatever_document_is_in_ssm(crm_caller, fresh_simulators):
    # GIVEN the CRM caller running on an operator's good document
    good = {"rate_per_sec": 8.0, "burst": 4, "max_concurrency": 3, "mode": "manual"}
    crm_caller.tune(json.dumps(good))
    answer, error = crm_caller.call()
    assert (error, answer.get("tunables_in_force")) == (None, good), answer
    # WHEN each document no parser can use is in SSM in turn
    in_force = {}
    for name, document in HOSTILE_DOCUMENTS.items():
        crm_caller.tune(document)
        answer, error = crm_caller.call()
        in_force[name] = (error, answer.get("tunables_in_force"))
    # AND a new execution environment starts while the last of them is still there
    crm_caller.new_environment("cold")
    cold, cold_error = crm_caller.call()
    # THEN every call was answered on the last good limits, and the new environment on the deploy-time ones
    assert in_force == {name: (None, good) for name in HOSTILE_DOCUMENTS}
    assert cold_error is None, cold
    assert cold["tunables_in_force"] == {"mode": "auto", **crm_caller.deployed_defaults}
    # AND the CRM saw each of those calls
    assert len(fresh_simulators["crm"].requests) == len(HOSTILE_DOCUMENTS) + 2


def test_the_deployed_caller_clamps_a_burst_above_the_crm_s_contract(crm_caller):
    # GIVEN an operator who wrote a burst of 50 into the CRM's document (its contract allows 10)
    crm_caller.tune(json.dumps({"rate_per_sec": 8.0, "burst": 50, "max_concurrency": 2, "mode": "manual"}))
    # WHEN the caller runs
    answer, error = crm_caller.call()
    # THEN it took its token under the contract's burst, not the document's
    assert error is None, answer
    assert answer["tunables_in_force"]["burst"] == 10


@pytest.mark.parametrize("patched", [True, False], ids=["parameter-store", "moto-alone"])
def test_a_tunables_value_that_is_not_a_flat_json_object_is_refused_by_parameter_store(cloud, deployed, patched):
    from botocore.exceptions import ClientError

    from localcloud.emulator import patches

    ssm = cloud.client("ssm")
    seed = ssm.get_parameter(Name=TUNABLES)["Parameter"]["Value"]
    if not patched:
        patches.remove("ssm_allowed_pattern")
    try:
        # WHEN an operator types something that is not a flat JSON object into the console
        try:
            ssm.put_parameter(Name=TUNABLES, Value="rate 5 please", Type="String", Overwrite=True)
            outcome = "stored"
        except ClientError as error:
            outcome = error.response["Error"]["Code"]
        stored = ssm.get_parameter(Name=TUNABLES)["Parameter"]["Value"]
    finally:
        ssm.put_parameter(Name=TUNABLES, Value=seed, Type="String", Overwrite=True)
        patches.apply("ssm_allowed_pattern")
    if patched:
        # THEN Parameter Store refuses it and the document in force is untouched: no workflow's
        # States.StringToJson can meet it (its failure, States.Runtime, is one no Catch takes)
        assert (outcome, stored) == ("ParameterPatternMismatchException", seed)
    else:
        # moto alone stores it, and every CRM and UGC run would then fail at its start
        assert (outcome, stored) == ("stored", "rate 5 please")
