"""What every agent shares: decoding with dead letters, in-band watermarks, batched sends.

An agent is a :class:`StageHandler` (pure Python, no Faust) driven by :func:`drive`, which
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

import hashlib
import logging
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext

from streams.contracts.base import AvroRecord
from streams.contracts.codec import TopicCodec, topic_codec
from streams.contracts.deadletters import bounded_payload
from streams.contracts.errors import ContractError
from streams.contracts.records import DeadLettered, TickReceived
from streams.contracts.ticks import TickHistory, TickRejected
from streams.errors import LogicError, StageError
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

log = logging.getLogger(__name__)

#: Puts back the state one record's handling may have changed (see ``checkpoint``).
Restore = Callable[[], None]
#: Reason of a dead letter whose cause is our code, not the input.
STAGE_ERROR = "stage_error"


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
    out.record_to(Topic.DEADLETTER, 0, letter.source_topic or "", letter, None, out.stage)
    metrics().dead_letter(letter.stage, letter.reason)
    if letter.reason == STAGE_ERROR:
        metrics().stage_error(letter.stage, letter.error_type)
        log.error(
            "stage %s failed on %s:%s:%s (dead-lettered, the stream goes on)",
            letter.stage, letter.source_topic, letter.source_partition, letter.source_offset,
            exc_info=error,
        )  # fmt: skip


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


class InvalidWatermarkError(Exception):
    """A ``qt-watermark`` header that is not an integer event time."""


def parse_watermark(value: bytes) -> int:
    """The event time of a ``qt-watermark`` header (:class:`InvalidWatermarkError` if none)."""
    try:
        return int(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        detail = f"qt-watermark header {value[:40]!r} is not an integer"
        raise InvalidWatermarkError(detail) from None


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
            out.position = None
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

    def emit(self, out: Emitter, topic: Topic, stage: str, to_partition: int | None = None) -> None:
        """A watermark on each output partition whose input progressed past what was sent.

        ``to_partition``: every input partition's progress goes to that one output partition
        (a single-partition topic), each under its own source ``stage/<input partition>``.
        """
        for partition, wm in self._seen.items():
            if wm > self._sent.get(partition, -(2**62)):
                self._sent[partition] = wm
                target = partition if to_partition is None else to_partition
                out.watermark(topic, (target,), wm, f"{stage}/{partition}")


#: A merge's buffered item: input topic, partition, record, trace parent, where it was read.
Buffered = tuple[str, int, Any, Context, SourcePosition | None]


class MergeHandler:
    """A stage that merges inputs in event-time order (strategy, risk, execution).

    Subclasses say which inputs feed which merge (``merge_of``), the watermark sources of a
    merge and the shift each applies (``sources``; feedback inputs are shifted by the feedback
    lag), how a record sorts (``sort_key``), what to do with a released record (``process``)
    and where progress goes (``emit_progress``). Feedback sources start at the first time the
    merge's other inputs reach: no feedback can precede the stream that causes it, and without
    that floor the loop risk -> execution -> risk would start at minus infinity.

    A released record that fails in ``process`` is dead-lettered (its value re-encoded, its
    source position kept with it in the buffer), its state put back (``checkpoint``) and its
    output dropped; the release goes on with the next record.
    """

    name: str
    inputs: tuple[Topic, ...]
    #: Instances of per-symbol stages (``QT_PARTITIONS``) and the shift of each input kind.
    partitions: int
    shifts: Mapping[Shift, int] = {}
    #: Records are buffered: each gets its span when released (parent kept with the item).
    spans_at_release = True
    #: Records are handled when released (``end_batch``), isolated there.
    buffers_records = True
    #: Input topics whose released records get no span of their own (market data whose
    #: effects are traced where they matter, e.g. fills under their order's span).
    untraced_topics: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.merges: dict[int, EventTimeMerge[Buffered]] = {}
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
    def _merge(self, merge: int) -> EventTimeMerge[Buffered]:
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
        # add() refuses a record behind its source's watermark before changing anything; the
        # floor comes after it, so a refused record leaves the merge as it was.
        m.add(src, sort, (topic, partition, record, otel_context.get_current(), out.position))
        if src not in self._feedback[merge]:
            self._floor_feedback(merge, sort.time)

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
            for topic, partition, record, parent, position in m.pop_ready():
                try:
                    self._release(merge, topic, partition, record, parent, out)
                except Exception as exc:
                    at = position or SourcePosition(topic, partition, -1)
                    letter = released_dead_letter(self.name, topic, at, record, exc)
                    send_dead_letter(out, letter, exc)
            low = self.output_watermark(merge)
            if low > self._sent.get(merge, -(2**62)):
                self._sent[merge] = low
                self.emit_progress(merge, low, out)

    def _release(
        self, merge: int, topic: str, partition: int, record: Any, parent: Context, out: Emitter
    ) -> None:
        """``process`` one released record in its span, all or nothing."""

        def act() -> None:
            self.process(merge, topic, partition, record, out)

        if topic in self.untraced_topics or not tracing.enabled():
            apply_isolated(self, topic, partition, record, out, act)
            return
        name = f"{self.name} {topic}"
        attrs = {"qt.stage": self.name, "qt.input": topic, **record_attributes(record)}
        with tracing.record_span(name, parent, attrs):
            apply_isolated(self, topic, partition, record, out, act)


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
