"""Parked orders without AWS: the name each resumption runs under, what becomes of each message, and the pace."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.orders import execution_name, parse_order
from payments.parked import (
    Action,
    InvalidParkedMessage,
    NoExecutionNameLeft,
    OrderRecord,
    ParkedOrder,
    decide,
    episode_of,
    is_valid_execution_name,
    parse_parked_message,
    resume_execution_name,
    resume_input,
    resumes_allowed,
)
from throttling.core.circuit_breaker import BreakerState, BreakerStatus

ORDER = {"order_id": "o-1", "customer_id": "c-1", "amount": "12.50", "currency": "EUR",
         "items": [{"sku": "sku-1", "quantity": 2}]}
ORDER_IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1,
                    max_size=74)


def a_message(**changes) -> str:
    """A message as `ParkOrder` sends it."""
    return json.dumps({**ORDER, "reason": "circuit_breaker_open", "execution": "order-o-1",
                       "parked_at": "2026-12-01T10:00:00.000Z", **changes})


def parked(by: str = "order-o-1") -> ParkedOrder:
    return ParkedOrder(order=parse_order(ORDER), parked_by=by)


# -- names ------------------------------------------------------------------------------------------------


def test_each_park_episode_is_resumed_under_the_next_name():
    # GIVEN the first execution of an order, then its first and its 41st resumption
    # WHEN each parks the order THEN the resumption is named after the episode it resumes
    assert resume_execution_name("order-o-1", "o-1") == "r1-o-1"
    assert resume_execution_name("r1-o-1", "o-1") == "r2-o-1"
    assert resume_execution_name("r41-o-1", "o-1") == "r42-o-1"


def test_an_order_id_that_looks_like_a_resumption_is_still_read_by_the_order_it_names():
    # GIVEN an order whose id itself starts like a resumption's name
    assert episode_of("order-r7-x", "r7-x") == 0
    assert episode_of("r2-r7-x", "r7-x") == 2
    assert resume_execution_name("r2-r7-x", "r7-x") == "r3-r7-x"


@pytest.mark.parametrize("execution", ["order-o-2", "manual-o-1", "r0-o-1", "r01-o-1", "r-o-1", "rx-o-1", "o-1",
                                        "order-o-1\n", "r1-o-1 "])
def test_a_name_the_workflow_does_not_give_the_order_cannot_be_resumed_automatically(execution):
    # GIVEN an execution name that is neither order-<id> nor r<n>-<id> for this order
    # WHEN its episode is asked for THEN the error names it and says what to do
    with pytest.raises(InvalidParkedMessage, match="start its resumption by hand"):
        episode_of(execution, "o-1")


@given(order_id=ORDER_IDS, episode=st.integers(min_value=0, max_value=9_998))
def test_every_resumption_name_of_every_order_is_one_step_functions_takes_and_cloudwatch_can_show(order_id, episode):
    # GIVEN any order id the workflow accepts (1-74 characters) and any episode up to 9,998
    parked_by = f"order-{order_id}" if episode == 0 else f"r{episode}-{order_id}"
    # WHEN the episode's resumption is named
    name = resume_execution_name(parked_by, order_id)
    # THEN the name is valid, as the order's first execution's is, distinct from the parker's, and names the next
    # episode of the same order
    assert is_valid_execution_name(name), name
    assert is_valid_execution_name(execution_name(order_id))
    assert name != parked_by
    assert episode_of(name, order_id) == episode + 1


def test_the_longest_order_id_runs_out_of_names_after_9999_resumptions_and_says_so():
    order_id = "x" * 74
    assert len(resume_execution_name(f"r9998-{order_id}", order_id)) == 80
    with pytest.raises(NoExecutionNameLeft, match="past Step Functions' 80"):
        resume_execution_name(f"r9999-{order_id}", order_id)


def test_the_name_check_refuses_what_step_functions_or_cloudwatch_would():
    assert is_valid_execution_name("r1-" + "x" * 77)
    for bad in ["", "x" * 81, "has space", "a/b", "a:b", "é", "line\n", None, 7]:
        assert not is_valid_execution_name(bad), bad


# -- messages ---------------------------------------------------------------------------------------------


def test_a_parked_message_is_read_with_its_order_and_the_execution_that_parked_it():
    message = parse_parked_message(a_message())
    assert (message.order.order_id, message.parked_by, message.reason) == ("o-1", "order-o-1", "circuit_breaker_open")
    assert message.parked_at == "2026-12-01T10:00:00.000Z"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "the body is not JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        (a_message(amount="-1.00"), "the parked order is invalid: amount must be a decimal string"),
        (a_message(order_id="has space"), "the parked order is invalid: order_id"),
        (a_message(execution=None), "execution .* must be a name, got None"),
        (a_message(execution="order-another"), "not a name the payment workflow gives order 'o-1'"),
        (None, "the body is not JSON"),
    ],
)
def test_a_message_that_holds_no_parked_order_is_refused_saying_why(body, message):
    with pytest.raises(InvalidParkedMessage, match=message):
        parse_parked_message(body)


def test_the_resumption_input_is_the_order_in_the_starters_shape_and_what_it_resumes():
    assert resume_input(parked("r3-o-1")) == {**parse_order(ORDER).to_input(), "resume_of": "r3-o-1"}


# -- decisions --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "action", "reason"),
    [
        (OrderRecord("parked", "order-o-1"), Action.RESUME, "parked"),
        (OrderRecord("paid", "order-o-1"), Action.DROP, "already_paid"),
        (OrderRecord("paid", "r1-o-1"), Action.DROP, "already_paid"),
        (OrderRecord("cancelled", "order-o-1"), Action.DROP, "already_cancelled"),
        # a later episode holds the order, or this episode's resumption has already taken it up
        (OrderRecord("parked", "r1-o-1"), Action.DROP, "superseded"),
        (OrderRecord("pending", "r1-o-1"), Action.DROP, "superseded"),
        # MarkParked has not landed: is the parker still running?
        (OrderRecord("pending", "order-o-1"), Action.CHECK_PARKER, "not_yet_marked_parked"),
        (None, Action.DEAD_LETTER, "unknown_order"),
        (OrderRecord("refunded", "order-o-1"), Action.DEAD_LETTER, "unexpected_status:refunded"),
    ],
)
def test_what_becomes_of_a_parked_message_depends_on_what_the_orders_table_says(record, action, reason):
    decision = decide(parked(), record)
    assert (decision.action, decision.reason) == (action, reason)
    assert decision.execution_name == ("r1-o-1" if action is Action.RESUME else None)


def test_a_pending_order_waits_while_its_parker_runs_and_is_resumed_once_it_ended_unmarked():
    record = OrderRecord("pending", "order-o-1")
    assert decide(parked(), record, parker_running=True).action is Action.WAIT
    resumed = decide(parked(), record, parker_running=False)
    assert (resumed.action, resumed.reason, resumed.execution_name) == (
        Action.RESUME, "parker_ended_before_marking_it_parked", "r1-o-1")


def test_an_order_with_no_name_left_goes_to_a_person():
    order_id = "x" * 74
    message = ParkedOrder(order=parse_order({**ORDER, "order_id": order_id}), parked_by=f"r9999-{order_id}")
    decision = decide(message, OrderRecord("parked", f"r9999-{order_id}"))
    assert (decision.action, decision.reason) == (Action.DEAD_LETTER, "no_execution_name_left")


def test_an_order_record_is_read_from_plain_values_and_ignores_what_is_not_text():
    assert OrderRecord.from_item({"status": "parked", "execution": "order-o-1", "resume_execution": "r1-o-1",
                                  "amount": 12}) == OrderRecord("parked", "order-o-1", "r1-o-1")
    assert OrderRecord.from_item({"status": 3}) == OrderRecord(None, None, None)


# -- pace -------------------------------------------------------------------------------------------------

NOW = 1_000_000.0


@pytest.mark.parametrize(
    ("state", "allowed"),
    [
        (BreakerState(), (29, "closed")),
        (BreakerState(status=BreakerStatus.OPEN, opened_at=NOW - 10, open_until=NOW + 20), (0, "open")),
        (BreakerState(status=BreakerStatus.OPEN, opened_at=NOW - 40, open_until=NOW - 10), (1, "due_a_probe")),
        (BreakerState(status=BreakerStatus.HALF_OPEN, opened_at=NOW - 60, open_until=NOW - 30, probe_owner="x",
                      probe_expires_at=NOW + 5), (0, "probing")),
        (BreakerState(status=BreakerStatus.HALF_OPEN, opened_at=NOW - 60, open_until=NOW - 30, probe_owner="x",
                      probe_expires_at=NOW - 5), (1, "due_a_probe")),
    ],
    ids=["closed", "open", "open-past-open-until", "half-open-probing", "half-open-probe-lapsed"],
)
def test_a_run_resumes_its_share_when_the_breaker_is_closed_one_probe_when_it_is_due_and_none_otherwise(
    state, allowed
):
    assert resumes_allowed(state, NOW, per_run=29) == allowed



# -- the resumer's event ----------------------------------------------------------------------------------

RESUMER_ENVIRONMENT = {
    "PARKED_ORDERS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/parked",
    "PARKED_ORDERS_DLQ_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/parked-dlq",
    "ORDERS_TABLE_NAME": "orders",
    "BREAKER_TABLE_NAME": "breakers",
    "BREAKER_NAME": "payment_gateway",
    "PAYMENT_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:payments",
    "RESUMES_PER_RUN": "29",
    "POWERTOOLS_SERVICE_NAME": "parked-order-resumer",
    "POWERTOOLS_METRICS_NAMESPACE": "Test",
}


@pytest.fixture(scope="module")
def resumer(import_handler):
    # Only Powertools' own variables: its logger and metrics read their service and namespace at import.
    return import_handler("handlers.resume_parked_orders", {name: value for name, value in RESUMER_ENVIRONMENT.items()
                                                            if name.startswith("POWERTOOLS_")})


@pytest.fixture(scope="module")
def resumer_deps(resumer):
    """The resumer's dependencies in the test environment (boto3 clients are created, never called)."""
    return resumer.build_dependencies(RESUMER_ENVIRONMENT)


def test_a_scheduled_run_resumes_the_scheduled_share_and_an_operator_may_ask_for_fewer(resumer, resumer_deps):
    per_run = resumer_deps.resumes_per_run
    assert resumer.requested_per_run({"source": "aws.events", "detail-type": "Scheduled Event"}, per_run) == 29
    assert resumer.requested_per_run({"max_orders": 1}, per_run) == 1
    assert resumer_deps.execution_arn_prefix == "arn:aws:states:us-east-1:123456789012:execution:payments"


@pytest.mark.parametrize("max_orders", [0, 30, -1, 2.5, "5", True, None])
def test_an_operator_asking_for_what_a_run_cannot_do_is_refused_saying_what_it_may_ask(resumer, resumer_deps,
                                                                                       max_orders):
    with pytest.raises(resumer.InvalidRun, match=r"max_orders must be a whole number from 1 to 29 .* got "):
        resumer.requested_per_run({"max_orders": max_orders}, resumer_deps.resumes_per_run)
