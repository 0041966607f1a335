"""ensemble: ``market.features`` -> ``signals.ensemble``, one batched ONNX call per batch."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from streams.agents.base import Emitter, ForwardedWatermarks
from streams.contracts.records import Action, FeaturesComputed, SignalScored
from streams.observability import tracing
from streams.observability.metrics import metrics
from streams.stages import EnsembleStage
from streams.topics import Topic
from streams.topology import BuildContext, stage_spec


def vote_attributes(signal: SignalScored, batch: int) -> dict[str, Any]:
    """Span attributes of one row's vote: every model's version, action and confidence.

    The row's trace is kept only when the vote is BUY or SELL: HOLD stops at the supervisor.
    """
    attrs: dict[str, Any] = {
        "qt.stage": "ensemble",
        "qt.symbol": signal.symbol,
        "qt.event_time_ms": signal.event_time_ms,
        "qt.signal_id": signal.signal_id,
        "qt.action": signal.action.value,
        "qt.confidence": signal.confidence,
        "qt.batch_size": batch,
        tracing.SAMPLE_ATTRIBUTE: tracing.DROP if signal.action is Action.HOLD else tracing.KEEP,
    }
    for v in signal.votes:
        attrs[f"qt.vote.{v.model}.version"] = v.version
        attrs[f"qt.vote.{v.model}.action"] = v.action.value
        attrs[f"qt.vote.{v.model}.confidence"] = v.confidence
        attrs[f"qt.vote.{v.model}.weight"] = v.weight
    return attrs


class EnsembleHandler:
    """Collects a batch of feature rows, scores them with all models at once, votes per row."""

    name = "ensemble"
    inputs = stage_spec("ensemble").input_topics
    #: Rows are scored at the end of the batch; each row's span opens then.
    spans_at_release = True

    def __init__(self, stage: EnsembleStage) -> None:
        self.stage = stage
        self.pending: list[tuple[int, FeaturesComputed, Context]] = []
        self.progress = ForwardedWatermarks()

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """Buffer the row (with its trace parent) until the end of the batch."""
        self.pending.append((partition, record, otel_context.get_current()))
        self.progress.note(partition, record.event_time_ms)

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """Progress of the features stage on ``partition``."""
        self.progress.note(partition, wm)

    def end_batch(self, out: Emitter) -> None:
        """Score the batch (rows keep their order), then forward progress."""
        if self.pending:
            rows = [f for _, f, _ in self.pending]
            started = time.time_ns()  # span start only: the scores never see the clock
            signals = self.stage.on_features(rows)
            traced = tracing.enabled()
            for (partition, _, parent), signal in zip(self.pending, signals, strict=True):
                metrics().signal(signal.symbol, signal.action.value)
                attrs = vote_attributes(signal, len(rows)) if traced else None
                with tracing.record_span("ensemble market.features", parent, attrs, started):
                    out.record(
                        Topic.SIGNALS_ENSEMBLE,
                        signal.symbol,
                        signal,
                        signal.event_time_ms,
                        partition,
                    )
                self.progress.sent(partition, signal.event_time_ms)
            self.pending.clear()
        self.progress.emit(out, Topic.SIGNALS_ENSEMBLE, self.name)


def build(context: BuildContext) -> EnsembleHandler:
    """The stage from the settings (``streams/topology.py`` names this factory)."""
    return EnsembleHandler(EnsembleStage.from_settings(context.settings, context.scorer))
