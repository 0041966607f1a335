"""strategy + sizing: features, supervised signals and rewards -> ``decisions.sized``.

Per partition, one event-time merge: rewards (shifted by the feedback lag) sort before the
bar's features, which sort before the bar's signal, exactly as the in-process runner calls them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from streams.agents.base import Emitter, Restore, keyed_checkpoint
from streams.agents.merging import MergeHandler
from streams.contracts.records import (
    DecisionSized,
    FeaturesComputed,
    RewardComputed,
    SignalSupervised,
)
from streams.observability import tracing
from streams.ordering import SortKey
from streams.stages import StrategyStage, StrategyState
from streams.topics import Topic
from streams.topology import BuildContext, Shift, stage_spec

_RANK = {
    Topic.LEARNING_REWARDS.value: 0,
    Topic.MARKET_FEATURES.value: 1,
    Topic.SIGNALS_SUPERVISED.value: 2,
}


def decision_attributes(d: DecisionSized) -> dict[str, Any]:
    """Span attributes of a decision: its id, strategy, regime and the size chosen."""
    return {
        tracing.DECISION_ID: d.decision_id,
        "qt.side": d.side.value,
        "qt.strategy": d.strategy,
        "qt.regime": d.regime.value,
        "qt.size_multiplier": d.size_multiplier,
        "qt.risk_fraction": d.risk_fraction,
        "qt.margin_usd": d.margin_usd,
        "qt.confidence": d.confidence,
    }


class StrategyHandler(MergeHandler):
    """Regime, meta-strategy and RL sizing per symbol; decisions go to risk's single partition."""

    name = "strategy"
    inputs = stage_spec("strategy").input_topics
    #: Feature rows only fold state; the signal's span shows the decision made with it.
    untraced_topics = frozenset({Topic.MARKET_FEATURES.value})

    def __init__(self, stage: StrategyStage, partitions: int, feedback_lag_ms: int) -> None:
        super().__init__()
        self.stage = stage
        self.partitions = partitions
        self.lag = feedback_lag_ms
        self.shifts = {Shift.FEEDBACK_LAG: feedback_lag_ms}
        self.states: dict[str, StrategyState] = {}

    def sort_key(self, topic: str, record: Any) -> SortKey:
        """Rewards at their time + lag, then the bar's features, then its signal."""
        if topic == Topic.LEARNING_REWARDS.value:
            key = f"{record.symbol}\x00{record.reward_id}"  # the runner's tie-break
            return SortKey(record.event_time_ms + self.lag, 0, key)
        return SortKey(record.event_time_ms, _RANK[topic], record.symbol)

    def buffered_form(self, topic: str, record: Any) -> Any:
        """A feature row without its sequence window: only the ensemble reads that (a row
        waits here for the feedback lag, and the window is nine tenths of its bytes)."""
        if isinstance(record, FeaturesComputed):
            return replace(record, window=(), window_rows=0)
        return record

    def _state(self, symbol: str) -> StrategyState:
        state = self.states.get(symbol)
        if state is None:
            state = self.states[symbol] = self.stage.new_state()
        return state

    def checkpoint(self, topic: str, partition: int, record: Any) -> Restore:
        """The symbol's state as it was (``to_dict``, ~25 µs), put back if ``process`` fails."""
        return keyed_checkpoint(self.states, record.symbol, StrategyState.from_dict)

    def process(self, merge: int, topic: str, partition: int, record: Any, out: Emitter) -> None:
        """Apply a reward, fold a feature row, or decide on a signal."""
        if isinstance(record, RewardComputed):
            self.stage.on_reward(self._state(record.symbol), record)
        elif isinstance(record, FeaturesComputed):
            self.stage.on_features(self._state(record.symbol), record)
        elif isinstance(record, SignalSupervised):
            decision = self.stage.on_signal(self._state(record.symbol), record)
            tracing.annotate(
                {"qt.decided": False} if decision is None else decision_attributes(decision)
            )
            if decision is not None:
                out.record_to(
                    Topic.DECISIONS_SIZED, 0, decision.symbol, decision,
                    decision.event_time_ms, f"{self.name}/{merge}",
                )  # fmt: skip

    def to_state(self) -> dict[str, Any]:
        """The merges, and each symbol's regime, strategies, Q-table and pending rewards."""
        return super().to_state() | {"symbols": {s: v.to_dict() for s, v in self.states.items()}}

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`."""
        super().load_state(data)
        self.states = {s: StrategyState.from_dict(v) for s, v in data["symbols"].items()}


def build(context: BuildContext) -> StrategyHandler:
    """The stage from the settings (``streams/topology.py`` names this factory)."""
    s = context.settings
    return StrategyHandler(StrategyStage.from_settings(s), s.partitions, s.feedback_lag_ms)
