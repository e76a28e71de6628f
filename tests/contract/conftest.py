"""Contract fixtures shared by more than one contract."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def legacy_consumer_module(import_handler) -> Any:
    """The legacy consumer's handler module, imported with a stand-in environment (its clients are built, never called)."""
    environment = {
        "DOWNSTREAM_NAME": "legacy_mainframe", "DOWNSTREAM_BASE_URL": "http://127.0.0.1:9",
        "DOWNSTREAM_RATE_LIMIT_PER_SEC": "1", "DOWNSTREAM_BURST": "1", "TUNABLES_PARAMETER_NAME": "/t", "RATE_LIMITER_TABLE_NAME": "l",
        "RECORDS_TABLE_NAME": "r", "QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
        "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/q-dead-letters",
        "POWERTOOLS_METRICS_NAMESPACE": "Test",
    }
    return import_handler("handlers.legacy_consumer", environment)
