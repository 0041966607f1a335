"""Ensemble stage: ``FeaturesComputed`` rows -> one ``SignalScored`` each (the weighted vote).

What it does: every loaded model scores the rows (one batched scorer call per batch, row order
kept), each model's probability row is renormalised to sum 1 (:func:`normalised`) and the models
vote (:func:`vote`). Each model contributes its probability vector ``(p_sell, p_hold, p_buy)``
times its weight; the ensemble's distribution is the weight-normalised sum over the models that
voted, its action the arg-max and its confidence the winning probability. An exact tie between
the top classes resolves to HOLD (never trade on a coin flip). Weights are renormalised over the
models present, so a missing model does not silently drag every class down; the supervisor
reports the missing model separately. The offline evaluation (``models/evaluation``) calls the
same :func:`vote`, so its ensemble row is the runtime's.

Event time: a signal carries its feature row's event time (the bar's open time), and every vote
is ``as_of_ms`` that same time: the stage holds no state, so a model can never score an older
row than the one in hand. HOLD signals are emitted too (the supervisor stops them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import numpy as np

from streams import ids
from streams.config import Settings
from streams.contracts.records import (
    FeaturesComputed,
    ModelEventRecorded,
    ModelVote,
    SignalScored,
)
from streams.errors import InvalidInputError, StageError
from streams.stages.features import NAMES_HASH, tabular_of, window_of
from streams.stages.hotswap import Loader, PendingSwap, check_scorer, swap_event, swap_request
from streams.vocabulary import CLASSES, Action, ModelEventKind

_PROB_TOLERANCE = 1e-6

Probs = tuple[float, float, float]


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


class Ballot(NamedTuple):
    """The outcome of one weighted vote."""

    weights: tuple[float, ...]
    """Each voting model's weight renormalised over the voters (sum 1), in voting order."""
    probs: Probs
    action: Action
    confidence: float
    """Probability of ``action``."""


# ----------------------------------------------------------------------------- rules


def argmax_action(probs: Sequence[float]) -> Action:
    """Arg-max class of ``probs``; an exact tie for the top resolves to HOLD."""
    top = max(probs)
    winners = [cls for cls, p in zip(CLASSES, probs, strict=True) if p == top]
    return winners[0] if len(winners) == 1 else Action.HOLD


def validate_probs(what: str, probs: Sequence[float]) -> Probs:
    """``probs`` as a checked 3-tuple: finite, non-negative, summing to 1 (within 1e-6)."""
    if len(probs) != len(CLASSES):
        raise InvalidInputError(what, probs, "3 probabilities (SELL, HOLD, BUY)")
    if not all(math.isfinite(p) and p >= 0.0 for p in probs):
        raise InvalidInputError(what, probs, "finite non-negative probabilities")
    if abs(sum(probs) - 1.0) > _PROB_TOLERANCE:
        raise InvalidInputError(what, probs, "probabilities summing to 1")
    return (float(probs[0]), float(probs[1]), float(probs[2]))


def normalised(row: np.ndarray) -> Probs:
    """A float32 probability row as float64 summing to 1 (ONNX softmax sums are off by ~1e-7)."""
    p0, p1, p2 = (float(x) for x in row)
    total = p0 + p1 + p2
    if not total > 0.0:
        return (p0, p1, p2)  # let the vote's validation reject it with the model named
    return (p0 / total, p1 / total, p2 / total)


def _vote_weights(models: Sequence[str], weights: Mapping[str, float]) -> tuple[float, ...]:
    raw: list[float] = []
    for model in models:
        if model not in weights:
            raise InvalidInputError("model", model, f"one of {sorted(weights)}")
        raw.append(weights[model])
    total = sum(raw)
    if total <= 0.0 or any(w < 0.0 for w in raw):
        raise InvalidInputError("ensemble weights", raw, "non-negative with a positive sum")
    return tuple(w / total for w in raw)


def vote(probs: Mapping[str, Sequence[float]], weights: Mapping[str, float]) -> Ballot:
    """Combine each model's ``probs`` (in voting order) with ``weights`` into one ballot.

    ``weights`` is ``Settings.ensemble_weights``. Raises :class:`InvalidInputError` for no
    votes, an unknown model, weights without a positive sum, or a malformed probability vector.
    The sum runs in voting order in float64, so one order always gives the same bits.
    """
    if not probs:
        raise InvalidInputError("votes", probs, "at least one model vote")
    checked = [validate_probs(f"probabilities of {m}", p) for m, p in probs.items()]
    norm = _vote_weights(list(probs), weights)
    combined = [0.0, 0.0, 0.0]
    for p, w in zip(checked, norm, strict=True):
        for i in range(3):
            combined[i] += w * p[i]
    total: Probs = (combined[0], combined[1], combined[2])
    action = argmax_action(total)
    return Ballot(norm, total, action, total[CLASSES.index(action)])


# ----------------------------------------------------------------------------- records


def model_vote(
    model: str, version: str, probs: Probs, weight: float, latency_us: int, as_of_ms: int
) -> ModelVote:
    """One model's vote record: its own arg-max action (ties -> HOLD) and that probability."""
    action = argmax_action(probs)
    return ModelVote(
        model=model,
        version=version,
        action=action,
        confidence=probs[CLASSES.index(action)],
        probabilities=probs,
        weight=weight,
        latency_us=latency_us,
        as_of_ms=as_of_ms,
    )


def signal_record(
    signal_id: str,
    features: FeaturesComputed,
    probs: Mapping[str, Probs],
    versions: Mapping[str, str],
    ballot: Ballot,
    latency_us: int,
) -> SignalScored:
    """The contract record of a ballot on ``features`` (votes in voting order)."""
    t = features.event_time_ms
    votes = tuple(
        model_vote(m, versions[m], p, w, latency_us, t)
        for (m, p), w in zip(probs.items(), ballot.weights, strict=True)
    )
    return SignalScored(
        signal_id=signal_id,
        symbol=features.symbol,
        event_time_ms=t,
        feature_version=features.feature_version,
        votes=votes,
        action=ballot.action,
        confidence=ballot.confidence,
        probabilities=ballot.probs,
        close=features.close,
        atr_pct=features.atr_pct,
        volatility=features.volatility,
    )


# ----------------------------------------------------------------------------- stage


class EnsembleStage:
    """Scores a batch of ``FeaturesComputed`` with every model at once and votes per row.

    Throughput comes from the batch: ONNX Runtime's per-call overhead dominates single rows, so
    the runner hands over all symbols of one minute and the Faust agent a ``stream.take`` batch.
    ``measure_latency`` writes the amortised ensemble time per row into every vote's
    ``latency_us`` (0 otherwise, which keeps the records byte-identical across runs).
    """

    stage = "ensemble"

    def __init__(
        self,
        scorer: Scorer,
        weights: Mapping[str, float],
        *,
        measure_latency: bool = False,
        loader: Loader | None = None,
    ) -> None:
        self._all_weights = dict(weights)
        self._serve(scorer)
        self.measure_latency = measure_latency
        self.loader = loader
        """Loads another model set for a hot swap (None: swap records are refused)."""
        self.pending: list[PendingSwap] = []
        self.events: list[ModelEventRecorded] = []
        """What the swaps said (``LOADED``, ``LOAD_FAILED``), for the agent to send."""

    def _serve(self, scorer: Scorer) -> None:
        names = scorer.names
        if len(set(names)) != len(names):
            raise StageError(self.stage, ",".join(names), "one vote per model")
        missing = [m for m in names if m not in self._all_weights]
        if missing:
            raise StageError(self.stage, ",".join(missing), "loaded models without a weight")
        self.scorer = scorer
        self.weights = {m: float(self._all_weights[m]) for m in names}
        self.versions = dict(scorer.versions)

    @classmethod
    def from_settings(
        cls, settings: Settings, scorer: Scorer, loader: Loader | None = None
    ) -> EnsembleStage:
        """The stage for ``scorer``'s models, weighted as the settings say."""
        return cls(scorer, settings.ensemble_weights, loader=loader)

    # -- hot swap (streams/stages/hotswap.py) ---------------------------------------------------
    def on_model_event(self, event: ModelEventRecorded) -> None:
        """Load the set a PROMOTED/ROLLED_BACK record asks for; it serves from its event time."""
        served = self.pending[-1].versions if self.pending else self.versions
        wanted = swap_request(event, served)
        if wanted is None:
            return
        self.request(event.event_time_ms, wanted, event.event_id, event.model)

    def request(self, at: int, wanted: Mapping[str, str], cause: str, model: str = "") -> bool:
        """Load ``wanted`` now, serve it from event time ``at``; False (with an event) if not."""
        try:
            if self.loader is None:
                raise RuntimeError("this stage was built without a model loader")
            scorer = self.loader(wanted)
            check_scorer(scorer, self.scorer, self._all_weights)
        except Exception as exc:  # any failure to load keeps the old sessions serving
            for m, v in sorted(wanted.items()):
                if model in ("", m) and v != self.versions.get(m):
                    detail = f"kept {self.versions.get(m)}: {exc}"
                    self.events.append(
                        swap_event(ModelEventKind.LOAD_FAILED, m, v, at, detail, cause)
                    )
            return False
        self.pending.append(PendingSwap(at, dict(wanted), cause, scorer))
        return True

    def swap_due(self, t: int) -> None:
        """Serve every pending set whose time has come by event time ``t``."""
        while self.pending and self.pending[0].effective_ms <= t:
            swap = self.pending.pop(0)
            before = self.versions
            self._serve(swap.scorer)
            for m, v in sorted(self.versions.items()):
                if before.get(m) != v:
                    detail = f"serving {m} {v} (was {before.get(m)}) from event time {t}"
                    self.events.append(
                        swap_event(ModelEventKind.LOADED, m, v, t, detail, swap.cause)
                    )

    def _runs(self, rows: list[FeaturesComputed]) -> list[list[FeaturesComputed]]:
        """``rows`` cut where a pending swap falls due (each run is scored by one set)."""
        if not self.pending:
            return [rows]
        runs: list[list[FeaturesComputed]] = [[]]
        due = self.pending[0].effective_ms
        for f in rows:
            if f.event_time_ms >= due:
                if runs[-1]:
                    runs.append([])
                due = self._next_due(f.event_time_ms)
            runs[-1].append(f)
        return runs

    def _next_due(self, t: int) -> int:
        later = [p.effective_ms for p in self.pending if p.effective_ms > t]
        return min(later, default=2**62)

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
        """One signal per feature row, in batch order (one scorer call per model set)."""
        if not batch:
            return []
        self._check(batch)
        out: list[SignalScored] = []
        for run in self._runs(list(batch)):
            self.swap_due(run[0].event_time_ms)
            out.extend(self._score(run))
        return out

    def _score(self, rows: list[FeaturesComputed]) -> list[SignalScored]:
        started = time.perf_counter_ns()
        scores = self.scorer.score(tabular_of(rows), window_of(rows))
        elapsed_us = (time.perf_counter_ns() - started) // 1000
        latency = int(elapsed_us // len(rows)) if self.measure_latency else 0
        out: list[SignalScored] = []
        for i, f in enumerate(rows):
            probs = {m: normalised(scores[m][i]) for m in self.scorer.names}
            sid = ids.signal_id(f.symbol, f.event_time_ms)
            try:
                ballot = vote(probs, self.weights)
            except InvalidInputError as exc:
                raise StageError(self.stage, sid, str(exc)) from exc
            out.append(signal_record(sid, f, probs, self.versions, ballot, latency))
        return out
