"""The app's use cases, one line each, in build order: the layers build them and the control loop watches them.

A line names the use case and its props, among them the configured downstream it calls, so no stack
holds a downstream's name. Order is part of the contract: a use case that shares another's resources
comes after it, and the order fixes the order of the alarms and dashboard rows.
"""

from __future__ import annotations

from typing import Any

from stacks.use_cases.base import Registered
from stacks.use_cases.crm_batch_email import CrmBatchEmail, CrmBatchEmailProps
from stacks.use_cases.crm_segment_large import CrmSegmentLarge, CrmSegmentLargeProps
from stacks.use_cases.legacy_buffer import LegacyBuffer, LegacyBufferProps
from stacks.use_cases.payments import Payments, PaymentsProps
from stacks.use_cases.ugc_moderation import UgcModeration, UgcModerationProps

USE_CASES: tuple[Registered[Any], ...] = (
    Registered(CrmBatchEmail, CrmBatchEmailProps(downstream="crm")),
    Registered(CrmSegmentLarge, CrmSegmentLargeProps(downstream="crm")),
    Registered(Payments, PaymentsProps(gateway="payment_gateway", warehouse="warehouse", messaging="messaging",
                                       ledger="ledger")),
    Registered(UgcModeration, UgcModerationProps(model="ai_model")),
    Registered(LegacyBuffer, LegacyBufferProps(downstream="legacy_mainframe")),
)
