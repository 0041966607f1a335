"""Promotion on the stream: the gate decides on a shadow from its settled rows.

The stage reads ``signals.shadow`` (every shadow instance's records, merged in event time, so the
decision falls on the same row in every run) and keeps one :class:`~models.promotion.ShadowTally`
per shadow. It decides with the promotion rule (:func:`models.promotion.verdict`: enough
candidate decisions, a bootstrap lower bound above always-HOLD and above the champion, the bias
limit) as soon as the candidate has made ``QT_PROMOTION__MIN_DECISIONS`` would-be decisions, or
``QT_PROMOTION__MAX_SHADOW_MS`` of event time after the shadow started (then usually a refusal
for too few decisions). The decision is ``SHADOW_SCORED`` and ``PROMOTED`` /
``PROMOTION_REFUSED`` on ``models.events`` at the event time of the row that completed it; the
swaps relay turns a ``PROMOTED`` into every partition's hot swap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models.edge import GateEvidence
from models.promotion import PromotionDecision, ShadowTally, decision_events
from streams.config import PromotionRule, Settings
from streams.contracts.records import ModelEventRecorded, ShadowScored


@dataclass
class PromotionStage:
    """Tallies each shadow's settled rows and decides once (a decided shadow is ignored after)."""

    rule: PromotionRule
    bias_limit: float
    block_ms: int
    tallies: dict[str, ShadowTally] = field(default_factory=dict)
    decided: set[str] = field(default_factory=set)

    @classmethod
    def from_settings(cls, settings: Settings) -> PromotionStage:
        """The rule and bias limit of the settings; the gate's bootstrap block length."""
        block_ms = GateEvidence().block_minutes * 60_000
        return cls(settings.promotion, settings.supervisor.bias_threshold, block_ms)

    def on_shadow(self, record: ShadowScored) -> list[ModelEventRecorded]:
        """Count one settled row; the gate's records when this row completes the shadow."""
        decision = self.count(record)
        return [] if decision is None else decision_events(decision, record.event_time_ms)

    def count(self, record: ShadowScored) -> PromotionDecision | None:
        """Count one settled row; the gate's decision when this row completes the shadow (the
        dashboard tallies with this too, so it shows what the stage decides, where it does)."""
        if record.shadow_id in self.decided:
            return None
        tally = self.tallies.get(record.shadow_id)
        if tally is None:
            tally = self.tallies[record.shadow_id] = ShadowTally(
                dict(record.candidate), dict(record.champion), record.decided_ms
            )
        tally.count(record, self.block_ms)
        enough = tally.candidate_decisions >= self.rule.min_decisions
        if not enough and record.event_time_ms - tally.started_ms < self.rule.max_shadow_ms:
            return None
        del self.tallies[record.shadow_id]
        self.decided.add(record.shadow_id)
        return tally.decide(self.rule, self.bias_limit)

    def to_state(self) -> dict[str, Any]:
        """The open tallies and the decided shadows' ids."""
        return {
            "tallies": {k: t.to_state() for k, t in sorted(self.tallies.items())},
            "decided": sorted(self.decided),
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`."""
        self.tallies = {k: ShadowTally.from_state(t) for k, t in data["tallies"].items()}
        self.decided = set(data["decided"])
