"""Dispatch: one batch of raw Kafka events through a stage handler, each record isolated.

Data records are decoded (and ticks pass the shared tick rule) and handed to the handler inside
their span; watermarks are parsed and handed over; anything that fails on one record is
dead-lettered with its state put back and its output dropped, and the batch goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from streams.agents.base import (
    Decoder,
    Emitter,
    RawEvent,
    SourcePosition,
    StageHandler,
    parse_watermark,
    position_attributes,
    record_attributes,
)
from streams.agents.dead_letters import dead_letter, is_shared_verdict, send_dead_letter
from streams.contracts.records import TickReceived
from streams.contracts.ticks import TickHistory
from streams.observability import tracing
from streams.observability.metrics import metrics
from streams.ordering import (
    SOURCE_HEADER,
    WATERMARK_HEADER,
)

log = logging.getLogger(__name__)


def _admit(handler: StageHandler, decoder: Decoder, event: RawEvent, topic: str) -> Any:
    """The decoded record, past the tick rule when the stage reads ticks (raises otherwise)."""
    record = decoder.decode(event)
    history: TickHistory | None = getattr(handler, "tick_history", None)
    if history is not None and isinstance(record, TickReceived):
        history.admit(event.partition, record, event.key)
    return record


def apply_isolated(
    handler: Any, topic: str, partition: int, record: Any, out: Emitter, act: Callable[[], None]
) -> None:
    """Run ``act`` (one record's handling); on failure restore its state and drop its output.

    The exception propagates, for the caller to dead-letter the record.
    """
    checkpoint = getattr(handler, "checkpoint", None)
    restore = checkpoint(topic, partition, record) if checkpoint is not None else None
    mark = len(out.items)
    try:
        act()
        out.seal(mark)
    except Exception:
        out.rollback(mark)
        if restore is not None:
            restore()
        raise


def _handle(
    handler: StageHandler,
    decoder: Decoder,
    event: RawEvent,
    topic: str,
    source: str,
    out: Emitter,
    decoded: list[Any],
) -> None:
    """Decode, admit and hand over one data record, inside its span.

    A stage that buffers records and acts on them later (``spans_at_release``) opens its span
    then; here it only gets the record's parent context as the current one, to keep with it.
    The decoded record is put in ``decoded`` (for a dead letter's symbol and time).
    """
    parent = tracing.extract_context(event.headers) if tracing.enabled() else None
    if getattr(handler, "spans_at_release", False):
        with tracing.with_parent(parent):
            record = _admit(handler, decoder, event, topic)
            decoded.append(record)
            handler.on_record(topic, event.partition, source, record, out)
        return
    attrs = position_attributes(handler.name, event) if tracing.enabled() else None
    with tracing.record_span(f"{handler.name} {topic}", parent, attrs) as span:
        record = _admit(handler, decoder, event, topic)
        decoded.append(record)
        if span.is_recording():
            span.set_attributes(record_attributes(record))
        apply_isolated(
            handler, topic, event.partition, record, out,
            lambda: handler.on_record(topic, event.partition, source, record, out),
        )  # fmt: skip


def dispatch(
    handler: StageHandler, decoder: Decoder, events: Sequence[RawEvent], out: Emitter
) -> int:
    """Feed a batch to ``handler``; returns how many records were dead-lettered (or skipped).

    Each data record is handled inside a span whose parent is the ``traceparent`` of its
    headers (see :func:`_handle`); records handled per input topic and dead letters by reason
    go to the metrics. Whatever one record raises, it is dead-lettered and the batch goes on.
    """
    dead = 0
    handled: dict[str, int] = {}
    skipped = getattr(handler, "dead_letters_skipped", ())
    for event in events:
        source = event.headers.get(SOURCE_HEADER, b"").decode(errors="replace") or "?"
        wm = event.headers.get(WATERMARK_HEADER)
        topic = decoder.base_topic(event.topic).value
        out.position = SourcePosition(event.topic, event.partition, event.offset, event.key)
        out.raw = event.value
        decoded: list[Any] = []
        try:
            if wm is not None:
                handler.on_watermark(topic, event.partition, source, parse_watermark(wm), out)
                continue
            handled[topic] = handled.get(topic, 0) + 1
            _handle(handler, decoder, event, topic, source, out, decoded)
        except Exception as exc:
            dead += 1
            # A topic read by several stages (market.ticks) is dead-lettered once, by its
            # first reader; the others skip what every reader refuses (and count it).
            if topic in skipped and is_shared_verdict(exc):
                continue
            record = decoded[0] if decoded else None
            send_dead_letter(out, dead_letter(event, handler.name, exc, record=record), exc)
        finally:
            out.position = out.raw = None
    handler.end_batch(out)
    for topic, n in handled.items():
        metrics().stage_records(handler.name, topic, n)
    return dead
