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

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext

from streams.contracts.base import AvroRecord
from streams.contracts.codec import TopicCodec, topic_codec
from streams.contracts.errors import ContractError
from streams.contracts.records import DeadLettered
from streams.errors import LogicError
from streams.observability import tracing
from streams.observability.metrics import metrics
from streams.ordering import (
    END_OF_STREAM,
    SOURCE_HEADER,
    WATERMARK_HEADER,
    EventTimeMerge,
    OrderingError,
    SortKey,
)
from streams.topics import Topic
from streams.topology import Shift, merge_sources, progress_targets, stage_spec


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


@dataclass(slots=True)
class Emitter:
    """What a handler produced while handling one batch, in order."""

    stage: str
    items: list[Outgoing] = field(default_factory=list)

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


def _handle(
    handler: StageHandler, decoder: Decoder, event: RawEvent, topic: str, source: str, out: Emitter
) -> None:
    """Decode and hand over one data record, inside its span.

    A stage that buffers records and acts on them later (``spans_at_release``) opens its span
    then; here it only gets the record's parent context as the current one, to keep with it.
    """
    parent = tracing.extract_context(event.headers) if tracing.enabled() else None
    if getattr(handler, "spans_at_release", False):
        with tracing.with_parent(parent):
            handler.on_record(topic, event.partition, source, decoder.decode(event), out)
        return
    attrs = position_attributes(handler.name, event) if tracing.enabled() else None
    with tracing.record_span(f"{handler.name} {topic}", parent, attrs) as span:
        record = decoder.decode(event)
        if span.is_recording():
            span.set_attributes(record_attributes(record))
        handler.on_record(topic, event.partition, source, record, out)


def dispatch(
    handler: StageHandler, decoder: Decoder, events: Sequence[RawEvent], out: Emitter
) -> int:
    """Feed a batch to ``handler``; returns how many records were dead-lettered.

    Each data record is handled inside a span whose parent is the ``traceparent`` of its
    headers (see :func:`_handle`); records handled per input topic and dead letters by reason
    go to the metrics.
    """
    dead = 0
    handled: dict[str, int] = {}
    for event in events:
        source = event.headers.get(SOURCE_HEADER, b"").decode() or "?"
        wm = event.headers.get(WATERMARK_HEADER)
        topic = decoder.base_topic(event.topic).value
        if wm is not None:
            handler.on_watermark(topic, event.partition, source, int(wm), out)
            continue
        handled[topic] = handled.get(topic, 0) + 1
        try:
            _handle(handler, decoder, event, topic, source, out)
        except (ContractError, LogicError, OrderingError, ValueError) as exc:
            dead += 1
            # A topic read by several stages (market.ticks) is dead-lettered once, by its
            # first reader; the others skip the record (and count it).
            if topic in getattr(handler, "dead_letters_skipped", ()):
                continue
            letter = dead_letter(event, handler.name, exc)
            out.record_to(Topic.DEADLETTER, 0, event.topic, letter, None, handler.name)
            metrics().dead_letter(handler.name, letter.reason)
    handler.end_batch(out)
    for topic, n in handled.items():
        metrics().stage_records(handler.name, topic, n)
    return dead


def source_id(topic: str, partition: int, header_source: str) -> str:
    """One watermark source of a merge: an input partition and the stage that wrote to it."""
    return f"{topic}/{partition}:{header_source}"


class ForwardedWatermarks:
    """Per-partition progress of a single-input stage, forwarded once per batch.

    A stage whose outputs keep their input's event time and partition (features, ensemble,
    supervisor, exit planner) may promise downstream what its input promised it: the last
    watermark or record time seen on that partition. A record sent on a partition implies its
    own time, so a watermark goes out only where time moved past the last record sent.
    """

    def __init__(self) -> None:
        self._seen: dict[int, int] = {}
        self._sent: dict[int, int] = {}

    def note(self, partition: int, time_ms: int) -> None:
        """Input ``partition`` has reached ``time_ms`` (a record time or a watermark)."""
        if time_ms > self._seen.get(partition, -(2**62)):
            self._seen[partition] = time_ms

    def sent(self, partition: int, time_ms: int) -> None:
        """A record at ``time_ms`` went out on ``partition``."""
        if time_ms > self._sent.get(partition, -(2**62)):
            self._sent[partition] = time_ms

    def emit(self, out: Emitter, topic: Topic, stage: str) -> None:
        """A watermark on each output partition whose input progressed past what was sent."""
        for partition, wm in self._seen.items():
            if wm > self._sent.get(partition, -(2**62)):
                self._sent[partition] = wm
                out.watermark(topic, (partition,), wm, f"{stage}/{partition}")


class MergeHandler:
    """A stage that merges inputs in event-time order (strategy, risk, execution).

    Subclasses say which inputs feed which merge (``merge_of``), the watermark sources of a
    merge and the shift each applies (``sources``; feedback inputs are shifted by the feedback
    lag), how a record sorts (``sort_key``), what to do with a released record (``process``)
    and where progress goes (``emit_progress``). Feedback sources start at the first time the
    merge's other inputs reach: no feedback can precede the stream that causes it, and without
    that floor the loop risk -> execution -> risk would start at minus infinity.
    """

    name: str
    inputs: tuple[Topic, ...]
    #: Instances of per-symbol stages (``QT_PARTITIONS``) and the shift of each input kind.
    partitions: int
    shifts: Mapping[Shift, int] = {}
    #: Records are buffered: each gets its span when released (parent kept with the item).
    spans_at_release = True
    #: Input topics whose released records get no span of their own (market data whose
    #: effects are traced where they matter, e.g. fills under their order's span).
    untraced_topics: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.merges: dict[int, EventTimeMerge[tuple[str, int, Any, Context]]] = {}
        self._shifts: dict[int, dict[str, int]] = {}
        self._feedback: dict[int, set[str]] = {}  # feedback sources not floored yet
        self._feedback_sources: dict[int, frozenset[str]] = {}
        self._sent: dict[int, int] = {}

    # -- to implement -------------------------------------------------------------------------
    def merge_of(self, topic: str, partition: int) -> int:
        """Which merge an input partition feeds (per-partition stages: the partition)."""
        return partition

    def sources(self, merge: int) -> dict[str, tuple[int, bool]]:
        """Watermark sources of ``merge``: ``{source_id: (shift_ms, is_feedback)}``."""
        return merge_sources(stage_spec(self.name), merge, self.partitions, self.shifts)

    def sort_key(self, topic: str, record: Any) -> SortKey:
        """Where ``record`` sorts in the merged order."""
        raise NotImplementedError

    def process(self, merge: int, topic: str, partition: int, record: Any, out: Emitter) -> None:
        """Handle a released record."""
        raise NotImplementedError

    def emit_progress(self, merge: int, watermark: int, out: Emitter) -> None:
        """Announce downstream that nothing before ``watermark`` will come from ``merge``."""
        for topic, partitions in progress_targets(stage_spec(self.name), merge, self.partitions):
            out.watermark(topic, partitions, watermark, f"{self.name}/{merge}")

    # -- the machinery ------------------------------------------------------------------------
    def _merge(self, merge: int) -> EventTimeMerge[tuple[str, int, Any, Context]]:
        m = self.merges.get(merge)
        if m is None:
            spec = self.sources(merge)
            m = self.merges[merge] = EventTimeMerge(spec)
            self._shifts[merge] = {src: shift for src, (shift, _) in spec.items()}
            self._feedback[merge] = {src for src, (_, fb) in spec.items() if fb}
            self._feedback_sources[merge] = frozenset(self._feedback[merge])
        return m

    def _floor_feedback(self, merge: int, time_ms: int) -> None:
        pending = self._feedback[merge]
        if pending:
            m = self.merges[merge]
            for src in pending:
                m.advance(src, time_ms)
            pending.clear()

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """Buffer ``record`` in its merge at its sort key."""
        merge = self.merge_of(topic, partition)
        m = self._merge(merge)
        src = source_id(topic, partition, source)
        sort = self.sort_key(topic, record)
        if src not in self._feedback[merge]:
            self._floor_feedback(merge, sort.time)
        m.add(src, sort, (topic, partition, record, otel_context.get_current()))

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """Advance the source's watermark, shifted like its records."""
        merge = self.merge_of(topic, partition)
        m = self._merge(merge)
        src = source_id(topic, partition, source)
        shifted = wm if wm >= END_OF_STREAM else wm + self._shifts[merge].get(src, 0)
        if src in self._shifts[merge] and src not in self._feedback[merge]:
            self._floor_feedback(merge, shifted)
        m.advance(src, shifted)

    def output_watermark(self, merge: int) -> int:
        """Event time before which ``merge`` will emit nothing more.

        Outputs are caused by buffered items or by future records of the primary (non-feedback)
        inputs, never by feedback alone (a closed trade or a reward changes state, not output).
        So feedback that has not arrived yet does not hold the promise back: when every primary
        input has ended and the buffer is empty, the stage announces the end too, instead of
        creeping forward one feedback round trip at a time.
        """
        m = self.merges[merge]
        primary = [s for s in self._shifts[merge] if s not in self._feedback_sources[merge]]
        low = m.low_watermark_of(primary)
        earliest = m.earliest_buffered()
        return low if earliest is None else min(low, earliest)

    def end_batch(self, out: Emitter) -> None:
        """Process what every merge can release, then announce each merge's progress."""
        for merge, m in self.merges.items():
            for topic, partition, record, parent in m.pop_ready():
                if topic in self.untraced_topics or not tracing.enabled():
                    self.process(merge, topic, partition, record, out)
                    continue
                name = f"{self.name} {topic}"
                attrs = {"qt.stage": self.name, "qt.input": topic, **record_attributes(record)}
                with tracing.record_span(name, parent, attrs):
                    self.process(merge, topic, partition, record, out)
            low = self.output_watermark(merge)
            if low > self._sent.get(merge, -(2**62)):
                self._sent[merge] = low
                self.emit_progress(merge, low, out)
