"""A downstream's credentials: how it takes them, what its secret must hold, and when an access token is stale.

Pure: the secret's value comes from Secrets Manager (`throttling.adapters.secrets`) and the token from
the downstream's token endpoint (`throttling.runtime.credentials`). No message here ever carries a
credential: errors name the secret's keys, never their values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from throttling.core import names

__all__ = ["AccessToken", "AuthSettings", "InvalidCredentials", "api_key_header", "client_credentials",
           "parse_token_response"]

# A token is renewed this long before it expires (at most, and at most a tenth of its life), so a call
# never leaves with a token that expires on its way.
TOKEN_RENEWAL_MARGIN_SEC = 60.0


class InvalidCredentials(ValueError):
    """The secret or the token endpoint's answer is not what the auth setting needs; says what is missing."""


@dataclass(frozen=True)
class AuthSettings:
    """How a downstream takes its credentials: `stacks.config.DownstreamAuth` as the caller's environment holds it.

    :param kind: `names.AUTH_API_KEY` or `names.AUTH_OAUTH2_CLIENT_CREDENTIALS`.
    :param header: the API key's header (api_key).
    :param token_path: the token endpoint's path under the downstream's base URL (oauth2).
    :param scope: the scope to ask for, or None (oauth2).
    :param secret_cache_sec: how long the secret is kept before it is read again.
    """

    kind: str
    header: str = "x-api-key"
    token_path: str = "/oauth2/token"
    scope: str | None = None
    secret_cache_sec: int = 300

    @classmethod
    def from_document(cls, text: str) -> AuthSettings:
        try:
            document = json.loads(text)
        except ValueError as error:
            raise InvalidCredentials(f"{names.ENV_DOWNSTREAM_AUTH} is not JSON ({error}); redeploy the stack") from None
        if not isinstance(document, Mapping) or document.get(names.AUTH_FIELD_KIND) not in names.AUTH_KINDS:
            raise InvalidCredentials(f"{names.ENV_DOWNSTREAM_AUTH} must name a kind among {list(names.AUTH_KINDS)},"
                                     f" got {document!r}; redeploy the stack")
        return cls(
            kind=document[names.AUTH_FIELD_KIND],
            header=str(document.get(names.AUTH_FIELD_HEADER, cls.header)),
            token_path=str(document.get(names.AUTH_FIELD_TOKEN_PATH, cls.token_path)),
            scope=document.get(names.AUTH_FIELD_SCOPE),
            secret_cache_sec=int(document.get(names.AUTH_FIELD_SECRET_CACHE_SEC, cls.secret_cache_sec)),
        )


def _required_text(secret: Any, keys: tuple[str, ...], secret_id: str) -> tuple[str, ...]:
    if not isinstance(secret, Mapping):
        raise InvalidCredentials(f"secret {secret_id} must be a JSON object with {list(keys)}; put one with"
                                 f" `aws secretsmanager put-secret-value --secret-id {secret_id}`")
    missing = [key for key in keys if not (isinstance(secret.get(key), str) and secret[key])]
    if missing:
        raise InvalidCredentials(f"secret {secret_id} has no non-empty text under {missing} (it has {sorted(secret)});"
                                 f" put them with `aws secretsmanager put-secret-value --secret-id {secret_id}`")
    return tuple(secret[key] for key in keys)


def api_key_header(settings: AuthSettings, secret: Any, secret_id: str) -> dict[str, str]:
    """The header that carries the API key of a `{"api_key": ...}` secret."""
    (key,) = _required_text(secret, (names.SECRET_API_KEY,), secret_id)
    return {settings.header: key}


def client_credentials(secret: Any, secret_id: str) -> tuple[str, str]:
    """(client id, client secret) of a `{"client_id": ..., "client_secret": ...}` secret."""
    client_id, client_secret = _required_text(secret, (names.SECRET_CLIENT_ID, names.SECRET_CLIENT_SECRET), secret_id)
    return client_id, client_secret


@dataclass(frozen=True, repr=False)
class AccessToken:
    """A bearer token and when to stop using it (`renew_at`, on the caller's monotonic clock)."""

    value: str
    renew_at: float

    def is_fresh(self, now: float) -> bool:
        return now < self.renew_at

    def __repr__(self) -> str:  # a token in a log line or a traceback is a credential leaked
        return f"AccessToken(renew_at={self.renew_at!r})"


def parse_token_response(body: Any, now: float) -> AccessToken:
    """The token of a token endpoint's answer (RFC 6749 5.1), renewed a margin before `expires_in` runs out.

    Without `expires_in` the token is used until the downstream refuses it (the 401 renews it).
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
        keys = sorted(body) if isinstance(body, Mapping) else type(body).__name__
        raise InvalidCredentials(f"the token endpoint answered without an access_token (keys: {keys})")
    token_type = str(body.get("token_type", "Bearer"))
    if token_type.lower() != "bearer":
        raise InvalidCredentials(f"the token endpoint issued a {token_type!r} token; only Bearer tokens are sent")
    expires_in = body.get("expires_in")
    if expires_in is None:
        return AccessToken(body["access_token"], math.inf)
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not expires_in > 0:
        raise InvalidCredentials(f"the token endpoint's expires_in must be a number of seconds > 0, got {expires_in!r}")
    margin = min(TOKEN_RENEWAL_MARGIN_SEC, expires_in / 10)
    return AccessToken(body["access_token"], now + expires_in - margin)
