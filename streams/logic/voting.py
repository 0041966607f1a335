"""Weighted vote of the models' 3-class probabilities (the ``ensemble`` stage).

Each model contributes its probability vector ``(p_sell, p_hold, p_buy)`` times its weight;
the ensemble's distribution is the weight-normalised sum over the models that voted, its
action the arg-max and its confidence the winning probability. An exact tie between the
top classes resolves to HOLD (never trade on a coin flip). Weights are renormalised over
the models present, so a missing model does not silently drag every class down; the
supervisor reports the missing model separately.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams.errors import InvalidInputError
from streams.vocabulary import CLASSES, Action, side_of

_PROB_TOLERANCE = 1e-6

Probs = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class ModelVote:
    """One model's output for one symbol at one event time.

    ``as_of_ms`` is the event time of the input the model scored; the supervisor compares it
    with the signal's event time to detect a stale model.
    """

    model: str
    version: str
    probs: Probs
    as_of_ms: int

    @property
    def action(self) -> Action:
        """The model's own arg-max class (ties -> HOLD)."""
        return argmax_action(self.probs)

    @property
    def confidence(self) -> float:
        """Probability of the model's own action."""
        return self.probs[CLASSES.index(self.action)]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a record or a table."""
        return {
            "model": self.model,
            "version": self.version,
            "probs": list(self.probs),
            "as_of_ms": self.as_of_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelVote:
        """Inverse of :meth:`to_dict`."""
        p = data["probs"]
        return cls(data["model"], data["version"], (p[0], p[1], p[2]), int(data["as_of_ms"]))


@dataclass(frozen=True, slots=True)
class EnsembleSignal:
    """The ensemble's output: every vote plus the combined action and confidence."""

    signal_id: str
    symbol: str
    event_time_ms: int
    votes: tuple[ModelVote, ...]
    weights: tuple[float, ...]  # aligned with ``votes``, renormalised to sum 1
    probs: Probs
    action: Action
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a record or a table."""
        return {
            "signal_id": self.signal_id,
            "symbol": self.symbol,
            "event_time_ms": self.event_time_ms,
            "votes": [v.to_dict() for v in self.votes],
            "weights": list(self.weights),
            "probs": list(self.probs),
            "action": self.action.value,
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnsembleSignal:
        """Inverse of :meth:`to_dict`."""
        p = data["probs"]
        return cls(
            signal_id=data["signal_id"],
            symbol=data["symbol"],
            event_time_ms=int(data["event_time_ms"]),
            votes=tuple(ModelVote.from_dict(v) for v in data["votes"]),
            weights=tuple(float(w) for w in data["weights"]),
            probs=(p[0], p[1], p[2]),
            action=Action(data["action"]),
            confidence=float(data["confidence"]),
        )


def argmax_action(probs: Probs) -> Action:
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


def _vote_weights(votes: Sequence[ModelVote], weights: Mapping[str, float]) -> tuple[float, ...]:
    raw: list[float] = []
    for vote in votes:
        if vote.model not in weights:
            raise InvalidInputError("model", vote.model, f"one of {sorted(weights)}")
        raw.append(weights[vote.model])
    total = sum(raw)
    if total <= 0.0 or any(w < 0.0 for w in raw):
        raise InvalidInputError("ensemble weights", raw, "non-negative with a positive sum")
    return tuple(w / total for w in raw)


def vote(
    signal_id: str,
    symbol: str,
    event_time_ms: int,
    votes: Sequence[ModelVote],
    weights: Mapping[str, float],
) -> EnsembleSignal:
    """Combine ``votes`` with ``weights`` (``Settings.ensemble_weights``) into one signal.

    Raises :class:`InvalidInputError` for no votes, a duplicate or unknown model, or a
    malformed probability vector.
    """
    if not votes:
        raise InvalidInputError("votes", votes, "at least one model vote")
    models = [v.model for v in votes]
    if len(set(models)) != len(models):
        raise InvalidInputError("votes", models, "one vote per model")
    for v in votes:
        validate_probs(f"probabilities of {v.model}", v.probs)
    norm = _vote_weights(votes, weights)
    combined = [0.0, 0.0, 0.0]
    for v, w in zip(votes, norm, strict=True):
        for i in range(3):
            combined[i] += w * v.probs[i]
    probs: Probs = (combined[0], combined[1], combined[2])
    action = argmax_action(probs)
    return EnsembleSignal(
        signal_id=signal_id,
        symbol=symbol,
        event_time_ms=event_time_ms,
        votes=tuple(votes),
        weights=norm,
        probs=probs,
        action=action,
        confidence=probs[CLASSES.index(action)],
    )


def opposition(signal: EnsembleSignal) -> float:
    """Weight share of the models whose own vote opposes the ensemble's side.

    0 for a HOLD ensemble (nothing to oppose). A BUY ensemble with two of four equally weighted
    models voting SELL has opposition 0.5.
    """
    side = side_of(signal.action)
    if side is None:
        return 0.0
    return sum(
        w
        for v, w in zip(signal.votes, signal.weights, strict=True)
        if side_of(v.action) is side.opposite
    )
