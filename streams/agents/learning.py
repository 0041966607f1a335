"""learning: ``trades.closed`` -> ``learning.rewards`` for the sizing and strategy learners."""

from __future__ import annotations

from typing import Any

from streams.agents.base import Emitter, source_id
from streams.contracts.records import TradeClosed
from streams.observability import tracing
from streams.stages import LearningStage
from streams.topics import Topic


class LearningHandler:
    """Stateless: rewards go out at once, keyed by symbol; the strategy merge orders them."""

    name = "learning"
    inputs: tuple[Topic, ...] = (Topic.TRADES_CLOSED,)

    def __init__(self, stage: LearningStage, partitions: int) -> None:
        self.stage = stage
        self.partitions = partitions
        self.watermarks = {
            source_id(Topic.TRADES_CLOSED.value, 0, f"execution/{p}"): -(2**62)
            for p in range(partitions)
        }
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
            out.watermark(Topic.LEARNING_REWARDS, range(self.partitions), low, f"{self.name}/0")
