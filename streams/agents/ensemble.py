"""ensemble: ``market.features`` -> ``signals.ensemble``, one batched ONNX call per batch."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from streams.agents.base import Emitter, SourcePosition
from streams.agents.dead_letters import released_dead_letter, send_dead_letter
from streams.agents.merging import ForwardedWatermarks
from streams.contracts.records import Action, FeaturesComputed, SignalScored
from streams.observability import tracing
from streams.observability.metrics import metrics
from streams.stages import EnsembleStage
from streams.topics import Topic
from streams.topology import BuildContext, stage_spec

log = logging.getLogger(__name__)
#: A buffered row: partition, record, trace parent, where it was read.
Pending = tuple[int, FeaturesComputed, Context, SourcePosition | None]


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
    #: Rows are handled at the end of the batch (isolated there: see ``end_batch``).
    buffers_records = True

    def __init__(self, stage: EnsembleStage) -> None:
        self.stage = stage
        self.pending: list[Pending] = []
        self.progress = ForwardedWatermarks()

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """Buffer the row (with its trace parent and position) until the end of the batch."""
        self.pending.append((partition, record, otel_context.get_current(), out.position))
        self.progress.note(partition, record.event_time_ms)

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """Progress of the features stage on ``partition``."""
        self.progress.note(partition, wm)

    def end_batch(self, out: Emitter) -> None:
        """Score the batch (rows keep their order), then forward progress.

        The stage keeps no state between rows, so a failed batch is simply scored again row
        by row: the rows that fail alone are dead-lettered, the others go on.
        """
        batch, self.pending = self.pending, []
        if batch:
            started = time.time_ns()  # span start only: the scores never see the clock
            try:
                signals = self.stage.on_features([f for _, f, _, _ in batch])
            except Exception:
                log.warning("scoring a batch of %d rows failed; scoring row by row", len(batch))
                self._score_each(batch, out)
            else:
                self._emit(batch, signals, started, out)
        self.progress.emit(out, Topic.SIGNALS_ENSEMBLE, self.name)

    def to_state(self) -> dict[str, Any]:
        """The progress forwarded (rows are never pending between batches)."""
        return {"progress": self.progress.to_state()}

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`."""
        self.progress.load_state(data["progress"])

    def _score_each(self, batch: list[Pending], out: Emitter) -> None:
        for item in batch:
            partition, row, _, position = item
            started = time.time_ns()
            try:
                signals = self.stage.on_features([row])
            except Exception as exc:
                self._dead(partition, row, position, exc, out)
                continue
            self._emit([item], signals, started, out)

    def _emit(
        self, batch: list[Pending], signals: list[SignalScored], started: int, out: Emitter
    ) -> None:
        traced = tracing.enabled()
        for (partition, row, parent, position), signal in zip(batch, signals, strict=True):
            attrs = vote_attributes(signal, len(batch)) if traced else None
            mark = len(out.items)
            try:
                with tracing.record_span("ensemble market.features", parent, attrs, started):
                    out.record(
                        Topic.SIGNALS_ENSEMBLE,
                        signal.symbol,
                        signal,
                        signal.event_time_ms,
                        partition,
                    )
                    out.seal(mark)
            except Exception as exc:  # a signal that breaks its contract: the row's fault
                out.rollback(mark)
                self._dead(partition, row, position, exc, out)
                continue
            metrics().signal(signal.symbol, signal.action.value)
            self.progress.sent(partition, signal.event_time_ms)

    def _dead(
        self,
        partition: int,
        row: FeaturesComputed,
        position: SourcePosition | None,
        exc: Exception,
        out: Emitter,
    ) -> None:
        at = position or SourcePosition(Topic.MARKET_FEATURES.value, partition, -1)
        letter = released_dead_letter(self.name, Topic.MARKET_FEATURES.value, at, row, exc)
        send_dead_letter(out, letter, exc)


def build(context: BuildContext) -> EnsembleHandler:
    """The stage from the settings (``streams/topology.py`` names this factory)."""
    return EnsembleHandler(EnsembleStage.from_settings(context.settings, context.scorer))
