"""Dead letters of the stages: the reason of a failure, and the record that carries it.

A verdict on the input (a broken contract, the tick rule, an impossible value) is a reason of
its own; anything else is our bug and is ``stage_error``. A dead letter always fits in a produce
request (:mod:`streams.contracts.deadletters`).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from streams.agents.base import Emitter, InvalidWatermarkError, RawEvent, SourcePosition
from streams.contracts.codec import topic_codec
from streams.contracts.deadletters import bounded_payload
from streams.contracts.errors import ContractError
from streams.contracts.records import DeadLettered
from streams.contracts.ticks import TickRejected
from streams.errors import LogicError, StageError
from streams.observability.metrics import metrics
from streams.ordering import (
    OrderingError,
)
from streams.topics import Topic

log = logging.getLogger(__name__)


#: Reason of a dead letter whose cause is our code, not the input.
STAGE_ERROR = "stage_error"


def failure_reason(error: BaseException) -> str:
    """The dead letter's reason for ``error``: a verdict on the input, or our own bug."""
    if isinstance(error, ContractError) and error.direction == "consume":
        return "contract_violation"  # on produce, the record our stage made broke it: our bug
    if isinstance(error, TickRejected):
        return error.reason.value
    if isinstance(error, InvalidWatermarkError):
        return "invalid_watermark"
    if isinstance(error, OrderingError | LogicError | StageError):
        return "invalid_input"
    return STAGE_ERROR


def is_shared_verdict(error: BaseException) -> bool:
    """Every reader of a topic reaches this verdict on the same record (decode, tick rule)."""
    if isinstance(error, ContractError):
        return error.direction == "consume"
    return isinstance(error, TickRejected | InvalidWatermarkError)


def dead_letter(
    event: RawEvent | SourcePosition,
    stage: str,
    error: BaseException,
    raw: bytes | None = None,
    record: Any = None,
) -> DeadLettered:
    """The dead-letter record of an input: reason, source position and the raw bytes.

    ``event`` is the raw Kafka record, or (for a record a merge released) where it was read,
    with ``raw`` its re-encoded value. The id is the position for verdicts every reader shares
    (only the first reader writes those); a stage's own failure adds the stage, so two stages
    failing on one record give two letters. Raw bytes, key and detail are cut to fit a
    produce request (:func:`bounded_payload`).
    """
    reason = failure_reason(error)
    if isinstance(event, RawEvent):
        raw, position = (
            bytes(event.value),
            SourcePosition(event.topic, event.partition, event.offset, event.key),
        )
    else:
        position = event
    identity = position.label if is_shared_verdict(error) else f"{stage}:{position.label}"
    detail = str(error) or type(error).__name__
    return DeadLettered(
        dead_letter_id=hashlib.sha256(identity.encode()).hexdigest()[:32],
        reason=reason,
        error_type=type(error).__name__,
        stage=stage,
        symbol=_str_field(record, "symbol"),
        event_time_ms=_int_field(record, "event_time_ms"),
        source_topic=position.topic,
        source_partition=position.partition,
        source_offset=position.offset,
        **bounded_payload(raw or b"", position.key, detail),
    )


def _str_field(record: Any, name: str) -> str | None:
    value = getattr(record, name, None)
    return value[:64] if isinstance(value, str) else None


def _int_field(record: Any, name: str) -> int | None:
    value = getattr(record, name, None)
    return value if type(value) is int and -(2**63) <= value < 2**63 else None


def send_dead_letter(out: Emitter, letter: DeadLettered, error: BaseException) -> None:
    """Emit ``letter``, count it, and make a stage error loud (traceback in the log)."""
    source = f"{out.stage}/{out.instance}"
    out.record_to(Topic.DEADLETTER, 0, letter.source_topic or "", letter, None, source)
    metrics().dead_letter(letter.stage, letter.reason)
    if letter.reason == STAGE_ERROR:
        metrics().stage_error(letter.stage, letter.error_type)
        log.error(
            "stage %s failed on %s:%s:%s (dead-lettered, the stream goes on)",
            letter.stage, letter.source_topic, letter.source_partition, letter.source_offset,
            exc_info=error,
        )  # fmt: skip


def released_dead_letter(
    stage: str, topic: str, position: SourcePosition, record: Any, error: BaseException
) -> DeadLettered:
    """The dead letter of a record that failed after a buffer released it.

    Its bytes are gone by then; ``raw`` is the record re-encoded with the topic's codec (the
    same contract, so the same value), and the position is where it was originally read.
    """
    try:
        raw = topic_codec(Topic(topic)).encode(record)
    except Exception:  # a record that cannot be encoded is what failed: keep the letter
        raw = b""
    return dead_letter(position, stage, error, raw=raw, record=record)
