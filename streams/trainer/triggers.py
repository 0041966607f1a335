"""When the trainer retrains: the schedule and drift triggers, in event time (pure).

* **Schedule.** Event time is the ticks' time the trainer has read (:class:`TickClock`), never
  the wall clock. When it crosses a multiple of ``schedule_ms`` (midnight UTC, by default
  daily) a ``schedule`` trigger at that boundary is due. The first tick read only sets the
  current slot: a trainer started mid-day retrains at the next boundary.
* **Drift.** A ``DRIFT_DETECTED`` record on ``models.events`` is a ``drift`` trigger at its
  event time, unless an earlier drift trigger fired less than ``drift_cooldown_ms`` before it
  (every ensemble instance reports its own crossing, so drift comes in bursts: one retrain).
  The cool-down counts drift triggers only, so the two kinds never depend on the order in
  which the two topics were read.

A trigger is *ready* once the ticks before its time have all been read (its ``at_ms`` is at or
below the clock); the retrain trains on the ticks before ``at_ms``. Its id (``drift-<ms>``,
``schedule-<ms>``) is derived from its cause and ends the ``RETRAINED`` records' ids, so a
restarted trainer that reads them back, with the gate's decision on them, trains neither that
trigger nor an older one again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from streams.contracts.records import ModelEventRecorded
from streams.ordering import END_OF_STREAM
from streams.vocabulary import ModelEventKind

Cause = Literal["schedule", "drift", "operator"]
#: ``RETRAINED`` record ids are ``<model>:<version>:RETRAINED:<trigger id>``.
RETRAINED_MARK: Final = f":{ModelEventKind.RETRAINED.value}:"


@dataclass(frozen=True, slots=True)
class Trigger:
    """A reason to retrain now: train on the ticks before ``at_ms`` (event time)."""

    cause: Cause
    at_ms: int
    detail: str = ""

    @property
    def trigger_id(self) -> str:
        """``<cause>-<at_ms>``: the same cause gives the same id in every run."""
        return f"{self.cause}-{self.at_ms}"


@dataclass(frozen=True, slots=True)
class TriggerState:
    """What the trigger rules remember between records."""

    slot: int | None = None
    """Schedule slot (``event time // schedule_ms``) of the clock so far."""
    last_drift_ms: int | None = None
    """Event time of the last drift trigger fired (the cool-down counts from it)."""


def on_clock(state: TriggerState, clock_ms: int, schedule_ms: int
             ) -> tuple[TriggerState, list[Trigger]]:  # fmt: skip
    """The schedule triggers of the boundaries the clock crossed (none while it is off)."""
    if schedule_ms <= 0 or clock_ms >= END_OF_STREAM:
        return state, []
    slot = clock_ms // schedule_ms
    if state.slot is None or slot <= state.slot:
        return replace(state, slot=slot if state.slot is None else state.slot), []
    # a jump over several boundaries (a gap in the data) retrains once, at the newest
    boundary = slot * schedule_ms
    trigger = Trigger("schedule", boundary, f"event time crossed {_iso(boundary)}")
    return replace(state, slot=slot), [trigger]


def on_model_event(state: TriggerState, event: ModelEventRecorded, cooldown_ms: int
                   ) -> tuple[TriggerState, list[Trigger]]:  # fmt: skip
    """The drift trigger of a ``DRIFT_DETECTED`` record, outside the cool-down."""
    if event.kind != ModelEventKind.DRIFT_DETECTED:
        return state, []
    t = event.event_time_ms
    if state.last_drift_ms is not None and t - state.last_drift_ms < cooldown_ms:
        return state, []
    trigger = Trigger("drift", t, f"{event.event_id}: {event.detail}")
    return replace(state, last_drift_ms=t), [trigger]


def retrained_trigger(event: ModelEventRecorded) -> str | None:
    """The trigger id a ``RETRAINED`` record names (None for any other record)."""
    if event.kind != ModelEventKind.RETRAINED or RETRAINED_MARK not in event.event_id:
        return None
    return event.event_id.rsplit(RETRAINED_MARK, 1)[1]


@dataclass(frozen=True, slots=True)
class Choice:
    """What to do with the pending triggers now."""

    train: Trigger | None
    superseded: tuple[Trigger, ...] = ()
    """Ready triggers not trained: an older one than ``train`` (the newer data covers it)."""
    already: tuple[Trigger, ...] = ()
    """Ready triggers a ``RETRAINED`` record covers (trained, or superseded, before)."""
    waiting: tuple[Trigger, ...] = ()
    """Triggers whose ticks are not all read yet."""


def choose(pending: Iterable[Trigger], clock_ms: int, handled: Iterable[str]) -> Choice:
    """The newest ready trigger not covered yet; older ready ones are superseded by it.

    A trigger is covered when it, or a trigger at the same or a later time, is ``handled`` (its
    ``RETRAINED`` records and the gate's decision on them were read): a restarted trainer
    neither retrains it nor the ones that retrain superseded.
    """
    done = set(handled)
    done_ms = max((at for at in map(_at_of, done) if at is not None), default=None)
    ordered = sorted(set(pending), key=lambda t: (t.at_ms, t.cause))
    ready = [t for t in ordered if t.at_ms <= clock_ms]
    waiting = tuple(t for t in ordered if t.at_ms > clock_ms)

    def covered(t: Trigger) -> bool:
        return t.trigger_id in done or (done_ms is not None and t.at_ms <= done_ms)

    already = tuple(t for t in ready if covered(t))
    fresh = [t for t in ready if not covered(t)]
    if not fresh:
        return Choice(None, (), already, waiting)
    return Choice(fresh[-1], tuple(fresh[:-1]), already, waiting)


def _at_of(trigger_id: str) -> int | None:
    """The event time a trigger id ends with (None for an id of another form)."""
    _, _, at = trigger_id.rpartition("-")
    return int(at) if at.isdigit() else None


@dataclass
class TickClock:
    """Event time read on ``market.ticks``: the lowest progress over its partitions.

    A partition's progress is the newest tick time or in-band watermark read on it: every
    record still to come there sorts at or after it, so every tick before the lowest progress
    of all partitions has been read. A partition closed by the end-of-stream watermark no
    longer holds the clock back; when all are closed the clock is past the last tick.
    """

    partitions: int
    progress: dict[int, int] = field(default_factory=dict)
    closed: set[int] = field(default_factory=set)
    last_tick_ms: int | None = None

    def tick(self, partition: int, event_time_ms: int) -> None:
        """A tick read on ``partition``."""
        self._advance(partition, event_time_ms)
        self.last_tick_ms = max(self.last_tick_ms or event_time_ms, event_time_ms)

    def watermark(self, partition: int, watermark_ms: int) -> None:
        """An in-band watermark read on ``partition``."""
        if watermark_ms >= END_OF_STREAM:
            self.closed.add(partition)
            return
        self._advance(partition, watermark_ms)

    def _advance(self, partition: int, t: int) -> None:
        self.progress[partition] = max(self.progress.get(partition, t), t)

    @property
    def now_ms(self) -> int | None:
        """Every tick before this time has been read (None before one of each partition)."""
        open_ = [p for p in range(self.partitions) if p not in self.closed]
        if not open_:
            return None if self.last_tick_ms is None else self.last_tick_ms + 60_000
        if any(p not in self.progress for p in open_):
            return None
        return min(self.progress[p] for p in open_)


def recent_window(at_ms: int, lookback_days: float, warmup_ms: int) -> tuple[int, int]:
    """``[start, end)`` of a retrain at ``at_ms``: the last ``lookback_days`` of ticks, plus the
    feature warm-up before them (rows there only warm the features)."""
    start = at_ms - int(lookback_days * 86_400_000)
    return start - warmup_ms, at_ms


def _iso(ms: int) -> str:
    from streams.adapters.market_files import format_epoch_ms

    return format_epoch_ms(ms)
