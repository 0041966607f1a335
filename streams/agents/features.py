"""features: ``market.ticks`` -> ``market.features`` and ``market.bars``, one state per symbol.

Every kline that passes the tick rule also goes, as a :class:`BarClosed`, to the one partition
of ``market.bars``: the portfolio-wide risk stage reads its bars there, so it never needs the
per-symbol partitions of ``market.ticks`` that another worker may hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.features import FeatureState
from streams.agents.base import Emitter, Restore, keyed_checkpoint
from streams.agents.merging import ForwardedWatermarks
from streams.contracts.records import TickReceived
from streams.contracts.ticks import DEFAULT_MAX_EVENT_SKEW_MS, TickHistory
from streams.observability import tracing
from streams.stages import FeaturesStage
from streams.stages.features import bar_closed
from streams.topics import Topic
from streams.topology import BuildContext, Partitioning, consumers_of, stage_spec, topic_spec

_SPEC = stage_spec("features")


class FeaturesHandler:
    """Folds each symbol's klines into its :class:`FeatureState`; emits warmed-up rows and bars."""

    name = _SPEC.name
    inputs = _SPEC.input_topics

    def __init__(self, max_event_skew_ms: int = DEFAULT_MAX_EVENT_SKEW_MS) -> None:
        self.stage = FeaturesStage()
        self.states: dict[str, FeatureState | None] = {}
        #: Forwarded progress per consumed output (market.features, market.bars).
        self.progress = {t: ForwardedWatermarks() for t in _SPEC.outputs if consumers_of(t)}
        #: The first reader of market.ticks: its verdicts become the dead letters.
        self.tick_history = TickHistory(max_event_skew_ms)

    def checkpoint(self, topic: str, partition: int, record: Any) -> Restore:
        """The symbol's window as it was (``to_dict``, ~25 µs), to put back if the tick fails.

        The tick rule admits only bars the feature code accepts, so this is for our bugs.
        """
        return keyed_checkpoint(self.states, record.symbol, FeatureState.from_dict)

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """One tick in: its bar (klines), and a feature row once warm (same event time)."""
        tick: TickReceived = record
        state, row = self.stage.on_tick(self.states.get(tick.symbol), tick)
        self.states[tick.symbol] = state
        for progress in self.progress.values():
            progress.note(partition, tick.event_time_ms)
        bar = bar_closed(tick)
        if bar is not None:
            out.record(Topic.MARKET_BARS, bar.symbol, bar, bar.event_time_ms, partition)
            self.progress[Topic.MARKET_BARS].sent(partition, bar.event_time_ms)
        if row is None:
            tracing.mark(tracing.DROP)  # warming up: this tick's trace ends here
        else:
            out.record(Topic.MARKET_FEATURES, row.symbol, row, row.event_time_ms, partition)
            self.progress[Topic.MARKET_FEATURES].sent(partition, row.event_time_ms)

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """The replay promised nothing earlier than ``wm`` on this partition."""
        for progress in self.progress.values():
            progress.note(partition, wm)

    def end_batch(self, out: Emitter) -> None:
        """Forward the partitions' progress: to the same partition of a per-symbol output,
        to the one partition of a single-partition output (one source per input partition)."""
        for topic, progress in self.progress.items():
            single = topic_spec(topic).partitioning is Partitioning.SINGLE
            progress.emit(out, topic, self.name, to_partition=0 if single else None)

    def to_state(self) -> dict[str, Any]:
        """Each symbol's window, the tick rule's history and the progress forwarded."""
        return {
            "windows": {s: None if w is None else w.to_dict() for s, w in self.states.items()},
            "ticks": self.tick_history.to_dict(),
            "progress": {t.value: w.to_state() for t, w in self.progress.items()},
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`."""
        self.states = {
            s: None if w is None else FeatureState.from_dict(w) for s, w in data["windows"].items()
        }
        self.tick_history = TickHistory.from_dict(data["ticks"])
        for topic, progress in self.progress.items():
            progress.load_state(data["progress"][topic.value])


def build(context: BuildContext) -> FeaturesHandler:
    """The stage from the settings (``streams/topology.py`` names this factory)."""
    return FeaturesHandler(context.settings.max_event_skew_ms)
