"""The use cases, one class each, built into the layers' stacks from one registry (`registry.USE_CASES`)."""

from stacks.use_cases.base import Layer, Registered, UseCase, UseCaseContext, build_layer
from stacks.use_cases.crm_batch_email import CrmBatchEmail, CrmBatchEmailProps
from stacks.use_cases.crm_segment_large import CrmSegmentLarge, CrmSegmentLargeProps
from stacks.use_cases.legacy_buffer import LegacyBuffer, LegacyBufferProps
from stacks.use_cases.payments import Payments, PaymentsProps
from stacks.use_cases.registry import USE_CASES
from stacks.use_cases.ugc_moderation import UgcModeration, UgcModerationProps

__all__ = [
    "USE_CASES",
    "CrmBatchEmail",
    "CrmBatchEmailProps",
    "CrmSegmentLarge",
    "CrmSegmentLargeProps",
    "Layer",
    "LegacyBuffer",
    "LegacyBufferProps",
    "Payments",
    "PaymentsProps",
    "Registered",
    "UgcModeration",
    "UgcModerationProps",
    "UseCase",
    "UseCaseContext",
    "build_layer",
]
