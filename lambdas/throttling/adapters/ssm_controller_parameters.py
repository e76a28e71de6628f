"""The control loop's SSM adapter: the plans it reads, and the tunables documents it reads and rewrites.

Why the controller's state is not in the tunables document: it changes every period (the clean
streak, the last period seen) while the setting rarely does. In the document, each run would be
a new parameter version, burying the decisions operators look for in the history (SSM keeps 100),
and SSM has no conditional write to keep it consistent. So a parameter version is a decision, and
the state lives in DynamoDB (`dynamodb_controller_state`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import BotoCoreError, ClientError

from throttling.core.controller.plan import DownstreamPlan, Plans, PlansUnavailable, parse_plan_documents
from throttling.core.tunables import InvalidTunables, decode_document

if TYPE_CHECKING:
    from types_boto3_ssm import SSMClient

__all__ = ["PlanReader", "TunablesDocument", "TunablesDocumentStore"]

logger = logging.getLogger(__name__)


class PlanReader:
    """Reads the plans under one SSM path; a bad read or document never costs the last good plans.

    `fetch(path)` returns downstream name -> parameter value for every parameter directly under the
    path, and raises `GetParameterError` (or botocore's errors) when the read fails; in Lambda it is
    Powertools' SSM provider (`get_multiple`, cached for a minute), injected so tests pass a plain
    function. A document that does not parse is refused and its downstream
    keeps its last good plan (or has none, and is reported); a failed read keeps every last good
    plan. With no plan ever read, `get` raises `PlansUnavailable`.
    """

    def __init__(self, path: str, fetch: Callable[[str], Mapping[str, str]]) -> None:
        self.path = path
        self._fetch = fetch
        self._last_good: dict[str, DownstreamPlan] = {}

    def get(self) -> Plans:
        try:
            documents = self._fetch(self.path)
        except (GetParameterError, ClientError, BotoCoreError) as error:  # a failed read keeps the last good plans
            if not self._last_good:
                raise PlansUnavailable(f"could not read the controller's plans under {self.path}: {error!r}") from error
            logger.error("could not read the plans; keeping the last good ones",
                         extra={"path": self.path, "error": repr(error)})
            return Plans(dict(self._last_good))
        parsed = parse_plan_documents(documents)
        for name, why in parsed.refused.items():
            logger.error("refused a plan document; its last good plan stays in force",
                         extra={"path": f"{self.path}/{name}", "error": why, "kept": name in self._last_good})
        in_force = {**{n: p for n, p in self._last_good.items() if n in parsed.refused}, **parsed.downstreams}
        if not in_force:
            raise PlansUnavailable(f"no usable plan under {self.path}: found {sorted(documents) or 'none'};"
                                   f" refused {dict(parsed.refused)}")
        self._last_good = in_force
        return Plans(in_force, parsed.refused)


@dataclass(frozen=True)
class TunablesDocument:
    """A tunables document as read: its parameter name, its JSON object, and its SSM version."""

    name: str
    document: dict[str, Any]
    version: int


class TunablesDocumentStore:
    """Reads a tunables document whole and writes it back whole, with only the controller's fields changed."""

    def __init__(self, client: SSMClient) -> None:
        self._client = client

    def read(self, name: str) -> TunablesDocument:
        """The document and its version; `InvalidTunables` when the value is not a usable JSON object."""
        parameter = self._client.get_parameter(Name=name)["Parameter"]
        document = decode_document(parameter["Value"])
        if not isinstance(document, dict):
            raise InvalidTunables(f"the value must be a JSON object, got {type(document).__name__}")
        return TunablesDocument(name, document, int(parameter["Version"]))

    def write(self, read: TunablesDocument, changes: Mapping[str, Any]) -> bool:
        """Write `changes` over the document read, unless someone wrote it meanwhile (then False).

        SSM has no conditional write: the version is checked again just before the write, which
        leaves a window of one request in which an operator's edit could still be overwritten.
        """
        latest = self._client.get_parameter(Name=read.name)["Parameter"]
        if int(latest["Version"]) != read.version:
            return False
        document = {**read.document, **changes}
        self._client.put_parameter(Name=read.name, Value=json.dumps(document, sort_keys=True), Type="String",
                                   Overwrite=True)
        return True
