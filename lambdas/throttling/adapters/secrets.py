"""A downstream's secret read from Secrets Manager through Powertools parameters and its cache.

`read()` answers from the cache for `max_age_sec`; `read(fresh=True)` (after a 401) asks Secrets
Manager again, so a rotated credential is in force on the next call. Errors name the secret, never
its value: Powertools' own messages are not passed on, since a transform error may quote the text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

if TYPE_CHECKING:
    from types_boto3_secretsmanager import SecretsManagerClient

__all__ = ["SecretReader", "SecretUnavailable"]


class SecretUnavailable(Exception):
    """The secret could not be read (missing, not allowed, throttled) or is not JSON; the message says which."""


class SecretReader:
    """Reads one JSON secret, cached for `max_age_sec`; `client` defaults to boto3's, built by Powertools."""

    def __init__(self, secret_id: str, *, max_age_sec: int, client: SecretsManagerClient | None = None) -> None:
        self.secret_id = secret_id
        self.max_age_sec = max_age_sec
        self._provider = SecretsProvider(boto3_client=client) if client is not None else SecretsProvider()

    def read(self, *, fresh: bool = False) -> Any:
        try:
            return self._provider.get(self.secret_id, max_age=self.max_age_sec, transform="json", force_fetch=fresh)
        except TransformParameterError:
            raise SecretUnavailable(f"secret {self.secret_id} is not JSON; put a JSON object with"
                                    f" `aws secretsmanager put-secret-value --secret-id {self.secret_id}`") from None
        except GetParameterError as error:
            # The cause is botocore's ClientError: its code and message name the secret and the refusal, no value.
            cause = error.__cause__ or error.__context__
            code = getattr(cause, "response", {}).get("Error", {}).get("Code", type(cause).__name__)
            raise SecretUnavailable(f"secret {self.secret_id} could not be read ({code}); check that it exists and"
                                    " that this function's role may read it") from None
