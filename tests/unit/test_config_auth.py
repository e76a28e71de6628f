"""`downstreams.<name>.auth`: the two kinds of credentials a downstream may take, and what a mistake in it says."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from stacks.config import ConfigError, DownstreamAuth, load_config
from throttling.core.credentials import AuthSettings


@pytest.fixture
def stages(cdk_stages: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(cdk_stages)


def with_auth(stages: dict[str, Any], auth: Any) -> dict[str, Any]:
    stages["dev"]["downstreams"]["crm"]["auth"] = auth
    return stages


def test_the_dev_stage_authenticates_the_ledger_with_a_key_and_messaging_with_oauth2(stages):
    config = load_config(stages)
    # THEN the two are configured with their defaults where cdk.json says nothing, and the others take no credentials
    assert config.downstream("ledger").auth == DownstreamAuth(kind="api_key", header="x-api-key")
    assert config.downstream("messaging").auth == DownstreamAuth(kind="oauth2_client_credentials",
                                                                 token_path="/oauth2/token", scope="messages:send")
    assert config.downstream("crm").auth is None


def test_what_the_stack_hands_the_caller_is_what_the_caller_reads(stages):
    # GIVEN every kind, with and without its optional keys
    for auth in ({"kind": "api_key"}, {"kind": "api_key", "header": "Authorization", "secret_cache_sec": 0},
                 {"kind": "oauth2_client_credentials", "scope": "read write", "token_path": "/token"}):
        configured = load_config(with_auth(copy.deepcopy(stages), auth)).downstream("crm").auth
        # THEN the Lambda side parses the document into the same settings, which say how to send, never what
        read = AuthSettings.from_document(configured.document())
        assert (read.kind, read.secret_cache_sec) == (configured.kind, configured.secret_cache_sec)
        assert (read.header if read.kind == "api_key" else (read.token_path, read.scope)) == (
            configured.header if configured.kind == "api_key" else (configured.token_path, configured.scope))
        assert set(json.loads(configured.document())) <= {"kind", "header", "token_path", "scope", "secret_cache_sec"}


@pytest.mark.parametrize(("auth", "message"), [
    ("api_key", "stages.dev.downstreams.crm.auth must be an object such as {\"kind\": \"api_key\"}, got 'api_key'"),
    ({"kind": "basic"}, "stages.dev.downstreams.crm.auth.kind must be one of ['api_key', 'oauth2_client_credentials'],"
                        " got 'basic'"),
    ({"kind": "api_key", "token_path": "/token"},
     "stages.dev.downstreams.crm.auth has keys ['token_path'] that a 'api_key' auth does not take; it takes"
     " ['header', 'kind', 'secret_cache_sec', 'secret_name']"),
    ({"kind": "api_key", "header": "x api key"},
     "stages.dev.downstreams.crm.auth.header must be an HTTP header name such as 'x-api-key', got 'x api key'"),
    ({"kind": "oauth2_client_credentials", "token_path": "token"},
     "stages.dev.downstreams.crm.auth.token_path must be a path such as '/oauth2/token', got 'token'"),
    ({"kind": "api_key", "secret_name": "my secret"},
     "stages.dev.downstreams.crm.auth.secret_name must be a Secrets Manager secret name such as 'crm/api-key',"
     " got 'my secret'"),
    ({"kind": "api_key", "secret_cache_sec": 7200},
     "stages.dev.downstreams.crm.auth.secret_cache_sec must be an integer in [0, 3600], got 7200"),
])
def test_a_bad_auth_setting_fails_synth_naming_the_key_and_the_value(stages, auth, message):
    with pytest.raises(ConfigError) as raised:
        load_config(with_auth(stages, auth))
    assert str(raised.value) == message
