"""Truthful health of a worker: per-stage progress, pending input, crashes, models.

``/health`` (liveness) fails when an agent crashed: the process answers, but a stage is gone
and only a restart brings it back. ``/ready`` (readiness) fails when any stage has had input
pending for longer than ``QT_STALL_AFTER_S`` without processing a record, when the models are
not loaded, or when the consumer holds no partitions. On testnet it also fails when the
gateway is silent (:meth:`HealthRegistry.watch_feed`): the gateway sends a snapshot per symbol on
every reconciliation, so no ``venue.events`` record for longer than a few reconciliations means
it is down or cut off from the exchange, and orders would go nowhere.

"Input pending" is measured, not guessed: the agent wrapper reports the offsets it processed
(:meth:`HealthRegistry.processed`), the worker's consumer reports the log end offsets of its
partitions (:meth:`HealthRegistry.refresh`); a stage has input pending when a partition it
reads has records past what it processed. For a partition the stage has not processed yet in
this process, the first end offset seen is the baseline: a backlog present at start counts
once new records arrive (or once the stage processes one). Wall-clock time is right here:
this is about the process, not the trading logic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.observability.metrics import Metrics, metrics
from streams.ordering import END_OF_STREAM

#: A Kafka topic partition as (broker-side topic name, partition).
TP = tuple[str, int]


@dataclass(slots=True)
class StageHealth:
    """What one stage (agent) has done and whether it keeps up."""

    name: str
    inputs: frozenset[str]
    last_progress_s: float | None = None
    watermark_ms: int | None = None
    next_offset: dict[TP, int] = field(default_factory=dict)
    baseline: dict[TP, int] = field(default_factory=dict)
    pending_since_s: float | None = None
    pending: int = 0
    stalled: bool = False
    crashed: str | None = None

    def as_dict(self, now_s: float) -> dict[str, Any]:
        """JSON view for the health endpoints."""
        idle = None if self.last_progress_s is None else round(now_s - self.last_progress_s, 3)
        return {
            "last_progress_s_ago": idle,
            "watermark_ms": self.watermark_ms,
            "pending": self.pending,
            "stalled": self.stalled,
            "crashed": self.crashed,
        }


def is_stalled(
    pending_since_s: float | None, last_progress_s: float | None, now_s: float, stall_after_s: float
) -> bool:
    """Input pending since ``pending_since_s`` and no progress for ``stall_after_s`` since.

    Progress before the input arrived does not count against the stage: a stage idle for an
    hour gets the full ``stall_after_s`` when records arrive.
    """
    if pending_since_s is None:
        return False
    since = max(pending_since_s, last_progress_s or pending_since_s)
    return now_s - since > stall_after_s


def pending_records(stage: StageHealth, highwaters: Mapping[TP, int | None]) -> int:
    """Records of the stage's assigned input partitions it has not processed yet."""
    total = 0
    for tp, high in highwaters.items():
        if tp[0] not in stage.inputs or high is None:
            continue
        done = stage.next_offset.get(tp)
        if done is None:
            done = stage.baseline.setdefault(tp, high)
        total += max(0, high - done)
    return total


@dataclass(slots=True)
class FeedHealth:
    """An input written by a process outside this worker that must keep arriving."""

    topic: str  # broker-side name
    writer: str  # who writes it ("gateway"), for the reason
    max_age_s: float
    setting: str  # the setting of ``max_age_s``, for the reason
    since_s: float  # when watching began: no record yet counts from here
    last_record_s: float | None = None
    #: partitions the writer must write (those its symbols map to), written yet or not
    expected: frozenset[int] = frozenset()
    held: bool = False  # this worker holds a partition of it that is expected or was written

    def age_s(self, now_s: float) -> float:
        """Seconds since its last record (since watching began, before the first)."""
        return now_s - (self.last_record_s if self.last_record_s is not None else self.since_s)

    def stale_reason(self, now_s: float) -> str | None:
        """Why the feed counts as silent, ``None`` while fresh or not held here.

        Only partitions expected or ever written count: a partition no symbol maps to never
        gets a record, and a worker holding only such partitions waits for nothing; one a
        symbol maps to counts from the start, so a writer that never wrote is caught too.
        """
        age = self.age_s(now_s)
        if not self.held or age <= self.max_age_s:
            return None
        return (
            f"{self.writer} silent: no {self.topic} record for {age:.0f} s "
            f"(more than {self.setting}={self.max_age_s:g})"
        )

    def as_dict(self, now_s: float) -> dict[str, Any]:
        """JSON view for the health endpoints."""
        return {
            "writer": self.writer,
            "last_record_s_ago": round(self.age_s(now_s), 3),
            "max_age_s": self.max_age_s,
            "held": self.held,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """One endpoint's answer: ok or not, and why."""

    ok: bool
    reasons: tuple[str, ...]
    body: dict[str, Any]

    @property
    def status(self) -> int:
        """HTTP status: 200 when ok, 503 otherwise."""
        return 200 if self.ok else 503


class HealthRegistry:
    """Per-stage liveness state of one worker, fed by the agents and the consumer."""

    def __init__(
        self,
        stall_after_s: float,
        *,
        clock: Callable[[], float] = time.time,
        sink: Metrics | None = None,
    ) -> None:
        self.stall_after_s = stall_after_s
        self.clock = clock
        self._sink = sink
        self.stages: dict[str, StageHealth] = {}
        self.models: dict[str, str] = {}
        self.model_error: str | None = None
        self.models_expected = False
        self.assigned = False
        #: ``topic/partition`` of every partition this worker holds (a fleet checks coverage).
        self.assignment: list[str] = []
        self.feeds: dict[str, FeedHealth] = {}

    @property
    def sink(self) -> Metrics:
        """Where stalled flags and lags are published (the process-wide metrics by default)."""
        return self._sink or metrics()

    def register(self, stage: str, inputs: Iterable[str]) -> None:
        """Watch ``stage``, which reads the broker-side topics ``inputs``."""
        self.stages[stage] = StageHealth(stage, frozenset(inputs))
        self.sink.stage_stalled(stage, False)

    def watch_feed(
        self,
        topic: str,
        writer: str,
        max_age_s: float,
        setting: str,
        expected: Iterable[int] = (),
    ) -> None:
        """Not ready when no record of ``topic`` (broker-side) was processed for ``max_age_s``
        while this worker holds a partition of it that is ``expected`` (the writer must write
        it) or was ever written."""
        self.feeds[topic] = FeedHealth(
            topic, writer, max_age_s, setting, self.clock(), expected=frozenset(expected)
        )

    def expect_models(self) -> None:
        """This worker scores models: not ready until :meth:`models_loaded`."""
        self.models_expected = True

    def models_loaded(self, versions: Mapping[str, str]) -> None:
        """The ensemble's models loaded with these versions."""
        self.models = dict(versions)
        self.model_error = None

    def model_failed(self, error: str) -> None:
        """Loading the models failed: not ready, with the reason."""
        self.model_error = error

    def processed(
        self, stage: str, positions: Mapping[TP, int], watermark_ms: int | None = None
    ) -> None:
        """``stage`` processed up to these offsets (last offset per partition) just now."""
        s = self.stages[stage]
        now = self.clock()
        s.last_progress_s = now
        for tp, offset in positions.items():
            if offset + 1 > s.next_offset.get(tp, -1):
                s.next_offset[tp] = offset + 1
            if (feed := self.feeds.get(tp[0])) is not None:
                feed.last_record_s = now
        if watermark_ms is not None and watermark_ms < END_OF_STREAM:
            s.watermark_ms = max(s.watermark_ms or watermark_ms, watermark_ms)
        self.sink.stage_progress(stage, now, s.watermark_ms)

    def crashed(self, stage: str, error: BaseException) -> None:
        """``stage``'s handler raised: the agent is gone (sticky until the process restarts)."""
        self.stages[stage].crashed = f"{type(error).__name__}: {error}"[:500]

    def _forget_unassigned(self, assigned: set[TP]) -> None:
        for s in self.stages.values():
            for known in (s.next_offset, s.baseline):
                for tp in [tp for tp in known if tp not in assigned]:
                    del known[tp]

    def refresh(self, highwaters: Mapping[TP, int | None]) -> None:
        """Re-evaluate every stage against the consumer's log end offsets (its assignment)."""
        now = self.clock()
        self.assigned = bool(highwaters)
        self.assignment = sorted(f"{t}/{p}" for t, p in highwaters)
        self._forget_unassigned(set(highwaters))
        for feed in self.feeds.values():
            feed.held = any(
                t == feed.topic and (high or p in feed.expected)
                for (t, p), high in highwaters.items()
            )
        for s in self.stages.values():
            s.pending = pending_records(s, highwaters)
            if s.pending == 0:
                s.pending_since_s = None
            elif s.pending_since_s is None:
                s.pending_since_s = now
            s.stalled = is_stalled(s.pending_since_s, s.last_progress_s, now, self.stall_after_s)
            self.sink.stage_stalled(s.name, s.stalled)
        for (topic, partition), high in highwaters.items():
            if high is None:
                continue
            readers = [s for s in self.stages.values() if topic in s.inputs]
            done = [s.next_offset.get((topic, partition), s.baseline.get((topic, partition), high))
                    for s in readers]  # fmt: skip
            if done:
                self.sink.consumer_lag(topic, partition, max(0, high - min(done)))

    def _body(self, now: float) -> dict[str, Any]:
        return {
            "stages": {name: s.as_dict(now) for name, s in sorted(self.stages.items())},
            "models": self.models,
            "model_error": self.model_error,
            "assigned": self.assigned,
            "assignment": self.assignment,
            "stall_after_s": self.stall_after_s,
            "feeds": {t: f.as_dict(now) for t, f in sorted(self.feeds.items())},
        }

    def liveness(self) -> Verdict:
        """``/health``: no agent crashed (the answer itself proves the event loop runs)."""
        now = self.clock()
        reasons = tuple(f"{s.name} crashed: {s.crashed}" for s in self.stages.values() if s.crashed)
        body = {"status": "fail" if reasons else "ok", "reasons": list(reasons), **self._body(now)}
        return Verdict(not reasons, reasons, body)

    def readiness(self) -> Verdict:
        """``/ready``: live, models loaded, partitions assigned, no stage stalled, no watched
        feed silent."""
        now = self.clock()
        reasons = list(self.liveness().reasons)
        if self.model_error:
            reasons.append(f"models failed to load: {self.model_error}")
        elif self.models_expected and not self.models:
            reasons.append("models not loaded yet")
        if not self.assigned:
            reasons.append("consumer holds no partitions")
        for s in self.stages.values():
            if s.stalled:
                reasons.append(
                    f"{s.name} stalled: {s.pending} records pending, no progress for "
                    f"more than {self.stall_after_s:g} s"
                )
        for feed in self.feeds.values():
            if (reason := feed.stale_reason(now)) is not None:
                reasons.append(reason)
        body = {"status": "fail" if reasons else "ok", "reasons": reasons, **self._body(now)}
        return Verdict(not reasons, tuple(reasons), body)
