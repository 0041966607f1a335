"""The fast in-process runner: recorded market files through every stage, no broker.

It executes the event-time semantics documented in :mod:`streams.stages` (the reference the
Faust topology reproduces) with the very same stage processors, and hands every record it
produces, in order, to a sink (usually :class:`streams.report.ReportBuilder`).

Throughput comes from batching the ensemble: features and signals depend on market data only, so
the runner scores ``block_minutes`` minutes of every symbol in one call per model, then steps
through those minutes one by one for everything that depends on feedback.

Per-stage latency (``time.perf_counter_ns`` around each stage call, per record; the
ensemble amortised per row) is measured only for the report, never used by the logic.
"""

from __future__ import annotations

import heapq
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from models.features import FeatureState
from streams.adapters.market_files import ALL_TIME, TimeWindow, open_data_set
from streams.adapters.market_rows import RejectedRow, ReplayItem, dead_letter
from streams.config import Settings
from streams.contracts.base import AvroRecord
from streams.contracts.records import (
    ControlCommand,
    DeadLettered,
    DecisionSized,
    FeaturesComputed,
    ModelEventRecorded,
    OrderApproved,
    RewardComputed,
    SignalScored,
    TickKind,
    TickReceived,
    TradeClosed,
    UniverseChanged,
    topic_of,
)
from streams.contracts.ticks import TickHistory, TickRejected
from streams.stages import (
    EnsembleStage,
    ExecutionStage,
    ExecutionState,
    ExitPlannerStage,
    FeaturesStage,
    LearningStage,
    RiskStage,
    RiskState,
    Scorer,
    StrategyStage,
    StrategyState,
    SupervisorStage,
    partition_for,
)
from streams.stages.drift import DriftWatch, drift_monitor
from streams.stages.features import bar_closed
from streams.stages.hotswap import Loader
from streams.stages.risk import command_order
from streams.stages.supervisor import SupervisorState
from streams.topics import Topic
from streams.topology import STAGES, BuildContext, StageSpec, partitions_of
from streams.vocabulary import ModelEventKind

Sink = Callable[[AvroRecord], None]


class RunError(Exception):
    """The run cannot start or continue (no data in range, unusable configuration)."""


@dataclass
class RunStats:
    """What the runner measured (counts of records are the report's job)."""

    bars: int = 0
    minutes: int = 0
    elapsed_s: float = 0.0
    latency_ns: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    open_positions_at_end: int = 0
    model_versions: dict[str, str] = field(default_factory=dict)

    @property
    def bars_per_s(self) -> float:
        """Closed klines processed per wall-clock second (whole pipeline)."""
        return self.bars / self.elapsed_s if self.elapsed_s > 0 else 0.0


_TRADE, _REWARD = 0, 1


#: The declared stages this runner calls directly, in the order of the semantics above.
BUILT_IN = ("features", "ensemble", "supervisor", "strategy", "risk", "exits", "execution",
            "learning")  # fmt: skip
#: Stages a backtest does not run: shadow scoring needs a candidate the trainer announces on
#: the stream, and its records never reach an order, so a run's trades are the same without.
STREAM_ONLY = ("shadow", "promotion")


class Pipeline:
    """All stage processors and their states for one run; :meth:`on_minute` is one step.

    The stages come from the declaration (``streams/topology.py``): the built-in ones are
    called in the reference order; any other declared stage is driven through its handler,
    fed every record of its input topics as the run produces it (:class:`TapStages`).
    """

    def __init__(
        self,
        settings: Settings,
        scorer: Scorer,
        sink: Sink,
        *,
        measure_latency: bool = True,
        stages: Sequence[StageSpec] = STAGES,
        commands: Sequence[ControlCommand] = (),
        universe: Sequence[UniverseChanged] = (),
        model_events: Sequence[ModelEventRecorded] = (),
    ) -> None:
        missing = [name for name in BUILT_IN if name not in {s.name for s in stages}]
        if missing:
            raise RunError(f"the topology declares no stage {', '.join(missing)}")
        self.cfg = settings
        extra = [s for s in stages if s.name not in BUILT_IN + STREAM_ONLY]
        self.sink = TapStages(settings, extra, sink).send if extra else sink
        self.features = FeaturesStage()
        self.ensemble = EnsembleStage.from_settings(settings, scorer, swap_loader(settings))
        #: Drift per ensemble instance (partition), as the topology measures it: each signal
        #: carries its instance's level, which the policy layer reads.
        self.drift: dict[int, DriftWatch] = {}
        self._monitor_for = drift_monitor(settings)
        self.swap(model_events)
        self.supervisor = SupervisorStage.from_settings(settings, scorer.names, scorer.versions)
        self.strategy = StrategyStage.from_settings(settings)
        self.risk = RiskStage.from_settings(settings)
        self.planner = ExitPlannerStage.from_settings(settings)
        self.execution = ExecutionStage.from_settings(settings)
        self.learning = LearningStage.from_settings(settings)
        self.feature_states: dict[str, FeatureState | None] = {}
        self.supervisor_states: dict[int, SupervisorState] = {}
        self.strategy_states: dict[str, StrategyState] = {}
        self.execution_states: dict[str, ExecutionState] = {}
        self.risk_state: RiskState | None = None
        self.feedback: list[tuple[int, int, str, str, AvroRecord]] = []
        #: Operator commands in the risk merge's order: event time, then as issued.
        self.commands = sorted(commands, key=lambda c: (c.event_time_ms, command_order(c)))
        #: Live universe changes in the risk merge's order (file replays have none).
        self.universe = sorted(universe, key=lambda u: (u.event_time_ms, u.event_id))
        self.stats = RunStats(model_versions=dict(scorer.versions))
        self._timed = measure_latency

    # ------------------------------------------------------------------ helpers
    def swap(self, events: Sequence[ModelEventRecorded]) -> None:
        """Hand ``models.events`` records to the ensemble before any row, as a replay whose
        records are on the topic first: each swap serves from its event time on."""
        for event in sorted(events, key=lambda e: (e.event_time_ms, e.event_id)):
            self.ensemble.on_model_event(event)
        failed = [e.detail for e in self.ensemble.events if e.kind is ModelEventKind.LOAD_FAILED]
        self.ensemble.events = []  # models.events is no reported topic
        if failed:
            raise RunError(f"a model swap cannot load: {'; '.join(failed)}")

    def _time(self, stage: str, started: int, n: int = 1) -> None:
        if self._timed and n:
            per = (time.perf_counter_ns() - started) // n
            self.stats.latency_ns[stage].extend([per] * n)

    def _watched(self, row: FeaturesComputed, signal: SignalScored) -> SignalScored:
        """The signal stamped with its ensemble instance's drift level."""
        p = partition_for(row.symbol, self.cfg.partitions)
        watch = self.drift.get(p)
        if watch is None:
            watch = self.drift[p] = DriftWatch(self._monitor_for)
        return watch.observe(row, signal)[0]

    def _strategy_state(self, symbol: str) -> StrategyState:
        st = self.strategy_states.get(symbol)
        if st is None:
            st = self.strategy_states[symbol] = self.strategy.new_state()
        return st

    def _execution_state(self, symbol: str) -> ExecutionState:
        st = self.execution_states.get(symbol)
        if st is None:
            st = self.execution_states[symbol] = self.execution.new_state()
        return st

    def _supervisor_state(self, symbol: str) -> SupervisorState:
        p = partition_for(symbol, self.cfg.partitions)
        st = self.supervisor_states.get(p)
        if st is None:
            st = self.supervisor_states[p] = self.supervisor.new_state()
        return st

    def _queue(self, record: TradeClosed | RewardComputed) -> None:
        if isinstance(record, TradeClosed):
            key = (record.event_time_ms, _TRADE, record.symbol, record.trade_id)
        else:
            key = (record.event_time_ms, _REWARD, record.symbol, record.reward_id)
        heapq.heappush(self.feedback, (*key, record))

    # ------------------------------------------------------------------ the block
    def score_block(
        self, minutes: list[tuple[int, list[TickReceived]]]
    ) -> list[tuple[list[FeaturesComputed], list[SignalScored]]]:
        """Features and ensemble signals of several minutes at once, per minute.

        Neither depends on trades, rewards or any other feedback (they are functions of the
        market data alone), so scoring a block of minutes in one batch before the minutes are
        stepped through changes no result; it only amortises the scorer's per-call cost.
        """
        per_minute = [self._features(ticks) for _t, ticks in minutes]
        rows = [row for minute_rows in per_minute for row in minute_rows]
        started = time.perf_counter_ns()
        scored = self.ensemble.on_features(rows)
        signals = iter([self._watched(r, s) for r, s in zip(rows, scored, strict=True)])
        self._time("ensemble", started, len(rows))
        return [(r, [next(signals) for _ in r]) for r in per_minute]

    # ------------------------------------------------------------------ the minute
    def on_minute(
        self,
        t: int,
        ticks: list[TickReceived],
        rows: list[FeaturesComputed],
        signals: list[SignalScored],
    ) -> None:
        """Steps 0-2 of the semantics for minute ``t`` (klines, rows and signals by symbol)."""
        if self.risk_state is None:
            self.risk_state = self.risk.new_state(t)
        # Risk's merge order at time t: feedback, then commands, then bars (streams.agents.risk).
        self.apply_commands(self.risk_state, t - 1)
        self.apply_feedback(t - self.cfg.feedback_lag_ms)
        self.apply_commands(self.risk_state, t)
        self.apply_universe(self.risk_state, t)
        for tick in ticks:
            self.sink(tick)
            self._execute_bar(self.risk_state, tick)
        for row in rows:
            self.sink(row)
            self.strategy.on_features(self._strategy_state(row.symbol), row)
        decisions = self._signals(signals)
        self._orders(self.risk_state, decisions)
        self.stats.minutes += 1
        self.stats.bars += len(ticks)

    def apply_feedback(self, until_ms: int) -> None:
        """Apply queued trades (to risk) and rewards (to strategy) stamped ``<= until_ms``."""
        risk = self.risk_state
        while self.feedback and self.feedback[0][0] <= until_ms:
            record = heapq.heappop(self.feedback)[-1]
            if isinstance(record, TradeClosed):
                if risk is not None:
                    self.risk.on_trade_closed(risk, record)
                    self._mode_change(risk, record.event_time_ms, record.trade_id)
            elif isinstance(record, RewardComputed):
                self.strategy.on_reward(self._strategy_state(record.symbol), record)

    def _mode_change(self, risk: RiskState, t: int, cause: str) -> None:
        """Sink the portfolio mode's change ``cause`` made (as the risk handler sends it)."""
        change = self.risk.mode_change(risk, t, cause)
        if change is not None:
            self.sink(change)

    def apply_commands(self, risk: RiskState, until_ms: int) -> None:
        """Apply the operator commands stamped ``<= until_ms`` (halt, resume)."""
        while self.commands and self.commands[0].event_time_ms <= until_ms:
            # Not sunk: control.commands is no reported topic (the demo's report has none).
            command = self.commands.pop(0)
            self.risk.on_command(risk, command)
            self._mode_change(risk, command.event_time_ms, command.command_id)

    def apply_universe(self, risk: RiskState, until_ms: int) -> None:
        """Apply the universe changes stamped ``<= until_ms`` (wind-down of leavers)."""
        while self.universe and self.universe[0].event_time_ms <= until_ms:
            # Not sunk: universe.events is no reported topic.
            self.risk.on_universe(risk, self.universe.pop(0))

    def _execute_bar(self, risk: RiskState, tick: TickReceived) -> None:
        bar = bar_closed(tick)  # what the topology's features stage sends risk on market.bars
        if bar is not None:
            self.risk.on_bar(risk, bar)
        started = time.perf_counter_ns()
        records = self.execution.on_tick(self._execution_state(tick.symbol), tick)
        self._time("execution", started)
        for rec in records:
            self.sink(rec)
            if isinstance(rec, TradeClosed):
                self._queue(rec)
                for reward in self.learning.on_trade_closed(rec):
                    self.sink(reward)
                    self._queue(reward)

    def _features(self, ticks: list[TickReceived]) -> list[FeaturesComputed]:
        rows: list[FeaturesComputed] = []
        for tick in ticks:
            started = time.perf_counter_ns()
            state, row = self.features.on_tick(self.feature_states.get(tick.symbol), tick)
            self.feature_states[tick.symbol] = state
            self._time("features", started)
            if row is not None:
                rows.append(row)
        return rows

    def _signals(self, signals: list[SignalScored]) -> list[DecisionSized]:
        decisions: list[DecisionSized] = []
        for s in signals:
            self.sink(s)
            started = time.perf_counter_ns()
            supervised = self.supervisor.on_signal(self._supervisor_state(s.symbol), s)
            self._time("supervisor", started)
            if supervised is None:
                continue
            self.sink(supervised)
            started = time.perf_counter_ns()
            decision = self.strategy.on_signal(self._strategy_state(s.symbol), supervised)
            self._time("strategy", started)
            if decision is not None:
                self.sink(decision)
                decisions.append(decision)
        return decisions

    def _orders(self, risk: RiskState, decisions: list[DecisionSized]) -> None:
        for d in sorted(decisions, key=lambda x: x.symbol):
            started = time.perf_counter_ns()
            verdict = self.risk.on_decision(risk, d)
            self._time("risk", started)
            self.sink(verdict)
            self._mode_change(risk, d.event_time_ms, d.decision_id)
            if not isinstance(verdict, OrderApproved):
                continue
            started = time.perf_counter_ns()
            planned = self.planner.on_approved(verdict)
            self._time("exit_planner", started)
            self.sink(planned)
            self.execution.on_order(self._execution_state(d.symbol), planned)

    def finish(self) -> None:
        """End of data: apply the remaining feedback; count positions still open."""
        self.apply_feedback(2**62)
        self.stats.open_positions_at_end = sum(
            st.open_positions() for st in self.execution_states.values()
        )


class TapStages:
    """Declared stages the runner has no built-in step for, driven through their handlers.

    Every record the run produces passes through :meth:`send`: it goes to the sink, and to
    each extra stage that reads its topic (partition from the key, like the producer's), whose
    outputs are sent the same way. Such a stage sees its inputs in the run's order; merges
    inside it are released by the records themselves (the runner sends no watermarks).
    """

    def __init__(self, settings: Settings, stages: Sequence[StageSpec], sink: Sink) -> None:
        from streams.agents.base import Emitter

        self._emitter = Emitter
        self._sink = sink
        self._n = settings.partitions
        context = BuildContext(settings)
        self._readers = [(spec, spec.build(context)) for spec in stages]

    def send(self, record: AvroRecord, topic: Topic | None = None) -> None:
        """Sink ``record`` and hand it to every extra stage reading its topic."""
        self._sink(record)
        topic = topic or topic_of(type(record))
        if topic is None:
            return
        for spec, handler in self._readers:
            if topic not in spec.input_topics:
                continue
            out = self._emitter(spec.name)
            key = getattr(record, "symbol", "")
            partition = partition_for(key, partitions_of(topic, self._n)) if key else 0
            handler.on_record(topic.value, partition, "runner", record, out)
            handler.end_batch(out)
            for item in out.items:
                if item.value is not None:
                    self.send(item.value, item.topic)


def swap_loader(settings: Settings) -> Loader:
    """Loads a model set from the settings' registry for a hot swap (the worker's sessions)."""

    def load(versions: Mapping[str, str]) -> Scorer:
        from models.scorer import EnsembleScorer

        return EnsembleScorer.from_registry(settings.registry_dir, dict(versions))

    return load


def rejected_tick_letter(tick: TickReceived, error: TickRejected) -> DeadLettered:
    """The dead letter the topology's features stage writes for a tick the rule refuses."""
    return DeadLettered(
        dead_letter_id=f"features:{tick.source}:{tick.symbol}:{tick.event_time_ms}",
        reason=error.reason.value,
        error_type=type(error).__name__,
        stage="features",
        detail=error.detail,
        raw=b"",
        symbol=tick.symbol,
        event_time_ms=tick.event_time_ms,
        source_file=tick.source.removeprefix("replay-file:"),
    )


def ticks_by_minute(
    items: Iterable[ReplayItem],
    on_dead: Sink,
    history: TickHistory | None = None,
    partitions: int = 1,
) -> Iterator[tuple[int, list[TickReceived]]]:
    """Group merged file rows into minutes of klines (sorted by symbol); dead-letter bad rows.

    ``history`` applies the tick rule of every ``market.ticks`` reader, per partition (the
    file adapter already checked each row; what is left is the event-time skew between the
    symbols of one partition), so the runner drops exactly the ticks the topology drops.
    TRADE ticks are counted through the sink but drive no stage yet (klines drive execution).
    """
    minute: int | None = None
    batch: list[TickReceived] = []
    for item in items:
        if isinstance(item, RejectedRow):
            on_dead(dead_letter(item))
            continue
        tick = item
        if history is not None:
            try:
                history.admit(partition_for(tick.symbol, partitions), tick, tick.symbol.encode())
            except TickRejected as exc:
                on_dead(rejected_tick_letter(tick, exc))
                continue
        if tick.kind is not TickKind.KLINE_1M:
            on_dead(tick)
            continue
        if minute is not None and tick.event_time_ms != minute:
            yield minute, sorted(batch, key=lambda x: x.symbol)
            batch = []
        minute = tick.event_time_ms
        batch.append(tick)
    if minute is not None:
        yield minute, sorted(batch, key=lambda x: x.symbol)


def blocks(
    minutes: Iterable[tuple[int, list[TickReceived]]], size: int
) -> Iterator[list[tuple[int, list[TickReceived]]]]:
    """Consecutive groups of ``size`` minutes (the last one shorter)."""
    if size < 1:
        raise RunError(f"block size must be >= 1 minute, got {size}")
    block: list[tuple[int, list[TickReceived]]] = []
    for minute in minutes:
        block.append(minute)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def run(
    data: Path,
    scorer: Scorer,
    sink: Sink,
    settings: Settings | None = None,
    symbols: tuple[str, ...] = (),
    window: TimeWindow = ALL_TIME,
    block_minutes: int = 240,
    *,
    measure_latency: bool = True,
    stages: Sequence[StageSpec] = STAGES,
    commands: Sequence[ControlCommand] = (),
    universe: Sequence[UniverseChanged] = (),
    model_events: Sequence[ModelEventRecorded] = (),
) -> RunStats:
    """Run the whole topology in-process over ``data``; every record goes to ``sink``.

    ``commands`` are operator commands (halt, resume) as ``control.commands`` would carry them;
    ``universe`` the live universe's changes as ``universe.events`` would (a file has none).
    ``model_events`` are ``models.events`` records (PROMOTED / ROLLED_BACK hot-swap the models
    from their event time, :meth:`Pipeline.swap`).

    Raises :class:`RunError` when the range holds no kline, and lets
    :class:`~streams.adapters.market_files.MarketFileError` (unusable files) and
    :class:`~streams.stages.StageError` (a broken contract) through with their context.
    """
    cfg = settings or Settings()
    pipeline = Pipeline(
        cfg, scorer, sink, measure_latency=measure_latency, stages=stages, commands=commands,
        universe=universe,
        model_events=model_events,
    )  # fmt: skip
    _readers, items = open_data_set(data, symbols, window)
    started = time.perf_counter()
    history = TickHistory(cfg.max_event_skew_ms)
    for block in blocks(ticks_by_minute(items, sink, history, cfg.partitions), block_minutes):
        for (t, ticks), (rows, signals) in zip(block, pipeline.score_block(block), strict=True):
            pipeline.on_minute(t, ticks, rows, signals)
    pipeline.finish()
    pipeline.stats.elapsed_s = time.perf_counter() - started
    if pipeline.stats.bars == 0:
        raise RunError(f"no valid kline in {data} for symbols {symbols or 'all'} in {window}")
    return pipeline.stats
