"""shadow: ``market.features`` -> ``signals.shadow`` while a candidate set is shadow-scored.

It reads ``models.swaps`` like the ensemble stage (the relay copies ``SHADOW_STARTED`` and the
gate's verdicts there too): the champion swaps as the ensemble's does, a ``SHADOW_STARTED`` starts
a shadow, the gate's verdict ends it (``streams/stages/shadow.py``). Without a shadow it scores
nothing and only forwards its progress. A row it cannot score is skipped with a warning: the
ensemble stage dead-letters a bad row, and a shadow never touches an order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from streams.agents.base import Emitter
from streams.agents.ensemble import shared_loader
from streams.agents.merging import ForwardedWatermarks
from streams.contracts.records import FeaturesComputed, ModelEventRecorded
from streams.stages.edge import EdgeGate
from streams.stages.ensemble import EnsembleStage
from streams.stages.hotswap import pending_to_state, restore_served
from streams.stages.shadow import ShadowStage
from streams.topics import Topic
from streams.topology import BuildContext, stage_spec

log = logging.getLogger(__name__)


class ShadowHandler:
    """Scores each row with both sets during a shadow; settled rows go to partition 0."""

    name = "shadow"
    inputs = stage_spec("shadow").input_topics

    def __init__(self, stage: ShadowStage) -> None:
        self.stage = stage
        self.progress = ForwardedWatermarks()

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        """A model event, or a feature row (its settled shadow rows go out now)."""
        if topic == Topic.MODELS_SWAPS.value:
            event: ModelEventRecorded = record
            self.stage.on_model_event(event)
            return
        row: FeaturesComputed = record
        self.progress.note(partition, row.event_time_ms)
        try:
            settled = self.stage.on_features(row)
        except Exception as exc:  # the ensemble stage dead-letters the row with its reason
            log.warning("shadow: row %s@%d not scored: %s", row.symbol, row.event_time_ms, exc)
            return
        for rec in settled:
            mark = len(out.items)
            try:
                out.record_to(Topic.SIGNALS_SHADOW, 0, rec.symbol, rec, rec.event_time_ms,
                              f"{self.name}/{partition}")  # fmt: skip
                out.seal(mark)
            except Exception as exc:  # a record that breaks its contract is not sent
                out.rollback(mark)
                log.warning("shadow: %s@%d not sent: %s", rec.symbol, rec.decided_ms, exc)
                continue
            self.progress.sent(partition, rec.event_time_ms)

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        """Progress of the features stage on ``partition``."""
        if topic == Topic.MARKET_FEATURES.value:
            self.progress.note(partition, wm)

    def end_batch(self, out: Emitter) -> None:
        """Every input partition's progress, to the promotion stage's one partition."""
        self.progress.emit(out, Topic.SIGNALS_SHADOW, self.name, to_partition=0)

    def to_state(self) -> dict[str, Any]:
        """Progress, the champion's served versions and pending swaps, the shadow."""
        champion = self.stage.champion
        return {
            "progress": self.progress.to_state(),
            "models": {"versions": champion.versions,
                       "pending": pending_to_state(champion.pending)},
            "shadow": self.stage.to_state(),
        }  # fmt: skip

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`."""
        self.progress.load_state(data["progress"])
        restore_served(self.stage.champion, data["models"])
        self.stage.champion.events = []
        self.stage.load_state(data["shadow"])


def build(context: BuildContext) -> ShadowHandler:
    """The stage from the settings (``streams/topology.py`` names this factory)."""
    from streams.stages.supervisor import load_edge_gate

    settings = context.settings
    loader = shared_loader(context)
    champion = EnsembleStage.from_settings(settings, context.scorer, loader)
    weights = settings.ensemble_weights

    def load_set(versions: Mapping[str, str]) -> EnsembleStage:
        return EnsembleStage(loader(versions), weights)

    def read_gate(versions: Mapping[str, str]) -> tuple[EdgeGate | None, str]:
        loaded = load_edge_gate(settings.registry_dir, versions, weights)
        return loaded.gate, loaded.problem

    return ShadowHandler(ShadowStage(champion, load_set, read_gate))
