"""The headers that authenticate a caller to its downstream, from a secret, renewed once when the downstream says 401.

An API key is sent as the secret holds it. OAuth2 client credentials (RFC 6749 4.4) are exchanged at
the downstream's token endpoint for a bearer token, kept for this execution environment until a
margin before it expires (`throttling.core.credentials.parse_token_response`), so one token serves
every call meanwhile. `renew()` reads the secret again, bypassing the cache, and drops the token:
what a caller does once after a 401, since the credential may have been rotated. The token endpoint
is the third party's authorization server, not its rate-limited API: no limiter token is spent on it.
Nothing here logs a credential.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol

from throttling.adapters.secrets import SecretUnavailable
from throttling.core import names
from throttling.core.credentials import (
    AccessToken,
    AuthSettings,
    InvalidCredentials,
    api_key_header,
    client_credentials,
    parse_token_response,
)
from throttling.runtime.downstream_client import KEEP_ALIVE, DownstreamUnauthorized, DownstreamUnavailable, Opener

__all__ = ["Credentials", "DownstreamCredentials", "SecretSource"]


class SecretSource(Protocol):
    """What reads the secret (`throttling.adapters.secrets.SecretReader`)."""

    secret_id: str

    def read(self, *, fresh: bool = False) -> Any: ...


class Credentials(Protocol):
    """What a caller sends its downstream (`DownstreamCredentials`; tests pass their own)."""

    secret_id: str

    def headers(self) -> dict[str, str]: ...

    def renew(self) -> None: ...


class DownstreamCredentials:
    """The authentication headers of one downstream's calls; `opener` and `clock` are injectable."""

    def __init__(self, downstream: str, base_url: str, settings: AuthSettings, secret: SecretSource, *,
                 timeout_sec: float, opener: Opener = KEEP_ALIVE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.downstream = downstream
        self.settings = settings
        self.secret_id = secret.secret_id
        self._secret = secret
        self._token_url = f"{base_url.rstrip('/')}/{settings.token_path.lstrip('/')}"
        self._timeout_sec = timeout_sec
        self._open = opener
        self._clock = clock
        self._token: AccessToken | None = None
        self._fresh_secret = False
        self._tokens_fetched = 0

    def headers(self) -> dict[str, str]:
        """The headers to send now: the API key, or a bearer token (fetched if none is fresh)."""
        secret = self._read_secret()
        if self.settings.kind == names.AUTH_API_KEY:
            try:
                return api_key_header(self.settings, secret, self.secret_id)
            except InvalidCredentials as error:
                raise self._unauthorized(str(error)) from None
        if self._token is None or not self._token.is_fresh(self._clock()):
            self._token = self._fetch_token(secret)
        return {"Authorization": f"Bearer {self._token.value}"}

    def renew(self) -> None:
        """Forget the token and read the secret afresh on the next `headers()`."""
        self._token = None
        self._fresh_secret = True

    @property
    def tokens_fetched(self) -> int:
        """Tokens this environment fetched: one per token lifetime, plus one per renewal."""
        return self._tokens_fetched

    def _read_secret(self) -> Any:
        fresh, self._fresh_secret = self._fresh_secret, False
        try:
            return self._secret.read(fresh=fresh)
        except SecretUnavailable as error:  # its message names the secret, never the value
            raise self._unauthorized(str(error)) from None

    def _unauthorized(self, reason: str) -> DownstreamUnauthorized:
        return DownstreamUnauthorized({"downstream": self.downstream, "secret_id": self.secret_id, "reason": reason})

    def _fetch_token(self, secret: Any) -> AccessToken:
        try:
            client_id, client_secret = client_credentials(secret, self.secret_id)
        except InvalidCredentials as error:
            raise self._unauthorized(str(error)) from None
        form = {"grant_type": "client_credentials", **({"scope": self.settings.scope} if self.settings.scope else {})}
        request = urllib.request.Request(self._token_url, data=urllib.parse.urlencode(form).encode(), method="POST")
        basic = base64.b64encode(f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(client_secret)}".encode())
        request.add_header("Authorization", f"Basic {basic.decode()}")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        request.add_header("Accept", "application/json")
        details = {"downstream": self.downstream, "url": self._token_url, "secret_id": self.secret_id}
        try:
            with self._open(request, timeout=self._timeout_sec) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            if error.code in (400, 401, 403):
                raise DownstreamUnauthorized({**details, "status": error.code,
                                              "reason": "the token endpoint refused the client credentials"}) from None
            raise DownstreamUnavailable({**details, "status": error.code}) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            raise DownstreamUnavailable({**details, "reason": str(getattr(error, "reason", error))}) from None
        try:
            token = parse_token_response(json.loads(raw), self._clock())
        except (ValueError, InvalidCredentials) as error:
            raise DownstreamUnavailable({**details, "reason": str(error)}) from None
        self._tokens_fetched += 1
        return token
