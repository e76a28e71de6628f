"""The API's contracts, read from the synthesized template: its models agree with the parsers behind them,
and its mapping templates, rendered by a Velocity engine, produce what the services take and answer
what clients are promised, for the awkward inputs as well as the plain ones.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aws_cdk.assertions import Template
from hypothesis import given, settings
from hypothesis import strategies as st

from legacy import records as legacy_records
from localcloud.emulator.api_gateway import ecma_regex, model_validator, render_template
from payments.orders import InvalidOrder, parse_order

STATE_MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:Payments"
TABLE = "OrdersTable"


@pytest.fixture(scope="module")
def ingress(dev_assembly) -> dict[str, Any]:
    stacks, _ = dev_assembly
    return Template.from_stack(stacks["ingress"]).to_json()["Resources"]


def _filled(value: Any, token: str) -> str:
    """A template string with CloudFormation's tokens (one ARN or name each) replaced by `token`."""
    if isinstance(value, str):
        return value
    return "".join(p if isinstance(p, str) else token for p in value["Fn::Join"][1])


def _with_key_ids(value: Any, token: str) -> tuple[str, dict[str, str]]:
    """A template with each API key's `Ref` replaced by the key's logical id (as its id) and any other token
    by `token`; and client name -> the id its key got here."""
    if isinstance(value, str):
        return value, {}
    parts = value["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else p.get("Ref", token) if "Key" in str(p.get("Ref", "")) else token
                   for p in parts)
    clients = dict(re.findall(r'apiKeyId == "([^"]+)"\)#set\(\$tenant = "([^"]+)"\)', text))
    return text, {client: key_id for key_id, client in clients.items()}


def _method(resources: dict[str, Any], operation: str) -> dict[str, Any]:
    (method,) = [r["Properties"] for r in resources.values()
                 if r["Type"] == "AWS::ApiGateway::Method" and r["Properties"].get("OperationName") == operation]
    return method


def _model(resources: dict[str, Any], name: str) -> jsonschema.Draft4Validator:
    (schema,) = [r["Properties"]["Schema"] for r in resources.values()
                 if r["Type"] == "AWS::ApiGateway::Model" and r["Properties"]["Name"] == name]
    return model_validator(json.loads(json.dumps(schema), parse_float=Decimal))


def _context() -> dict[str, Any]:
    return {"requestId": "req-1", "responseOverride": {"header": {}}, "identity": {}}


def _render(template: str, body: Any, context: dict[str, Any] | None = None, path: dict | None = None) -> str:
    raw = body if isinstance(body, str) else json.dumps(body)
    return render_template(template, body=raw, params={"path": path or {}, "querystring": {}, "header": {}},
                           context=context if context is not None else _context())


VALID_ORDER = {"order_id": "ord-1", "customer_id": "c-1", "amount": "12.50", "currency": "EUR",
               "items": [{"sku": "sku-1", "quantity": 2}]}

ORDERS = [
    VALID_ORDER,
    {**VALID_ORDER, "amount": "1000000.00"},
    {**VALID_ORDER, "amount": "0.01"},
    {**VALID_ORDER, "amount": "19.99"},
    {**VALID_ORDER, "customer_id": "Zoë O'Brien \"VIP\" / <b>"},
    {**VALID_ORDER, "amount": "0.00"},
    {**VALID_ORDER, "amount": "-5.00"},
    {**VALID_ORDER, "amount": "1000000.01"},
    {**VALID_ORDER, "amount": "10.001"},
    {**VALID_ORDER, "amount": "19.9"},
    {**VALID_ORDER, "amount": 19.99},
    {**VALID_ORDER, "amount": True},
    {**VALID_ORDER, "currency": "eur"},
    {**VALID_ORDER, "customer_id": "   "},
    {**VALID_ORDER, "customer_id": "x" * 129},
    {**VALID_ORDER, "order_id": "x" * 75},
    {**VALID_ORDER, "order_id": "a/b"},
    {**VALID_ORDER, "items": []},
    {**VALID_ORDER, "items": [{"sku": "s", "quantity": 1}] * 101},
    {**VALID_ORDER, "items": [{"sku": "sku 1", "quantity": 1}]},
    {**VALID_ORDER, "items": [{"sku": "sku-1", "quantity": 0}]},
    {**VALID_ORDER, "items": [{"sku": "sku-1", "quantity": 1.5}]},
    {**VALID_ORDER, "items": [{"sku": "sku-1", "quantity": 10001}]},
    {k: v for k, v in VALID_ORDER.items() if k != "currency"},
]


@pytest.mark.parametrize("order", ORDERS, ids=range(len(ORDERS)))
def test_the_order_model_and_the_workflow_s_parser_agree(ingress, order):
    # An order the gateway lets through is one the authorizer accepts, and a refused one is refused by both
    document = json.loads(json.dumps(order), parse_float=Decimal)
    gateway_accepts = _model(ingress, "PaymentOrder").is_valid(document)
    try:
        parse_order(order)
        parser_accepts = True
    except InvalidOrder:
        parser_accepts = False
    assert gateway_accepts == parser_accepts


def test_where_the_model_is_stricter_than_the_parser_it_says_so(ingress):
    # The parser ignores unknown keys (the workflow adds its own as it goes); the API does not, so the
    # workflow's input is exactly the order, and clients learn of a typo at once.
    model = _model(ingress, "PaymentOrder")
    lenient = {**VALID_ORDER, "coupon": "FREE"}
    parse_order(lenient)
    assert not model.is_valid(json.loads(json.dumps(lenient), parse_float=Decimal))


def _accepted(ingress, amount: Any) -> tuple[bool, bool]:
    """(the model accepts it, the workflow's parser accepts it) for an order of `amount`."""
    order = {**VALID_ORDER, "amount": amount}
    gateway_accepts = _model(ingress, "PaymentOrder").is_valid(json.loads(json.dumps(order), parse_float=Decimal))
    try:
        parse_order(order)
        return gateway_accepts, True
    except InvalidOrder:
        return gateway_accepts, False


CANDIDATE_AMOUNTS = st.one_of(
    st.integers(min_value=0, max_value=100_000_100).map(lambda cents: f"{cents // 100}.{cents % 100:02d}"),
    st.from_regex(r"[-+ 0]?[0-9]{0,8}(\.[0-9]{0,3})?(e[0-9])?\n?", fullmatch=True),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.text(alphabet="0123456789.-e\n ", max_size=12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(),
    st.booleans(),
    st.none(),
)


@settings(max_examples=400, deadline=None)
@given(amount=CANDIDATE_AMOUNTS)
def test_the_model_and_the_parser_accept_exactly_the_same_amounts(ingress, amount):
    # GIVEN any candidate amount: prices, near misses (three decimals, signs, exponents, a final newline),
    # numbers as JSON numbers, text
    # WHEN an order carries it
    # THEN the API's model and the workflow's parser agree on it, both ways
    gateway_accepts, parser_accepts = _accepted(ingress, amount)
    assert gateway_accepts == parser_accepts


@given(cents=st.integers(min_value=1, max_value=100_000_000))
def test_every_price_from_a_cent_to_a_million_is_taken_exactly(ingress, cents):
    # GIVEN any price in cents within the limits, written as the API takes it ("0.07", "19.99", "1.13")
    amount = f"{cents // 100}.{cents % 100:02d}"
    # THEN the model and the parser take it, and the parser's value is exactly that many cents
    assert _accepted(ingress, amount) == (True, True)
    assert parse_order({**VALID_ORDER, "amount": amount}).amount * 100 == cents
    # AND so does the model when its validator reads numbers as binary floats (as some do): no
    # arithmetic is left for it to get wrong
    (schema,) = [r["Properties"]["Schema"] for r in ingress.values()
                 if r["Type"] == "AWS::ApiGateway::Model" and r["Properties"]["Name"] == "PaymentOrder"]
    assert model_validator(json.loads(json.dumps(schema))).is_valid({**VALID_ORDER, "amount": amount})


def test_every_pattern_in_the_models_is_one_the_emulator_reads_as_ecma_262(ingress):
    # A pattern with ECMA-262 syntax Python cannot carry would be refused here, not guessed at on the emulator
    patterns = []

    def collect(schema: Any) -> None:
        if isinstance(schema, dict):
            if isinstance(schema.get("pattern"), str):
                patterns.append(schema["pattern"])
            for value in schema.values():
                collect(value)
        elif isinstance(schema, list):
            for value in schema:
                collect(value)

    for resource in ingress.values():
        if resource["Type"] == "AWS::ApiGateway::Model":
            collect(resource["Properties"]["Schema"])
    assert len(patterns) >= 5
    for pattern in patterns:
        ecma_regex(pattern)


def test_every_record_the_model_accepts_the_consumer_accepts(ingress):
    consumer = legacy_records
    model = _model(ingress, "LegacyRecord")
    records = [{"record_id": "r-1", "payload": {}}, {"record_id": "R:1.2_3-4", "payload": {"a": [1, "b"]}},
               {"record_id": "", "payload": {}}, {"record_id": "r 1", "payload": {}}, {"record_id": "r-1"},
               {"record_id": "r-1", "payload": "text"}, {"record_id": 7, "payload": {}}]
    accepted = [r for r in records if model.is_valid(r)]
    assert len(accepted) == 2
    for record in accepted:
        assert consumer.parse_record(json.dumps(record)).record_id == record["record_id"]


def _nested(depth: int) -> dict[str, Any]:
    """A payload `depth` levels deep (the payload object is level 1), alternating objects and arrays."""
    value: Any = "leaf"
    for level in range(depth - 1):
        value = [value, 1] if level % 2 else {"k": value, "n": None}
    return {"v": value}


@pytest.mark.parametrize("depth", [1, 2, 7, 8, 9, 12], ids=lambda d: f"depth-{d}")
def test_the_model_and_the_consumer_bound_the_payload_s_nesting_alike(ingress, depth):
    # GIVEN a record whose payload nests `depth` levels, through objects and arrays
    record = {"record_id": "r-1", "payload": _nested(depth)}
    # WHEN the API's model and the consumer judge it
    gateway_accepts = _model(ingress, "LegacyRecord").is_valid(record)
    try:
        legacy_records.parse_record(json.dumps(record))
        consumer_accepts = True
    except legacy_records.PoisonRecord:
        consumer_accepts = False
    # THEN they agree, and both draw the line at the consumer's MAX_PAYLOAD_DEPTH
    assert gateway_accepts == consumer_accepts == (depth <= legacy_records.MAX_PAYLOAD_DEPTH)


def test_the_model_states_the_consumer_s_record_contract(ingress):
    from stacks.ingress_stack import LEGACY_PAYLOAD_MAX_DEPTH

    consumer = legacy_records
    (schema,) = [r["Properties"]["Schema"] for r in ingress.values()
                 if r["Type"] == "AWS::ApiGateway::Model" and r["Properties"]["Name"] == "LegacyRecord"]
    # The id pattern is the consumer's, anchored at both ends (ECMA-262's `$` is the very end: no trailing newline)
    assert schema["properties"]["record_id"]["pattern"] == f"^{consumer.RECORD_ID_PATTERN}$"
    assert LEGACY_PAYLOAD_MAX_DEPTH == consumer.MAX_PAYLOAD_DEPTH
    # And both refuse what the mainframe's header cannot carry: an emoji, a newline inside or at the end, too long
    model = _model(ingress, "LegacyRecord")
    for record_id in ("r-\U0001F600", "r-\n1", "r-1\n", "x" * 129, "r/1"):
        record = {"record_id": record_id, "payload": {}}
        assert not model.is_valid(record), record_id
        with pytest.raises(consumer.PoisonRecord):
            consumer.parse_record(json.dumps(record))


@pytest.mark.parametrize("order", [o for o in ORDERS[:5]], ids=range(5))
def test_start_payment_renders_json_naming_the_execution_after_the_order(ingress, order):
    integration = _method(ingress, "StartPayment")["Integration"]
    template, key_ids = _with_key_ids(integration["RequestTemplates"]["application/json"], STATE_MACHINE_ARN)
    context = {**_context(), "identity": {"apiKeyId": key_ids["example-partner-client"]}}
    rendered = json.loads(_render(template, order, context))
    assert rendered["stateMachineArn"] == STATE_MACHINE_ARN
    assert rendered["name"] == f"order-{order['order_id']}"
    # The input is the body itself, quotes, apostrophes, slashes and non-ASCII included, with the key's client
    # as its tenant, first
    assert json.loads(rendered["input"]) == {"tenant": "example-partner-client", **order}
    assert rendered["input"].startswith('{"tenant":"example-partner-client",')


def test_every_client_s_key_names_its_tenant_and_any_other_key_the_default_tenant(ingress):
    integration = _method(ingress, "StartPayment")["Integration"]
    template, key_ids = _with_key_ids(integration["RequestTemplates"]["application/json"], STATE_MACHINE_ARN)
    # GIVEN the stage's clients, one key each
    assert set(key_ids) == {"example-free-client", "example-standard-client", "example-partner-client"}
    for client, key_id in [*key_ids.items(), ("default", "a-key-made-in-the-console")]:
        # WHEN a payment comes with that key THEN the workflow's input names the key's client, or the default tenant
        context = {**_context(), "identity": {"apiKeyId": key_id}}
        rendered = json.loads(_render(template, VALID_ORDER, context))
        assert json.loads(rendered["input"])["tenant"] == client


@pytest.mark.parametrize(
    ("service_answer", "status", "client_status", "retry_after"),
    [
        ({"__type": "com.amazonaws.swf.service.v2.model#ExecutionAlreadyExists", "message": "exists"}, 400,
         200, None),
        ({"__type": "com.amazonaws.swf.service.v2.model#ThrottlingException", "message": "slow down"}, 400, 503, "1"),
        ({"__type": "com.amazonaws.swf.service.v2.model#ExecutionLimitExceeded", "message": "full"}, 400, 503, "1"),
        ({"__type": "com.amazonaws.swf.service.v2.model#KmsThrottlingException", "message": "kms"}, 400, 503, "1"),
        ({"__type": "com.amazonaws.swf.service.v2.model#InvalidName", "message": "bad"}, 400, 500, None),
    ],
    ids=["repeat", "throttled", "open-executions-quota", "kms-throttled", "our-mistake"],
)
def test_start_payment_refusals_become_what_the_client_can_act_on(ingress, service_answer, status, client_status,
                                                                  retry_after):
    integration = _method(ingress, "StartPayment")["Integration"]
    (refused,) = [r for r in integration["IntegrationResponses"] if r.get("SelectionPattern") == "4\\d{2}"]
    context = _context()
    body = json.loads(_render(refused["ResponseTemplates"]["application/json"], service_answer, context))
    assert (context["responseOverride"].get("status") or int(refused["StatusCode"])) == client_status
    assert context["responseOverride"]["header"].get("Retry-After") == retry_after
    assert body["request_id"] == "req-1"


def test_get_payment_renders_the_order_nulls_what_is_missing_and_404s_what_is_not_there(ingress):
    integration = _method(ingress, "GetPayment")["Integration"]
    request = json.loads(_render(_filled(integration["RequestTemplates"]["application/json"], TABLE), "",
                                 path={"id": 'o"1'}))
    assert request["TableName"] == TABLE and request["Key"] == {"pk": {"S": 'o"1'}}
    (found,) = [r for r in integration["IntegrationResponses"] if r["StatusCode"] == "200"]
    template = found["ResponseTemplates"]["application/json"]
    item = {"pk": {"S": "o1"}, "status": {"S": "cancelled"}, "amount": {"S": "12.50"}, "currency": {"S": "EUR"},
            "cancel_reason": {"S": "declined: \"do not honor\""}, "created_at": {"S": "t0"}, "updated_at": {"S": "t1"}}
    order = json.loads(_render(template, {"Item": item}, path={"id": "o1"}))
    assert order == {"order_id": "o1", "status": "cancelled", "amount": "12.50", "currency": "EUR",
                     "authorization_id": None, "parked_reason": None, "cancel_reason": 'declined: "do not honor"',
                     "created_at": "t0", "updated_at": "t1"}
    context = _context()
    missing = json.loads(_render(template, {}, context, path={"id": "o2"}))
    assert context["responseOverride"]["status"] == 404 and missing["order_id"] == "o2"


def test_a_legacy_record_is_queued_byte_for_byte_with_the_request_id_alongside(ingress):
    integration = _method(ingress, "QueueLegacyRecord")["Integration"]
    body = json.dumps({"record_id": "r-1", "payload": {"note": "a&b=c + d % é"}})
    template, key_ids = _with_key_ids(integration["RequestTemplates"]["application/json"], "unused")
    context = {**_context(), "identity": {"apiKeyId": key_ids["example-free-client"]}}
    rendered = _render(template, body, context)
    # The form is the whole body: the tenant's VTL leaves no line behind it
    assert rendered.startswith("Action=SendMessage&")
    form = urllib.parse.parse_qs(rendered.strip(), strict_parsing=True)
    assert form["Action"] == ["SendMessage"]
    # The tenant (the key's client) is the message's group: the queue is fair between tenants
    assert form["MessageGroupId"] == ["example-free-client"]
    assert form["MessageBody"] == [body]
    assert (form["MessageAttribute.1.Name"], form["MessageAttribute.1.Value.StringValue"]) == (["correlation_id"],
                                                                                                ["req-1"])


def readme_route_answers(readme: str) -> dict[str, set[str]]:
    """Route -> the statuses the README's API table says it answers."""
    section = readme.split("## The API (ingress)", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| `")]
    return {row[1].strip().strip("`"): set(re.findall(r"\b[1-5][0-9]{2}\b", row[3])) for row in rows}


def test_the_readme_states_every_answer_each_route_can_give_and_no_other(ingress):
    # The routes' own answers (not the door's 400/403/429, which the README tabulates apart) as the
    # methods declare them, against the README's table: a repeat's 202 or a throttle's 503 documented
    # as something else, or not at all, fails here.
    routes = {"StartPayment": "POST /payments", "GetPayment": "GET /payments/{id}",
              "QueueLegacyRecord": "POST /legacy-records"}
    declared = {route: {r["StatusCode"] for r in _method(ingress, operation)["MethodResponses"]}
                for operation, route in routes.items()}
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert readme_route_answers(readme) == declared


def test_the_readme_guard_catches_an_answer_left_out():
    # GIVEN the API table as it was: POST /payments said nothing of 500 and 503
    table = """## The API (ingress)

| route | integration | answers |
|---|---|---|
| `POST /payments` | Step Functions | 202 accepted; 200 `already_accepted` for a repeat; 429 if Step Functions throttles |

Every route needs an API key."""
    # THEN the guard reads exactly what it says, which differs from the method's 202, 200, 500 and 503
    assert readme_route_answers(table) == {"POST /payments": {"202", "200", "429"}}
