"""moto's SQS: the message quotas `SendMessage` enforces (attribute count, size with attributes)."""

from __future__ import annotations

from typing import Any

from localcloud.emulator.patches.registry import Undo, patch, replace


# SQS's message quotas (Amazon SQS Developer Guide, "Amazon SQS message attributes"; MessageAttributeValue):
# at most 10 attributes a message, and every part of each (name, type, value) counts towards its size.
SQS_MAX_MESSAGE_ATTRIBUTES = 10


def sqs_message_size_bytes(body: str, attributes: dict[str, Any] | None) -> int:
    """The size SQS holds against a queue's `MaximumMessageSize`: the body and each attribute's name,
    type and value, in bytes (UTF-8 text, a binary value as its decoded bytes)."""
    import base64

    size = len(body.encode("utf-8", errors="surrogatepass"))
    for name, value in (attributes or {}).items():
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        if value.get("BinaryValue") is not None:
            binary = value["BinaryValue"]
            size += len(binary if isinstance(binary, (bytes, bytearray)) else base64.b64decode(binary))
        else:
            size += len(str(value.get("StringValue", "")).encode("utf-8", errors="surrogatepass"))
    return size


@patch("sqs")
def sqs_message_limits() -> Undo:
    """Refuse a `SendMessage` with more than 10 message attributes, or whose body and attributes together
    exceed the queue's `MaximumMessageSize`, with SQS's `InvalidParameterValue`.

    moto limitation: it takes any number of attributes and measures only the body, in characters, so a
    message AWS refuses (an 11th attribute added to a producer's ten; a body near the limit plus its
    attributes; multi-byte text) is queued. `SendMessageBatch` is left as moto has it.
    """
    from moto.sqs.responses import SQSResponse

    original = SQSResponse.send_message

    def send_message(self: Any) -> Any:
        from moto.sqs.exceptions import InvalidParameterValue

        attributes = self._get_param("MessageAttributes", {}) or {}
        if len(attributes) > SQS_MAX_MESSAGE_ATTRIBUTES:
            raise InvalidParameterValue(f"Number of message attributes [{len(attributes)}] exceeds the allowed "
                                        f"maximum [{SQS_MAX_MESSAGE_ATTRIBUTES}].")
        queue = self.sqs_backend.get_queue(self._get_queue_name())
        limit = int(queue.maximum_message_size)
        if sqs_message_size_bytes(self._get_param("MessageBody") or "", attributes) > limit:
            raise InvalidParameterValue(f"One or more parameters are invalid. Reason: Message must be shorter "
                                        f"than {limit} bytes.")
        return original(self)

    return replace(SQSResponse, send_message=send_message)
