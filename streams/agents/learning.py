"""learning: ``trades.closed`` -> ``learning.rewards`` for the sizing and strategy learners."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.agents.base import Emitter
from streams.agents.merging import source_id
from streams.contracts.records import TradeClosed
from streams.observability import tracing
from streams.stages import LearningStage
from streams.topics import Topic
from streams.topology import BuildContext, merge_sources, progress_targets, stage_spec


class LearningHandler:
    """Stateless: rewards go out at once, keyed by symbol; the strategy merge orders them."""

    name = "learning"
    inputs = stage_spec("learning").input_topics

    def __init__(self, stage: LearningStage, partitions: int) -> None:
        self.stage = stage
        self.partitions = partitions
        self.watermarks = dict.fromkeys(
            merge_sources(stage_spec(self.name), 0, partitions, {}), -(2**62)
        )
        self._sent = -(2**62)

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """One closed trade -> its rewards, same event time."""
        trade: TradeClosed = record
        rewards = self.stage.on_trade_closed(trade)
        tracing.annotate({"qt.rewards": [f"{r.learner.value} {r.reward:.6g}" for r in rewards]})
        for reward in rewards:
            out.record(Topic.LEARNING_REWARDS, reward.symbol, reward, reward.event_time_ms, 0)
        self.on_watermark(topic, partition, source, trade.event_time_ms, out)

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """Progress of one execution partition."""
        key = source_id(topic, partition, source)
        if key in self.watermarks and wm > self.watermarks[key]:
            self.watermarks[key] = wm

    def end_batch(self, out: Emitter) -> None:
        """Every strategy partition learns the slowest execution partition's progress."""
        low = min(self.watermarks.values())
        if low > self._sent:
            self._sent = low
            for topic, partitions in progress_targets(stage_spec(self.name), 0, self.partitions):
                out.watermark(topic, partitions, low, f"{self.name}/0")

    def to_state(self) -> dict[str, Any]:
        """Each execution partition's progress, and what was forwarded."""
        return {"watermarks": self.watermarks, "sent": self._sent}

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state` (sources not declared any more are dropped)."""
        for key, wm in data["watermarks"].items():
            if key in self.watermarks:
                self.watermarks[key] = int(wm)
        self._sent = int(data["sent"])


def build(context: BuildContext) -> LearningHandler:
    """The stage from the settings (``streams/topology.py`` names this factory)."""
    return LearningHandler(
        LearningStage.from_settings(context.settings), context.settings.partitions
    )
