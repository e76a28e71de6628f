"""Contract fixtures shared by more than one contract."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def legacy_consumer_environment() -> dict[str, str]:
    """A stand-in environment of the legacy consumer (the clients built from it are never called)."""
    return {
        "DOWNSTREAM_NAME": "legacy_mainframe", "DOWNSTREAM_BASE_URL": "http://127.0.0.1:9",
        "DOWNSTREAM_RATE_LIMIT_PER_SEC": "1", "DOWNSTREAM_BURST": "1", "TUNABLES_PARAMETER_NAME": "/t", "RATE_LIMITER_TABLE_NAME": "l",
        "RECORDS_TABLE_NAME": "r", "QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
        "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/q-dead-letters",
    }


@pytest.fixture
def legacy_consumer_module(import_handler) -> Any:
    """The legacy consumer's handler module, imported as Lambda does (only Powertools reads its environment then)."""
    return import_handler("handlers.legacy_consumer", {"POWERTOOLS_METRICS_NAMESPACE": "Test"})
