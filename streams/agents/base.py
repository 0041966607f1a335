"""What every agent shares: decoding with dead letters, in-band watermarks, batched sends.

An agent is a :class:`StageHandler` (pure Python, no Faust) driven by :func:`drive`, which
takes batches of raw Kafka events with ``stream.take_events``, decodes each value with the
topic's Avro codec, hands data records and watermarks to the handler, and sends what the
handler emitted. Undecodable input becomes a ``deadletter`` record with the reason and the
source topic/partition/offset and raw bytes; the stream goes on.

Watermarks are empty records carrying the ``qt-watermark`` header (docs/determinism.md): the
value is an exclusive event-time bound, "every record I still send on this partition has
``event_time_ms >=`` this". The ``qt-source`` header names the sending stage partition.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.contracts.base import AvroRecord
from streams.contracts.codec import TopicCodec, topic_codec
from streams.contracts.errors import ContractError
from streams.contracts.records import DeadLettered
from streams.logic.types import LogicError
from streams.ordering import SOURCE_HEADER, WATERMARK_HEADER, OrderingError
from streams.topics import Topic


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record or watermark to send. ``partition=None``: chosen by the key's hash."""

    topic: Topic
    key: str
    value: AvroRecord | None
    partition: int | None = None
    watermark: int | None = None
    timestamp_ms: int | None = None


@dataclass(slots=True)
class Emitter:
    """What a handler produced while handling one batch, in order."""

    source: str
    items: list[Outgoing] = field(default_factory=list)

    def record(self, topic: Topic, key: str, value: AvroRecord, event_time_ms: int) -> None:
        """Send ``value`` keyed by ``key`` (partition from the key hash, like every producer)."""
        self.items.append(Outgoing(topic, key, value, timestamp_ms=event_time_ms))

    def record_to(
        self, topic: Topic, partition: int, key: str, value: AvroRecord, t: int | None
    ) -> None:
        """Send ``value`` to one partition (single-partition topics, broadcasts)."""
        self.items.append(Outgoing(topic, key, value, partition=partition, timestamp_ms=t))

    def watermark(self, topic: Topic, partitions: Iterable[int], watermark: int) -> None:
        """Announce on ``partitions`` of ``topic``: nothing before ``watermark`` follows."""
        for p in partitions:
            self.items.append(Outgoing(topic, "", None, partition=p, watermark=watermark))


class StageHandler(Protocol):
    """The Faust-free part of an agent: records in, records and watermarks out."""

    name: str

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """Handle one decoded data record."""

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """Handle an in-band watermark from ``source``."""

    def end_batch(self, out: Emitter) -> None:
        """Release what the watermarks now allow, emit output watermarks."""


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


def dead_letter(event: RawEvent, stage: str, error: Exception) -> DeadLettered:
    """The dead-letter record of ``event``: reason, source position and the raw bytes."""
    reason = "contract_violation" if isinstance(error, ContractError) else "invalid_input"
    position = f"{event.topic}:{event.partition}:{event.offset}"
    return DeadLettered(
        dead_letter_id=hashlib.sha256(position.encode()).hexdigest()[:32],
        reason=reason,
        error_type=type(error).__name__,
        stage=stage,
        detail=str(error)[:2000],
        raw=bytes(event.value),
        source_topic=event.topic,
        source_partition=event.partition,
        source_offset=event.offset,
        raw_key=event.key,
    )


def dispatch(
    handler: StageHandler, decoder: Decoder, events: Sequence[RawEvent], out: Emitter
) -> int:
    """Feed a batch to ``handler``; returns how many records were dead-lettered."""
    dead = 0
    for event in events:
        source = event.headers.get(SOURCE_HEADER, b"").decode() or "?"
        wm = event.headers.get(WATERMARK_HEADER)
        if wm is not None:
            handler.on_watermark(event.topic, event.partition, source, int(wm), out)
            continue
        try:
            record = decoder.decode(event)
            handler.on_record(event.topic, event.partition, source, record, out)
        except (ContractError, LogicError, OrderingError, ValueError) as exc:
            dead += 1
            letter = dead_letter(event, handler.name, exc)
            out.record_to(Topic.DEADLETTER, 0, event.topic, letter, None)
    handler.end_batch(out)
    return dead
