"""What every agent shares: decoding with dead letters, in-band watermarks, batched sends.

An agent is a :class:`StageHandler` (pure Python, no Faust) driven by
:func:`streams.agents.dispatch.dispatch`, which
takes batches of raw Kafka events with ``stream.take_events``, decodes each value with the
topic's Avro codec, hands data records and watermarks to the handler, and sends what the
handler emitted. Undecodable input becomes a ``deadletter`` record with the reason and the
source topic/partition/offset and raw bytes; the stream goes on.

No record can stop a stage (docs/determinism.md, "Bad input decides nothing"): ticks pass
the shared tick rule (:mod:`streams.contracts.ticks`) before any reader acts on them; any
exception while one record is handled — on arrival, or when a merge releases it —
dead-letters that record, puts back the state it touched (the handler's ``checkpoint``) and
drops what it emitted, and the batch goes on. An exception that is not a verdict on the input
is our bug: it is dead-lettered as ``stage_error``, logged with its traceback and counted
(``qt_stage_errors_total``), never swallowed.

Watermarks are empty records carrying the ``qt-watermark`` header (docs/determinism.md): the
value is an exclusive event-time bound, "every record I still send on this partition has
``event_time_ms >=`` this". The ``qt-source`` header names the sending stage partition.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from opentelemetry.trace import SpanContext

from streams.contracts.base import AvroRecord
from streams.contracts.codec import TopicCodec, topic_codec
from streams.observability import tracing
from streams.topics import Topic

log = logging.getLogger(__name__)

#: Puts back the state one record's handling may have changed (see ``checkpoint``).
Restore = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record or watermark to send. ``partition=None``: chosen by the key's hash.

    ``source`` (the ``qt-source`` header) names the stage partition that produced it, e.g.
    ``strategy/2``: a merge downstream tracks one watermark per source. ``span_context`` is the
    span that produced the record (its ``traceparent`` header); ``None`` when not traced.
    """

    topic: Topic
    key: str
    value: AvroRecord | None
    source: str
    partition: int | None = None
    watermark: int | None = None
    timestamp_ms: int | None = None
    span_context: SpanContext | None = None
    #: The value's wire bytes, once encoded (:meth:`Emitter.seal`); the sender encodes if not.
    encoded: bytes | None = None
    #: The ``qt-seq`` header: the record's number among its source's records of ``topic``.
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where an input record was read: broker-side topic, partition, offset, and its key."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None

    @property
    def label(self) -> str:
        """``topic:partition:offset``."""
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(slots=True)
class Emitter:
    """What a handler produced while handling one batch, in order.

    ``position`` is where the record being handled was read (set by :func:`dispatch`), so a
    stage that buffers it can keep its origin for a dead letter at release.
    """

    stage: str
    items: list[Outgoing] = field(default_factory=list)
    position: SourcePosition | None = None
    #: The wire bytes of the record being handled (a merge keeps them for its stored state).
    raw: bytes | None = None
    #: The stage instance (state partition) emitting: names the source of what has no
    #: partition of its own (dead letters), so two instances never number under one source.
    instance: int = 0

    def rollback(self, mark: int) -> None:
        """Drop what was emitted since ``len(items)`` was ``mark`` (a record that failed)."""
        del self.items[mark:]

    def seal(self, mark: int) -> None:
        """Encode the records emitted since ``mark`` now, while their cause is known.

        A record that breaks its contract (a NaN feature, say) raises here, inside the handling
        of the input that produced it, instead of in the sender, where it would stop the stage.
        """
        items = self.items
        for i in range(mark, len(items)):
            item = items[i]
            if item.value is not None and item.encoded is None:
                items[i] = replace(item, encoded=topic_codec(item.topic).encode(item.value))

    def record(
        self, topic: Topic, key: str, value: AvroRecord, event_time_ms: int, partition: int
    ) -> None:
        """Send ``value`` keyed by ``key`` (partition from the key hash, like every producer).

        ``partition`` is the stage partition that produced it (for the source header).
        """
        source = f"{self.stage}/{partition}"
        span = tracing.current_span_context()
        self.items.append(
            Outgoing(topic, key, value, source, timestamp_ms=event_time_ms, span_context=span)
        )

    def record_to(
        self, topic: Topic, partition: int, key: str, value: AvroRecord, t: int | None, source: str
    ) -> None:
        """Send ``value`` to one partition (single-partition topics, broadcasts)."""
        span = tracing.current_span_context()
        self.items.append(
            Outgoing(topic, key, value, source, partition=partition, timestamp_ms=t,
                     span_context=span)
        )  # fmt: skip

    def watermark(
        self, topic: Topic, partitions: Iterable[int], watermark: int, source: str
    ) -> None:
        """Announce on ``partitions`` of ``topic``: nothing before ``watermark`` follows."""
        for p in partitions:
            self.items.append(Outgoing(topic, "", None, source, partition=p, watermark=watermark))


class StageHandler(Protocol):
    """The Faust-free part of an agent: records in, records and watermarks out.

    ``topic`` arguments are base topic names (``market.ticks``), without the run prefix.
    """

    name: str
    inputs: tuple[Topic, ...]

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """Handle one decoded data record."""

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """Handle an in-band watermark from ``source``."""

    def end_batch(self, out: Emitter) -> None:
        """Release what the watermarks now allow, emit output watermarks."""

    # Optional, looked up with getattr so a handler only declares what it needs:
    #   checkpoint(topic, partition, record) -> Restore | None: capture the state handling
    #     ``record`` may change; the returned callable puts it back (None: nothing to restore).
    #   tick_history: TickHistory — the stage reads market.ticks: every tick is admitted by it
    #     before the handler sees it.
    #   dead_letters_skipped: topics whose shared verdicts (contract, tick rule) another stage,
    #     the first reader, dead-letters; this one only skips the record.
    #   buffers_records: records are handled later (end_batch), which isolates them itself.


@dataclass(frozen=True, slots=True)
class RawEvent:
    """The parts of a Kafka message a handler needs (Faust-independent, so tests can build it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, bytes]


class Decoder:
    """Decodes raw values per base topic; ``prefix`` is stripped from broker-side names."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._codecs: dict[str, TopicCodec] = {}

    def base_topic(self, name: str) -> Topic:
        """``run1.market.ticks`` -> ``Topic.MARKET_TICKS``."""
        return Topic(name.removeprefix(self._prefix))

    def decode(self, event: RawEvent) -> AvroRecord:
        """The typed record of ``event``; :class:`ContractError` when it breaks the contract."""
        topic = self.base_topic(event.topic)
        codec = self._codecs.get(topic)
        if codec is None:
            codec = self._codecs[topic] = topic_codec(topic)
        return codec.decode_record(event.value)


def record_attributes(record: Any) -> dict[str, Any]:
    """Span attributes every record offers: symbol, event time, decision id when it has one."""
    attrs: dict[str, Any] = {}
    for name in ("symbol", "event_time_ms", "decision_id"):
        value = getattr(record, name, None)
        if value is not None:
            attrs[f"qt.{name}"] = value
    return attrs


def position_attributes(stage: str, event: RawEvent) -> dict[str, Any]:
    """Span attributes of where a record came from (OTel messaging conventions)."""
    return {
        "qt.stage": stage,
        "messaging.system": "kafka",
        "messaging.operation": "process",
        "messaging.destination.name": event.topic,
        "messaging.destination.partition.id": str(event.partition),
        "messaging.kafka.offset": event.offset,
    }


def freeze(state: Any) -> bytes:
    """A private copy of plain state (a ``to_dict``), for :meth:`checkpoint` to restore.

    ``to_dict`` may hand out the live lists and dicts of the state (a table serialises them at
    once); a checkpoint outlives the mutation, so it copies them, and pickle copies plain data
    fastest. Only our own bytes are ever unpickled.
    """
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def thaw(blob: bytes) -> Any:
    """The state :func:`freeze` copied."""
    return pickle.loads(blob)  # noqa: S301 - our own bytes, made by freeze() in this process


def keyed_checkpoint(states: dict[Any, Any], key: Any, from_dict: Callable[[Any], Any]) -> Restore:
    """Checkpoint of one entry of a stage's per-key states (``to_dict``/``from_dict``)."""
    state = states.get(key)
    snapshot = None if state is None else freeze(state.to_dict())

    def restore() -> None:
        if snapshot is None:
            states.pop(key, None)
        else:
            states[key] = from_dict(thaw(snapshot))

    return restore


class InvalidWatermarkError(Exception):
    """A ``qt-watermark`` header that is not an integer event time."""


def parse_watermark(value: bytes) -> int:
    """The event time of a ``qt-watermark`` header (:class:`InvalidWatermarkError` if none)."""
    try:
        return int(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        detail = f"qt-watermark header {value[:40]!r} is not an integer"
        raise InvalidWatermarkError(detail) from None
