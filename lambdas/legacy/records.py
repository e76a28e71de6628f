"""The legacy mainframe's record, as its contract can carry it, and what makes a message body poison.

Pure: no AWS, no HTTP. The consumer (`handlers.legacy_consumer`) parses every message body with
`parse_record` before it spends a token; a body no retry can fix raises `PoisonRecord`, which says
why, and goes to the dead-letter queue. The API's `LegacyRecord` model states the same contract (a
contract test keeps them equal).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from throttling.core import names
from throttling.core.json_depth import nesting_depth

__all__ = ["MAX_PAYLOAD_DEPTH", "RECORD_ID_PATTERN", "LegacyRecord", "PoisonRecord", "parse_record", "tenant_of"]

# The mainframe's record contract. The id is its Idempotency-Key header and the key of the record's
# status item, so only characters any header carries; matched whole (`$` would let "r-1\n" through).
RECORD_ID_PATTERN = r"[A-Za-z0-9_.:-]{1,128}"
_RECORD_ID = re.compile(RECORD_ID_PATTERN)
# The payload (an object: level 1) nests at most this deep; the API's model bounds it alike.
MAX_PAYLOAD_DEPTH = 8


class PoisonRecord(ValueError):
    """The message body is not a record; retrying cannot fix it."""


@dataclass(frozen=True)
class LegacyRecord:
    record_id: str
    payload: Any


def parse_record(body: str | None) -> LegacyRecord:
    """The record a message body holds, as the mainframe's contract can carry it; `PoisonRecord` says why not."""
    text = body or ""
    depth = nesting_depth(text)
    if depth > MAX_PAYLOAD_DEPTH + 1:
        # Measured before decoding: json recurses per level and fails past about a thousand.
        raise PoisonRecord(f"the body nests {depth} levels deep; a record's payload may nest at most "
                           f"{MAX_PAYLOAD_DEPTH} (the mainframe's contract)")
    try:
        document = json.loads(text, parse_constant=_not_a_json_number)
    except PoisonRecord:
        raise
    except (ValueError, RecursionError) as error:
        raise PoisonRecord(f"the body is not JSON ({str(error)[:200]})") from None
    if not isinstance(document, dict):
        raise PoisonRecord(f"the body must be a JSON object with a record_id, got {type(document).__name__}")
    record_id = document.get("record_id")
    if not isinstance(record_id, str) or not _RECORD_ID.fullmatch(record_id):
        raise PoisonRecord(f"record_id must be 1-128 characters of A-Z, a-z, 0-9, '_', '.', ':' or '-' (it is the "
                           f"mainframe's Idempotency-Key), got {record_id!r:.100}")
    payload = document.get("payload")
    unencodable = _text_utf8_cannot_carry(payload)
    if unencodable is not None:
        raise PoisonRecord(f"the payload holds text that is not Unicode ({unencodable!r:.60}: a lone surrogate), "
                           "which UTF-8 cannot carry to the mainframe")
    return LegacyRecord(record_id=record_id, payload=payload)


def tenant_of(message_group_id: str | None) -> str:
    """The tenant a message was queued for: its `MessageGroupId` (the API key's client, set by the API's
    mapping template), or the default tenant for a message sent without one (by hand, or before tenants)."""
    return message_group_id or names.DEFAULT_TENANT


def _not_a_json_number(name: str) -> Any:
    raise PoisonRecord(f"the body holds {name}, which is not a JSON number: the mainframe could not read it")


def _text_utf8_cannot_carry(value: Any) -> str | None:
    """The first string (key or value) in `value` that is not valid Unicode, or None."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None
