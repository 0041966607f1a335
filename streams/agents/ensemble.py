"""ensemble: ``market.features`` -> ``signals.ensemble``, one batched ONNX call per batch."""

from __future__ import annotations

from typing import Any

from streams.agents.base import Emitter, ForwardedWatermarks
from streams.contracts.records import FeaturesComputed
from streams.stages import EnsembleStage
from streams.topics import Topic


class EnsembleHandler:
    """Collects a batch of feature rows, scores them with all models at once, votes per row."""

    name = "ensemble"
    inputs: tuple[Topic, ...] = (Topic.MARKET_FEATURES,)

    def __init__(self, stage: EnsembleStage) -> None:
        self.stage = stage
        self.pending: list[tuple[int, FeaturesComputed]] = []
        self.progress = ForwardedWatermarks()

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """Buffer the row until the end of the batch."""
        self.pending.append((partition, record))
        self.progress.note(partition, record.event_time_ms)

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """Progress of the features stage on ``partition``."""
        self.progress.note(partition, wm)

    def end_batch(self, out: Emitter) -> None:
        """Score the batch (rows keep their order), then forward progress."""
        if self.pending:
            rows = [f for _, f in self.pending]
            for (partition, _), signal in zip(
                self.pending, self.stage.on_features(rows), strict=True
            ):
                out.record(
                    Topic.SIGNALS_ENSEMBLE, signal.symbol, signal, signal.event_time_ms, partition
                )
                self.progress.sent(partition, signal.event_time_ms)
            self.pending.clear()
        self.progress.emit(out, Topic.SIGNALS_ENSEMBLE, self.name)
