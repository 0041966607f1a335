"""The trainer's consumer: ``market.ticks`` and ``models.events`` of a prefix drive retrains.

Not a Faust stage: a retrain takes minutes and must not hold up any partition of the topology,
so it runs in its own process, reading the topics like any other consumer (no group
membership: every partition is assigned from the beginning, nothing is committed).

1. ``models.events`` is read to its end first: the ``RETRAINED`` records and the gate's
   decisions on them name the triggers already done (before a restart; one trained but not
   yet decided is finished, see :func:`.retrain.retrain`), and each ``DRIFT_DETECTED`` is a
   drift trigger (:mod:`.triggers`).
2. Then both topics are read together: each tick goes into the kline buffer and moves the
   event-time clock (which fires the schedule), each new model event may trigger.
3. Whenever every partition has been read to its end (the backlog is done), the newest ready
   trigger not trained yet is retrained (:mod:`.retrain`); older ready ones are superseded by
   it and logged. Triggers whose ticks are not all read wait.

``once``: read to the end, retrain the newest ready trigger (or, if there is none, an
``operator`` trigger at the end of the ticks read) and return.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams import kafka_io
from streams.contracts.records import ModelEventRecorded, TickReceived
from streams.ordering import WATERMARK_HEADER, header_value
from streams.topics import Topic, topic_name
from streams.trainer.retrain import (
    RETRAIN_ERRORS,
    WARMUP_MS,
    KlineBuffer,
    RetrainOutcome,
    RetrainPlan,
    retrain,
    training_data,
)
from streams.trainer.triggers import (
    TickClock,
    Trigger,
    TriggerState,
    choose,
    on_clock,
    on_model_event,
    retrained_trigger,
)
from streams.vocabulary import ModelEventKind

if TYPE_CHECKING:
    from streams.config import Settings

POLL_S = 1.0
HOUR_MS = 3_600_000
GATE_DECISIONS = frozenset({ModelEventKind.PROMOTED, ModelEventKind.PROMOTION_REFUSED})
#: A trigger is done once one of these is on a candidate of it (a stream shadow decides later).
TRIGGER_DONE = GATE_DECISIONS | {ModelEventKind.SHADOW_STARTED}


class TrainerError(RuntimeError):
    """The trainer cannot run (no broker, unreadable topic, nothing to train on)."""


@dataclass
class TrainerState:
    """Everything the trainer learnt from the records read so far."""

    clock: TickClock
    triggers: TriggerState = field(default_factory=TriggerState)
    buffer: KlineBuffer = field(default_factory=KlineBuffer)
    pending: set[Trigger] = field(default_factory=set)
    handled: set[str] = field(default_factory=set)
    """Triggers done: the gate decided on their candidates (or, in this run, they failed)."""
    retrained: dict[tuple[str, str], str] = field(default_factory=dict)
    """(model, version) of each ``RETRAINED`` record read -> its trigger id."""
    seen: set[str] = field(default_factory=set)
    """Ids of the ``models.events`` records read (not published again after a restart)."""
    keep_ms: int = 0
    """Lookback plus warm-up of a retrain: how far before a trigger the buffer keeps bars."""
    ticks: int = 0
    undecodable: int = 0
    reported_ms: int | None = None

    def on_event(self, event: ModelEventRecorded, cooldown_ms: int) -> list[Trigger]:
        """A ``models.events`` record: a retrain's candidate or its gate decision, or a new
        drift trigger. A trigger counts as done only once the gate decided on a candidate of
        it: a trainer that crashed between training and deciding finishes it after a restart."""
        self.seen.add(event.event_id)
        trained = retrained_trigger(event)
        if trained is not None:
            self.retrained[(event.model, event.version)] = trained
        elif event.kind in TRIGGER_DONE and (event.model, event.version) in self.retrained:
            self.handled.add(self.retrained[(event.model, event.version)])
        self.triggers, fired = on_model_event(self.triggers, event, cooldown_ms)
        self.pending.update(fired)
        return fired

    def on_tick(self, partition: int, tick: TickReceived, schedule_ms: int) -> list[Trigger]:
        """A tick: into the buffer, the clock moves (the schedule may fire)."""
        self.ticks += 1
        self.buffer.add(tick)
        hour = (self.clock.now_ms or 0) // HOUR_MS
        self.clock.tick(partition, tick.event_time_ms)
        if (self.clock.now_ms or 0) // HOUR_MS > hour:
            self._forget_old()
        return self._clock_moved(schedule_ms)

    def _forget_old(self) -> None:
        """Drop the bars no retrain can use: older than the lookback of the oldest trigger that
        may still train (a pending one, else the clock)."""
        oldest = min([self.clock.now_ms or 0, *(t.at_ms for t in self.pending)])
        self.buffer.forget_before(oldest - self.keep_ms)

    def on_watermark(self, partition: int, watermark_ms: int, schedule_ms: int) -> list[Trigger]:
        """An in-band watermark on ``market.ticks``."""
        self.clock.watermark(partition, watermark_ms)
        return self._clock_moved(schedule_ms)

    def _clock_moved(self, schedule_ms: int) -> list[Trigger]:
        now = self.clock.now_ms
        if now is None:
            return []
        self.triggers, fired = on_clock(self.triggers, now, schedule_ms)
        self.pending.update(fired)
        return fired


@dataclass
class Trainer:
    """One trainer on one prefix (module doc)."""

    bootstrap: str
    prefix: str
    settings: Settings
    plan: RetrainPlan
    files: Path | None = None
    log: Callable[[str], None] = print
    publish: Callable[[list[ModelEventRecorded]], None] | None = None
    outcomes: list[RetrainOutcome] = field(default_factory=list)

    @property
    def ticks_topic(self) -> str:
        """``<prefix>market.ticks``."""
        return topic_name(Topic.MARKET_TICKS, self.prefix)

    @property
    def events_topic(self) -> str:
        """``<prefix>models.events``."""
        return topic_name(Topic.MODELS_EVENTS, self.prefix)

    def run(self, once: bool = False, stop: Callable[[], bool] = lambda: False
            ) -> list[RetrainOutcome]:  # fmt: skip
        """Consume and retrain until ``stop()`` (or, ``once``, after one retrain)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        consumer = kafka_io.consumer(
            kafka_io.ConsumerOptions(self.bootstrap, f"{self.prefix}trainer", partition_eof=True)
        )
        try:
            partitions = self._partitions(consumer)
            keep = int(self.plan.lookback_days * 86_400_000) + WARMUP_MS
            state = TrainerState(TickClock(len(partitions)), keep_ms=keep)
            events = [TopicPartition(self.events_topic, 0, OFFSET_BEGINNING)]
            consumer.assign(events)
            at_end = _empty(consumer, events)
            self._read_to_end(consumer, state, {(self.events_topic, 0)}, at_end)
            self.log(f"models.events read: {len(state.handled)} trigger(s) trained before, "
                     f"{len(state.pending)} drift trigger(s)")  # fmt: skip
            ticks = [TopicPartition(self.ticks_topic, p, OFFSET_BEGINNING) for p in partitions]
            consumer.incremental_assign(ticks)
            at_end |= _empty(consumer, ticks)
            ends = {(self.ticks_topic, p) for p in partitions} | {(self.events_topic, 0)}
            while not stop():
                self._read_to_end(consumer, state, ends, at_end, stop)
                self._caught_up(state)
                outcome = self._retrain_due(state, once)
                if once:
                    return [] if outcome is None else [outcome]
        finally:
            consumer.close()
        return self.outcomes

    def _caught_up(self, state: TrainerState) -> None:
        """A progress line when the backlog was read (once per new event time)."""
        from streams.adapters.market_files import format_epoch_ms

        now = state.clock.now_ms
        if now is None or now == state.reported_ms:
            return
        state.reported_ms = now
        waiting = ", ".join(sorted(t.trigger_id for t in state.pending)) or "none"
        self.log(
            f"read {state.ticks:,} ticks ({state.undecodable} undecodable), event time "
            f"{format_epoch_ms(now)}, {len(state.buffer):,} bars kept; triggers: {waiting}"
        )

    def _partitions(self, consumer: Any) -> list[int]:
        """Create ``models.events`` if missing (nothing drifted or was promoted yet); the
        partitions of ``market.ticks``."""
        from streams.topology import partitions_of

        kafka_io.ensure_topics(
            self.bootstrap,
            {self.events_topic: partitions_of(Topic.MODELS_EVENTS, self.settings.partitions)},
            replication_factor=self.settings.replication_factor, keep_forever=True,
        )  # fmt: skip
        try:
            return kafka_io.topic_partitions(consumer, self.bootstrap, self.ticks_topic, 30.0)
        except kafka_io.UnknownTopicError as exc:
            raise TrainerError(f"{exc}: record ticks first (`quantum-trader replay` or "
                               "`quantum-trader live`)") from exc  # fmt: skip

    def _read_to_end(self, consumer: Any, state: TrainerState, ends: set[tuple[str, int]],
                     at_end: set[tuple[str, int]], stop: Callable[[], bool] = lambda: False
                     ) -> None:  # fmt: skip
        """Poll at least once, then until every partition of ``ends`` is at its end.

        ``at_end`` holds the partitions whose end-of-partition event came after their last
        record; the broker reports the end once, so it lives as long as the assignment.
        """
        from confluent_kafka import KafkaError

        while not stop():
            msg = consumer.poll(POLL_S)
            if msg is not None:
                where = (msg.topic() or "", msg.partition() or 0)
                error = msg.error()
                if error is None:
                    at_end.discard(where)
                    self._handle(state, msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(where)
                else:
                    raise TrainerError(f"reading {where[0]}: {kafka_io.describe(error)}")
            if ends <= at_end:
                return

    def _handle(self, state: TrainerState, msg: Any) -> None:
        """One record of either topic (an undecodable one is counted and skipped)."""
        from streams.contracts.codec import topic_codec
        from streams.contracts.errors import ContractError

        cfg = self.settings.trainer
        partition = msg.partition() or 0
        if msg.topic() == self.events_topic:
            try:
                event = topic_codec(Topic.MODELS_EVENTS).decode_record(msg.value() or b"")
            except ContractError:
                state.undecodable += 1
                return
            assert isinstance(event, ModelEventRecorded)  # the topic's contract
            if event.kind in GATE_DECISIONS | {ModelEventKind.SHADOW_SCORED}:
                self._keep_decision(event)
            for t in state.on_event(event, cfg.drift_cooldown_ms):
                self.log(f"[bold]trigger[/] {t.trigger_id}: {t.detail}")
            return
        mark = header_value(msg.headers(), WATERMARK_HEADER)
        if mark is not None:
            fired = state.on_watermark(partition, int(mark), cfg.schedule_ms)
        else:
            try:
                tick = topic_codec(Topic.MARKET_TICKS).decode_record(msg.value() or b"")
            except ContractError:
                state.undecodable += 1  # the features stage dead-letters it with its reason
                return
            assert isinstance(tick, TickReceived)
            fired = state.on_tick(partition, tick, cfg.schedule_ms)
        for t in fired:
            self.log(f"[bold]trigger[/] {t.trigger_id}: {t.detail}")

    def _keep_decision(self, event: ModelEventRecorded) -> None:
        """A gate record read on the topic (the topology's promotion stage decides a stream
        shadow) into the registry's history; a ``PROMOTED`` also into its index, so a worker
        started later serves the promoted set. A no-op for the trainer's own records."""
        from models.promotion import append_events, apply_recorded, read_events

        registry = self.plan.registry
        if any(e.event_id == event.event_id for e in read_events(registry)):
            return
        append_events(registry, [event])
        apply_recorded(registry, [event])
        if event.kind is not ModelEventKind.SHADOW_SCORED:
            self.log(f"[bold]{event.kind.value}[/] {event.model} {event.version}: {event.detail}")

    def _retrain_due(self, state: TrainerState, once: bool) -> RetrainOutcome | None:
        """Caught up: retrain the newest ready trigger (``once``: or an operator trigger)."""
        now = state.clock.now_ms
        choice = choose(state.pending, -1 if now is None else now, state.handled)
        newest = choice.train.trigger_id if choice.train else ""
        for t in choice.superseded:
            self.log(f"{t.trigger_id} superseded by {newest} (it trains on newer ticks)")
        state.pending.difference_update(choice.superseded + choice.already)
        trigger = choice.train
        if trigger is None and once:
            if state.clock.last_tick_ms is None:
                raise TrainerError(f"no ticks in {self.ticks_topic}: nothing to train on")
            end = state.clock.last_tick_ms + 60_000 if now is None else now
            trigger = Trigger("operator", end, "quantum-trader trainer --once")
        if trigger is None:
            return None
        state.pending.discard(trigger)
        state.handled.add(trigger.trigger_id)  # a failed retrain is not retried in a loop
        try:
            data = training_data(trigger, self.plan, state.buffer, self.files)
            outcome = retrain(
                trigger,
                data,
                self.plan,
                self.settings,
                lambda events: self._publish(events, state.seen),
                self.log,
            )
        except RETRAIN_ERRORS as exc:
            if once:
                raise
            self.log(f"[red]retrain {trigger.trigger_id} failed:[/red] {exc}")
            return None
        self.outcomes.append(outcome)
        return outcome

    def _publish(self, events: list[ModelEventRecorded], seen: set[str]) -> None:
        """Produce the records not read on ``models.events`` already (a resumed retrain makes
        its earlier records again)."""
        events = [e for e in events if e.event_id not in seen]
        if not events:
            return
        if self.publish is not None:
            self.publish(events)
            return
        from streams.trainer.publish import publish_model_events

        publish_model_events(self.bootstrap, self.prefix, events)


def _empty(consumer: Any, partitions: list[Any]) -> set[tuple[str, int]]:
    """The partitions holding no record yet: at their end without waiting for the broker to
    say so (an empty partition's end-of-partition event is not to be relied on)."""
    out = set()
    for tp in partitions:
        low, high = consumer.get_watermark_offsets(tp, timeout=10.0, cached=False)
        if high <= low:
            out.add((tp.topic, tp.partition))
    return out
