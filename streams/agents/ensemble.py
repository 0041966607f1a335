"""ensemble: ``market.features`` -> ``signals.ensemble``, one batched ONNX call per batch.

It also reads ``models.swaps`` (the relay's per-partition copies of ``models.events``' swap
records, ``streams/agents/swaps.py``): a PROMOTED or ROLLED_BACK record hot-swaps the ONNX
sessions (``streams/stages/hotswap.py``); and it measures drift of the rows it scores against
the loaded models' training reference (``streams/stages/drift.py``), sending ``DRIFT_DETECTED``
/ ``DRIFT_RECOVERED`` to ``models.events`` when the level changes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from streams.agents.base import Emitter, SourcePosition
from streams.agents.dead_letters import released_dead_letter, send_dead_letter
from streams.agents.merging import ForwardedWatermarks
from streams.contracts.records import Action, FeaturesComputed, ModelEventRecorded, SignalScored
from streams.observability import tracing
from streams.observability.metrics import metrics
from streams.stages import EnsembleStage, Scorer
from streams.stages.drift import DriftMonitor, DriftWatch, drift_monitor
from streams.stages.hotswap import Loader, pending_to_state, restore_served
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

    def __init__(
        self, stage: EnsembleStage, monitor: Callable[[Mapping[str, str]], DriftMonitor] | None
    ) -> None:
        self.stage = stage
        self.pending: list[Pending] = []
        self.progress = ForwardedWatermarks()
        self.drift = DriftWatch(monitor) if monitor else None

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """Buffer the row (with its trace parent and position) until the end of the batch; a
        model event is handled at once (a swap it asks for waits for its event time)."""
        if topic == Topic.MODELS_SWAPS.value:
            self.stage.on_model_event(record)
            self._send_events(out)
            return
        self.pending.append((partition, record, otel_context.get_current(), out.position))
        self.progress.note(partition, record.event_time_ms)

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """Progress of the features stage on ``partition``."""
        if topic == Topic.MARKET_FEATURES.value:
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
        self._send_events(out)
        self.progress.emit(out, Topic.SIGNALS_ENSEMBLE, self.name)

    def _send_events(self, out: Emitter) -> None:
        """The stage's swap events to ``models.events``."""
        events, self.stage.events = self.stage.events, []
        for event in events:  # every instance answers the same swap: each names itself
            self._send_event(replace(event, event_id=f"{event.event_id}:{out.instance}",
                                     detail=f"ensemble instance {out.instance}: {event.detail}"),
                             out)  # fmt: skip

    def _send_event(self, event: ModelEventRecorded, out: Emitter) -> None:
        mark = len(out.items)
        source = f"{self.name}/{out.instance}"
        out.record_to(Topic.MODELS_EVENTS, 0, event.model, event, event.event_time_ms, source)
        out.seal(mark)
        log.info("%s %s %s: %s", event.kind.value, event.model, event.version, event.detail)

    def _observe(self, row: FeaturesComputed, signal: SignalScored, out: Emitter
                 ) -> tuple[SignalScored, ModelEventRecorded | None]:  # fmt: skip
        """Count the row in the drift window: the signal stamped with its level, and the event
        of a reading that changed the level."""
        if self.drift is None:
            return signal, None
        signal, reading, kind = self.drift.observe(row, signal)
        if reading is None:
            return signal, None
        metrics().model_drift(out.instance, reading.level, reading.psi)
        if kind is None:
            return signal, None
        return signal, self.drift.event(reading, kind, out.instance)

    def to_state(self) -> dict[str, Any]:
        """Progress forwarded, served versions and pending swaps, the drift window (rows are
        never pending between batches)."""
        return {
            "progress": self.progress.to_state(),
            "models": {"versions": self.stage.versions,
                       "pending": pending_to_state(self.stage.pending)},
            "drift": self.drift.to_state() if self.drift else None,
        }  # fmt: skip

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state` (a state from before swaps and drift has neither)."""
        self.progress.load_state(data["progress"])
        restore_served(self.stage, data.get("models"))
        for event in self.stage.events:  # already announced before the restart, or a failure
            log.warning("restoring ensemble state: %s", event.detail)
        self.stage.events = []
        if self.drift is not None:
            self.drift.load_state(data.get("drift"), self.stage.versions)

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
        for (partition, row, parent, position), scored in zip(batch, signals, strict=True):
            signal, drift = self._observe(row, scored, out)
            if drift is not None:
                self._send_event(drift, out)
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


def shared_loader(context: BuildContext) -> Loader:
    """Loads a model set for a swap once per process (``BuildContext.swapped``)."""
    from streams.agents.registry import load_scorer

    def load(versions: Mapping[str, str]) -> Scorer:
        key = tuple(sorted(versions.items()))
        scorer = context.swapped.get(key)
        if scorer is None:  # a set that fails to load is not kept: the next request retries
            scorer = context.swapped[key] = load_scorer(context.settings, versions)
        return cast(Scorer, scorer)

    return load


def build(context: BuildContext) -> EnsembleHandler:
    """The stage from the settings (``streams/topology.py`` names this factory)."""
    settings = context.settings
    stage = EnsembleStage.from_settings(settings, context.scorer, shared_loader(context))
    return EnsembleHandler(stage, drift_monitor(settings))
