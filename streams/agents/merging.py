"""Event-time merges of the stages that join inputs (strategy, risk, execution), and the
forwarded progress of single-input stages.

Which watermark sources a merge waits for, and where a stage announces its progress, come from
the declaration (:func:`streams.topology.merge_sources` and
:func:`~streams.topology.progress_targets`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from streams.agents.base import Emitter, SourcePosition, record_attributes
from streams.agents.dead_letters import released_dead_letter, send_dead_letter
from streams.agents.dispatch import apply_isolated
from streams.agents.durable import (
    bytes_to_state,
    context_from_state,
    context_to_state,
    position_from_state,
    position_to_state,
    record_from_state,
    record_to_state,
)
from streams.contracts.codec import topic_codec
from streams.observability import tracing
from streams.ordering import (
    END_OF_STREAM,
    EventTimeMerge,
    SortKey,
)
from streams.topics import Topic
from streams.topology import Shift, merge_sources, progress_targets, stage_spec

log = logging.getLogger(__name__)


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

        ``to_partition``: every input partition's progress goes to that one partition (of a
        single-partition output), each under its own source ``stage/<input partition>``.
        """
        for partition, wm in self._seen.items():
            if wm > self._sent.get(partition, -(2**62)):
                self._sent[partition] = wm
                target = partition if to_partition is None else to_partition
                out.watermark(topic, (target,), wm, f"{stage}/{partition}")

    def to_state(self) -> dict[str, Any]:
        """Plain state (:mod:`streams.agents.durable`)."""
        return {"seen": self._seen, "sent": self._sent}

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`."""
        self._seen = {int(p): int(t) for p, t in data["seen"].items()}
        self._sent = {int(p): int(t) for p, t in data["sent"].items()}


#: A merge's buffered item: input topic, partition, record, trace parent, where it was read,
#: and the record's wire bytes as read (what the stored state keeps: no re-encoding per flush).
Buffered = tuple[str, int, Any, Context, SourcePosition | None, bytes | None]


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

    def buffered_form(self, topic: str, record: Any) -> Any:
        """What the merge keeps of ``record`` until its release (default: all of it).

        A stage that reads only part of a large record returns the part: the buffer, and the
        state stored at every flush, stay small while the record waits for its watermark.
        """
        return record

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
        kept, raw = self.buffered_form(topic, record), out.raw
        if kept is not record:
            raw = topic_codec(topic).encode(kept)  # once, not at every flush
        m.add(src, sort, (topic, partition, kept, otel_context.get_current(), out.position, raw))
        # Only a gating primary input floors the feedback: an operator command (no watermark
        # source) may be stamped hours ahead of the stream, and flooring at its time made every
        # earlier closed trade "late" and dead-lettered (found by the crash-restart test).
        if src in self._shifts[merge] and src not in self._feedback[merge]:
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
            for topic, partition, record, parent, position, _raw in m.pop_ready():
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

    # -- durable state ------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Every merge's watermarks and buffer (records as wire bytes), and the progress sent.

        A subclass adds its own state to this document (``super().to_state() | {...}``).
        """

        def encode(item: Buffered) -> list[Any]:
            topic, partition, record, parent, position, raw = item
            value = record_to_state(topic, record) if raw is None else bytes_to_state(raw)
            return [
                topic, partition, value, context_to_state(parent), position_to_state(position),
            ]  # fmt: skip

        return {
            "merges": {str(m): merge.to_dict(encode) for m, merge in self.merges.items()},
            "feedback_pending": {str(m): sorted(p) for m, p in self._feedback.items()},
            "progress_sent": {str(m): t for m, t in self._sent.items()},
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`, onto a fresh handler."""

        def decode(value: list[Any]) -> Buffered:
            topic, partition, record, parent, position = value
            return (
                topic, int(partition), record_from_state(topic, record),
                context_from_state(parent) or Context(), position_from_state(position), None,
            )  # fmt: skip

        for m, merge in data["merges"].items():
            self._merge(int(m))  # the merge's sources and shifts, from the declaration
            self.merges[int(m)] = EventTimeMerge.from_dict(merge, decode)
        for m, pending in data["feedback_pending"].items():
            self._feedback[int(m)] = set(pending)
        self._sent = {int(m): int(t) for m, t in data["progress_sent"].items()}

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
