"""Tunables read from SSM Parameter Store: the cached fetch and the reader that never lets a bad value through.

The documents' schema, parsing and validation are pure (`throttling.core.tunables`); this module is
their I/O half: `powertools_ssm_fetch` reads a parameter through Powertools' SSM provider and its
cache, and `TunablesReader` keeps the last good value in force whatever a read or a document does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from throttling.core import names
from throttling.core.rate_limiter import RatePolicy
from throttling.core.tunables import Clamped, DownstreamTunables, InvalidTunables, parse_tunables, preview

if TYPE_CHECKING:
    from types_boto3_ssm import SSMClient

__all__ = ["TunablesReader", "defaults_from_environment", "downstream_tunables_reader", "powertools_ssm_fetch"]

# What a function runs on before it ever read a good document, when its deploy-time defaults are unusable.
LAST_RESORT_TUNABLES = DownstreamTunables(rate_per_sec=1, burst=1, max_concurrency=1)

logger = logging.getLogger(__name__)
T = TypeVar("T")


class TunablesReader(Generic[T]):
    """Reads one tunables document with a short cache, and never lets a bad value through.

    `fetch` returns the raw parameter value; in Lambda it is Powertools' SSM provider (which caches
    for `max_age_sec`), injected so tests and the lab can pass a plain function. `parse` turns it
    into a value or raises `InvalidTunables` (downstream limits by default, clamped to the
    downstream's contract: `ceiling_rate_per_sec` and `ceiling_burst`).
    """

    def __init__(
        self,
        parameter_name: str,
        *,
        defaults: T,
        fetch: Callable[[str], str],
        ceiling_rate_per_sec: float | None = None,
        ceiling_burst: int | None = None,
        parse: Callable[[str], Clamped[T]] | None = None,
    ) -> None:
        self.parameter_name = parameter_name
        self._fetch = fetch
        self._parse = parse or (lambda raw: parse_tunables(
            raw, ceiling_rate_per_sec=ceiling_rate_per_sec, ceiling_burst=ceiling_burst))
        self._last_good = defaults

    @property
    def fetch(self) -> Callable[[str], str]:
        """The raw read, for a second reader that should share its provider and cache."""
        return self._fetch

    def get(self) -> T:
        try:
            raw = self._fetch(self.parameter_name)
        except Exception as error:  # noqa: BLE001 - any read failure must fall back, not crash-loop
            logger.error(
                "could not read tunables; keeping the last good value",
                extra={"parameter": self.parameter_name, "error": repr(error), "in_force": _described(self._last_good)},
            )
            return self._last_good
        try:
            result = self._parse(raw)
        except InvalidTunables as error:
            logger.error(
                "refused an invalid tunables document; keeping the last good value",
                extra={"parameter": self.parameter_name, "error": str(error), "value": preview(raw),
                       "in_force": _described(self._last_good)},
            )
            return self._last_good
        except Exception:  # noqa: BLE001 - a parser bug must not take the function down either
            logger.exception(
                "the tunables parser failed; keeping the last good value",
                extra={"parameter": self.parameter_name, "value": preview(raw), "in_force": _described(self._last_good)},
            )
            return self._last_good
        if result.clamped_fields:
            logger.warning(
                "tunables out of range were clamped",
                extra={"parameter": self.parameter_name, "clamped": list(result.clamped_fields),
                       "value": preview(raw), "in_force": _described(result.tunables)},
            )
        self._last_good = result.tunables
        return result.tunables


def powertools_ssm_fetch(max_age_sec: int = 5, boto3_client: SSMClient | None = None) -> Callable[[str], str]:
    """A `fetch` for `TunablesReader` backed by Powertools' SSM provider and its cache."""
    from aws_lambda_powertools.utilities.parameters import SSMProvider

    provider = SSMProvider(boto3_client=boto3_client)

    def fetch(name: str) -> str:
        value = provider.get(name, max_age=max_age_sec)
        return value if isinstance(value, str) else json.dumps(value)

    return fetch


def defaults_from_environment(raw: str | None, fallback: DownstreamTunables) -> DownstreamTunables:
    """The deploy-time defaults a function carries in its environment; `fallback` if they are unusable."""
    if not raw:
        return fallback
    try:
        return parse_tunables(raw).tunables
    except InvalidTunables as error:
        logger.error("deploy-time tunables defaults are invalid; using built-in fallback",
                     extra={"error": str(error), "value": preview(raw)})
        return fallback


def downstream_tunables_reader(
    environ: Mapping[str, str], contract: RatePolicy, *, ssm: SSMClient | None = None
) -> TunablesReader[DownstreamTunables]:
    """The reader of a caller's downstream document, as every caller's environment describes it.

    `TUNABLES_PARAMETER_NAME` names the document, `TUNABLES_DEFAULTS` the deploy-time defaults and
    `TUNABLES_CACHE_SEC` the cache (5 s by default); values above `contract` are clamped to it.
    """
    return TunablesReader(
        environ[names.ENV_TUNABLES_PARAMETER_NAME],
        defaults=defaults_from_environment(environ.get(names.ENV_TUNABLES_DEFAULTS), fallback=LAST_RESORT_TUNABLES),
        fetch=powertools_ssm_fetch(max_age_sec=int(environ.get(names.ENV_TUNABLES_CACHE_SEC, "5")), boto3_client=ssm),
        ceiling_rate_per_sec=contract.rate_per_sec,
        ceiling_burst=contract.burst,
    )


def _described(value: Any) -> Any:
    return asdict(value) if hasattr(value, "__dataclass_fields__") else value
