"""A downstream's credentials: the pure rules (core), the headers and their renewal (runtime), the caller's one
retry after a 401 (handler), and that no message or log line ever carries a credential."""

from __future__ import annotations

import base64
import io
import json
import logging
import urllib.error
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import pytest

from throttling.core import names
from throttling.core.credentials import (
    AccessToken,
    AuthSettings,
    InvalidCredentials,
    api_key_header,
    parse_token_response,
)
from throttling.runtime.credentials import DownstreamCredentials
from throttling.runtime.downstream_client import (
    DownstreamRejected,
    DownstreamResponse,
    DownstreamUnauthorized,
    DownstreamUnavailable,
)

API_KEY = "k3y-that-must-never-be-logged"
CLIENT_SECRET = "s3cret-that-must-never-be-logged"
SECRET_ID = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ledger-AbCdEf"
API_KEY_AUTH = AuthSettings(kind=names.AUTH_API_KEY, header="x-api-key")
OAUTH = AuthSettings(kind=names.AUTH_OAUTH2_CLIENT_CREDENTIALS, token_path="/oauth2/token", scope="messages:send")


@dataclass
class FakeSecret:
    """What Secrets Manager holds, and every read (`fresh` says the cache was bypassed)."""

    value: Any
    secret_id: str = SECRET_ID
    reads: list[bool] = field(default_factory=list)

    def read(self, *, fresh: bool = False) -> Any:
        self.reads.append(fresh)
        return self.value


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TokenEndpoint:
    """An opener standing in for the token endpoint: answers `status` with a token living `expires_in`."""

    def __init__(self, status: int = 200, expires_in: float = 600) -> None:
        self.status, self.expires_in, self.requests = status, expires_in, []

    def __call__(self, request: Any, timeout: float) -> Any:
        self.requests.append(request)
        if self.status != 200:
            raise urllib.error.HTTPError(request.full_url, self.status, "refused", {}, io.BytesIO(b'{"error":"x"}'))
        body = json.dumps({"access_token": f"token-{len(self.requests)}", "token_type": "Bearer",
                           "expires_in": self.expires_in}).encode()
        return _Answer(body)


@dataclass
class _Answer:
    body: bytes

    def read(self) -> bytes:
        return self.body

    def __enter__(self) -> _Answer:
        return self

    def __exit__(self, *_: Any) -> None:
        return None


def oauth_credentials(endpoint: TokenEndpoint, clock: FakeClock, secret: FakeSecret | None = None):
    secret = secret or FakeSecret({"client_id": "shop", "client_secret": CLIENT_SECRET})
    return DownstreamCredentials("messaging", "https://messaging.example.com", OAUTH, secret, timeout_sec=5,
                                 opener=endpoint, clock=clock), secret


# -- core -------------------------------------------------------------------------------------------


def test_an_auth_document_round_trips_from_the_environment():
    # GIVEN the document the stack puts in DOWNSTREAM_AUTH THEN the caller reads the same settings
    document = json.dumps({"kind": "oauth2_client_credentials", "token_path": "/token", "scope": "a b",
                           "secret_cache_sec": 30})
    assert AuthSettings.from_document(document) == AuthSettings(kind=names.AUTH_OAUTH2_CLIENT_CREDENTIALS,
                                                                token_path="/token", scope="a b", secret_cache_sec=30)
    with pytest.raises(InvalidCredentials, match="must name a kind among"):
        AuthSettings.from_document('{"kind": "password"}')


def test_a_secret_without_the_key_names_the_keys_it_has_never_their_values():
    # GIVEN an API key secret whose key is misspelled WHEN its header is built THEN the error says what to put
    with pytest.raises(InvalidCredentials) as raised:
        api_key_header(API_KEY_AUTH, {"apikey": API_KEY}, SECRET_ID)
    assert "['api_key']" in str(raised.value) and "['apikey']" in str(raised.value)
    assert f"put-secret-value --secret-id {SECRET_ID}" in str(raised.value)
    assert API_KEY not in str(raised.value)
    assert api_key_header(API_KEY_AUTH, {"api_key": API_KEY}, SECRET_ID) == {"x-api-key": API_KEY}


def test_a_token_is_renewed_a_margin_before_it_expires_and_never_shows_in_a_repr():
    # GIVEN token answers of 3600 s and 30 s THEN each is renewed 60 s (at most a tenth of its life) early
    assert parse_token_response({"access_token": "t", "expires_in": 3600}, now=100).renew_at == 100 + 3600 - 60
    assert parse_token_response({"access_token": "t", "expires_in": 30}, now=100).renew_at == 100 + 27
    assert not parse_token_response({"access_token": "t"}, now=100).renew_at < float("inf")
    assert "secret-token" not in repr(AccessToken("secret-token", 5.0))
    with pytest.raises(InvalidCredentials, match=r"without an access_token \(keys: \['error'\]\)"):
        parse_token_response({"error": "invalid_client"}, now=0)
    with pytest.raises(InvalidCredentials, match="only Bearer"):
        parse_token_response({"access_token": "t", "token_type": "mac"}, now=0)


# -- runtime ----------------------------------------------------------------------------------------


def test_an_api_key_is_read_through_the_cache_and_afresh_after_a_renewal():
    secret = FakeSecret({"api_key": API_KEY})
    credentials = DownstreamCredentials("ledger", "https://ledger.example.com", API_KEY_AUTH, secret, timeout_sec=5)
    # WHEN headers are asked twice, then once after renew()
    assert credentials.headers() == {"x-api-key": API_KEY}
    credentials.headers()
    credentials.renew()
    credentials.headers()
    # THEN only the read after the renewal bypassed the cache
    assert secret.reads == [False, False, True]


def test_one_oauth2_token_serves_every_call_until_its_renewal_time():
    endpoint, clock = TokenEndpoint(expires_in=600), FakeClock()
    credentials, _ = oauth_credentials(endpoint, clock)
    # WHEN three calls are made within the token's life
    headers = [credentials.headers() for _ in range(3)]
    # THEN one token was fetched, sent as a bearer token, with the client in HTTP Basic auth and the scope
    assert headers == [{"Authorization": "Bearer token-1"}] * 3 and credentials.tokens_fetched == 1
    (request,) = endpoint.requests
    assert request.full_url == "https://messaging.example.com/oauth2/token"
    assert base64.b64decode(request.get_header("Authorization").split()[1]).decode() == f"shop:{CLIENT_SECRET}"
    assert urllib.parse.parse_qs(request.data.decode()) == {"grant_type": ["client_credentials"],
                                                          "scope": ["messages:send"]}
    # WHEN the clock passes its renewal time (60 s before its 600 s run out)
    clock.now += 540
    # THEN the next call fetches a new one
    assert credentials.headers() == {"Authorization": "Bearer token-2"}


def test_a_renewal_drops_the_token_and_rereads_the_secret():
    endpoint, clock = TokenEndpoint(), FakeClock()
    credentials, secret = oauth_credentials(endpoint, clock)
    credentials.headers()
    # WHEN the downstream refused the token and the caller renews
    credentials.renew()
    # THEN the next call reads the secret past its cache and fetches a new token
    assert credentials.headers() == {"Authorization": "Bearer token-2"}
    assert secret.reads == [False, True]


@pytest.mark.parametrize(("status", "error"), [(401, DownstreamUnauthorized), (503, DownstreamUnavailable)])
def test_a_token_endpoint_refusal_is_unauthorized_and_its_failure_retryable(status, error):
    credentials, _ = oauth_credentials(TokenEndpoint(status=status), FakeClock())
    # WHEN the token endpoint answers `status` THEN the caller raises the error a workflow routes on, without the secret
    with pytest.raises(error) as raised:
        credentials.headers()
    assert CLIENT_SECRET not in str(raised.value) and raised.value.details["secret_id"] == SECRET_ID


# -- the caller's one retry after a 401 --------------------------------------------------------------


@dataclass
class FakeClient:
    """Answers each call from `statuses` in turn: 200 or a DownstreamRejected of that status."""

    statuses: list[int]
    sent_headers: list[dict[str, str]] = field(default_factory=list)

    def call(self, method: str, path: str, *, body: Any = None, headers: Any = None) -> DownstreamResponse:
        self.sent_headers.append(dict(headers))
        status = self.statuses.pop(0)
        if status != 200:
            raise DownstreamRejected({"downstream": "ledger", "status": status, "body": {"error": "unauthorized"}})
        return DownstreamResponse(status=200, body={}, latency_ms=1.0)


@pytest.fixture
def call_downstream():
    import handlers.call_downstream as module

    yield module
    module.metrics.clear_metrics()


def caller(module, statuses: list[int], secret: FakeSecret):
    credentials = DownstreamCredentials("ledger", "https://ledger.example.com", API_KEY_AUTH, secret, timeout_sec=5)
    client = FakeClient(statuses)
    deps = module.Dependencies(downstream="ledger", contract=None, tunables=None, gate=None, client=client,
                               credentials=credentials)
    return deps, client


def test_a_401_renews_the_credentials_once_and_calls_again_with_a_new_token(call_downstream, caplog):
    secret = FakeSecret({"api_key": API_KEY})
    deps, client = caller(call_downstream, [401, 200], secret)
    tokens = []
    # WHEN the first call is refused 401 and the second answered
    with caplog.at_level(logging.DEBUG):
        response = call_downstream.call_authenticated(deps, {"method": "POST", "path": "/ledger/entries"},
                                                      {"X-Correlation-Id": "c"}, lambda: tokens.append(1))
    # THEN the answer is the second call's, made after the secret was read afresh and another limiter token taken
    assert response.status == 200 and secret.reads == [False, True] and tokens == [1]
    assert [h["x-api-key"] for h in client.sent_headers] == [API_KEY, API_KEY]


def test_a_second_401_is_unauthorized_naming_the_secret_and_no_log_holds_the_key(call_downstream, capsys, caplog):
    secret = FakeSecret({"api_key": API_KEY})
    deps, client = caller(call_downstream, [401, 401], secret)
    # WHEN both calls are refused
    with caplog.at_level(logging.DEBUG), pytest.raises(DownstreamUnauthorized) as raised:
        call_downstream.call_authenticated(deps, {"method": "POST", "path": "/ledger/entries"}, {}, lambda: None)
    # THEN the error names the secret and how to fix it, and no third call was made
    assert raised.value.details["secret_id"] == SECRET_ID and len(client.sent_headers) == 2
    assert "put-secret-value" in raised.value.details["reason"]
    # AND neither the error nor anything logged holds the key
    printed = capsys.readouterr()
    assert API_KEY not in str(raised.value)
    assert API_KEY not in printed.out + printed.err + caplog.text
    assert "refused our credentials (401)" in printed.out + printed.err + caplog.text


def test_a_refusal_other_than_401_is_not_retried(call_downstream):
    secret = FakeSecret({"api_key": API_KEY})
    deps, client = caller(call_downstream, [403], secret)
    with pytest.raises(DownstreamRejected) as raised:
        call_downstream.call_authenticated(deps, {"path": "/x"}, {}, lambda: pytest.fail("no second token"))
    assert raised.value.details["status"] == 403 and secret.reads == [False]


@pytest.mark.parametrize("value", [{"apikey": API_KEY}, "not an object"])
def test_a_secret_of_the_wrong_shape_is_unauthorized_naming_what_to_put(value):
    credentials = DownstreamCredentials("ledger", "https://ledger.example.com", API_KEY_AUTH, FakeSecret(value),
                                        timeout_sec=5)
    # WHEN headers are asked of a secret without its api_key THEN the error a workflow routes on says what to put
    with pytest.raises(DownstreamUnauthorized) as raised:
        credentials.headers()
    assert "put-secret-value" in raised.value.details["reason"] and API_KEY not in str(raised.value)


def test_a_secret_that_cannot_be_read_is_unauthorized_naming_the_secret():
    from throttling.adapters.secrets import SecretUnavailable

    class Unreadable(FakeSecret):
        def read(self, *, fresh: bool = False) -> Any:
            raise SecretUnavailable(f"secret {SECRET_ID} could not be read (AccessDeniedException)")

    credentials = DownstreamCredentials("ledger", "https://ledger.example.com", API_KEY_AUTH, Unreadable(None),
                                        timeout_sec=5)
    with pytest.raises(DownstreamUnauthorized, match="AccessDeniedException"):
        credentials.headers()


def test_the_secret_reader_reads_json_through_powertools_and_says_which_secret_failed():
    import boto3
    from moto import mock_aws

    from throttling.adapters.secrets import SecretReader, SecretUnavailable

    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        arn = client.create_secret(Name="ledger", SecretString=json.dumps({"api_key": API_KEY}))["ARN"]
        reader = SecretReader(arn, max_age_sec=300, client=client)
        # GIVEN a JSON secret read once WHEN it is changed THEN the cache answers the old value, a fresh read the new
        assert reader.read() == {"api_key": API_KEY}
        client.put_secret_value(SecretId=arn, SecretString=json.dumps({"api_key": "rotated"}))
        assert reader.read() == {"api_key": API_KEY}
        assert reader.read(fresh=True) == {"api_key": "rotated"}
        # AND a secret that is not JSON, or that does not exist, fails naming the secret, not its text
        client.put_secret_value(SecretId=arn, SecretString=f"plain {API_KEY}")
        with pytest.raises(SecretUnavailable) as not_json:
            reader.read(fresh=True)
        assert "is not JSON" in str(not_json.value) and API_KEY not in str(not_json.value)
        with pytest.raises(SecretUnavailable, match=r"secret missing could not be read \(ResourceNotFoundException\)"):
            SecretReader("missing", max_age_sec=0, client=client).read()
