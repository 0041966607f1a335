"""Ensemble stage: one batched scorer call per batch of feature rows -> ``SignalScored``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from streams import ids
from streams.config import Settings
from streams.contracts.records import FeaturesComputed, ModelVote, SignalScored
from streams.errors import InvalidInputError, StageError
from streams.logic.voting import EnsembleSignal
from streams.logic.voting import ModelVote as LogicVote
from streams.logic.voting import vote as weighted_vote
from streams.stages.features import NAMES_HASH, tabular_of, window_of


class Scorer(Protocol):
    """What the stage needs of :class:`models.scorer.EnsembleScorer` (tests may fake it)."""

    @property
    def names(self) -> tuple[str, ...]:
        """Model names in scoring order."""
        ...

    @property
    def versions(self) -> dict[str, str]:
        """Loaded version per model."""
        ...

    feature_version: str

    def score(self, tabular: np.ndarray | None, window: np.ndarray | None) -> dict[str, np.ndarray]:
        """(N, 3) probabilities per model."""
        ...


def normalised(row: np.ndarray) -> tuple[float, float, float]:
    """A float32 probability row as float64 summing to 1 (ONNX softmax sums are off by ~1e-7)."""
    p0, p1, p2 = (float(x) for x in row)
    total = p0 + p1 + p2
    if not total > 0.0:
        return (p0, p1, p2)  # let the vote's validation reject it with the model named
    return (p0 / total, p1 / total, p2 / total)


def signal_record(
    signal: EnsembleSignal, features: FeaturesComputed, latency_us: int
) -> SignalScored:
    """The contract record of a combined vote (votes in scoring order)."""
    votes = tuple(
        ModelVote(
            model=v.model,
            version=v.version,
            action=v.action,
            confidence=v.confidence,
            probabilities=v.probs,
            weight=w,
            latency_us=latency_us,
            as_of_ms=v.as_of_ms,
        )
        for v, w in zip(signal.votes, signal.weights, strict=True)
    )
    return SignalScored(
        signal_id=signal.signal_id,
        symbol=signal.symbol,
        event_time_ms=signal.event_time_ms,
        feature_version=features.feature_version,
        votes=votes,
        action=signal.action,
        confidence=signal.confidence,
        probabilities=signal.probs,
        close=features.close,
        atr_pct=features.atr_pct,
        volatility=features.volatility,
    )


class EnsembleStage:
    """Scores a batch of ``FeaturesComputed`` with every model at once and votes per row.

    Throughput comes from the batch: ONNX Runtime's per-call overhead dominates single rows, so
    the runner hands over all symbols of one minute and the Faust agent a ``stream.take`` batch.
    ``measure_latency`` writes the amortised ensemble time per row into every vote's
    ``latency_us`` (0 otherwise, which keeps the records byte-identical across runs).
    """

    stage = "ensemble"

    def __init__(
        self, scorer: Scorer, weights: Mapping[str, float], *, measure_latency: bool = False
    ) -> None:
        missing = [m for m in scorer.names if m not in weights]
        if missing:
            raise StageError(self.stage, ",".join(missing), "loaded models without a weight")
        self.scorer = scorer
        self.weights = {m: float(weights[m]) for m in scorer.names}
        self.versions = dict(scorer.versions)
        self.measure_latency = measure_latency

    @classmethod
    def from_settings(cls, settings: Settings, scorer: Scorer) -> EnsembleStage:
        """The stage for ``scorer``'s models, weighted as the settings say."""
        return cls(scorer, settings.ensemble_weights)

    def _check(self, batch: Sequence[FeaturesComputed]) -> None:
        for f in batch:
            if f.feature_version != self.scorer.feature_version or f.names_hash != NAMES_HASH:
                raise StageError(
                    self.stage,
                    f"{f.symbol}:{f.event_time_ms}",
                    f"features {f.feature_version}/{f.names_hash[:8]} do not match the models' "
                    f"{self.scorer.feature_version}/{NAMES_HASH[:8]}",
                )

    def on_features(self, batch: Sequence[FeaturesComputed]) -> list[SignalScored]:
        """One signal per feature row, in batch order (one scorer call for the whole batch)."""
        if not batch:
            return []
        self._check(batch)
        rows = list(batch)
        started = time.perf_counter_ns()
        probs = self.scorer.score(tabular_of(rows), window_of(rows))
        elapsed_us = (time.perf_counter_ns() - started) // 1000
        latency = int(elapsed_us // len(rows)) if self.measure_latency else 0
        out: list[SignalScored] = []
        for i, f in enumerate(rows):
            votes = [
                LogicVote(m, self.versions[m], normalised(probs[m][i]), f.event_time_ms)
                for m in self.scorer.names
            ]
            sid = ids.signal_id(f.symbol, f.event_time_ms)
            try:
                signal = weighted_vote(sid, f.symbol, f.event_time_ms, votes, self.weights)
            except InvalidInputError as exc:
                raise StageError(self.stage, sid, str(exc)) from exc
            out.append(signal_record(signal, f, latency))
        return out
