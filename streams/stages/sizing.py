"""RL position sizing of the strategy stage: tabular Q-learning over size multipliers.

Part of the strategy stage (:mod:`streams.stages.strategy` sizes every decision it takes with
:func:`size_position` and applies the ``SIZING`` rewards of :mod:`streams.stages.learning` with
:meth:`QTable.update`). The learning stage names the state a reward belongs to with
:func:`confidence_key`, the part of :attr:`SizingState.key` it can know at trade close.

Actions are multipliers of the base risk (10 % of equity as margin by default):
``0.5, 0.75, 1.0, 1.25, 1.5``. The state is ``(confidence bucket, regime, drawdown bucket)``.
The reward of a sizing choice arrives once, when the trade it sized closes, and the next
trade's state does not depend on this action in any way the agent controls, so each trade is
a one-step episode: the update is ``Q <- Q + alpha * (r - Q)`` (Q-learning with discount 0).
Choosing is epsilon-greedy with a seeded ``random.Random`` passed in; greedy ties prefer the
neutral 1.0x, then the multiplier closest to it (smaller first), so an untrained table sizes
exactly like the base policy.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.config import MULTIPLIERS, SizingConfig
from streams.errors import InvalidInputError
from streams.vocabulary import Regime


@dataclass(frozen=True, slots=True)
class SizingState:
    """Discrete state of the Q-table."""

    confidence_bucket: int
    regime: Regime
    drawdown_bucket: int

    @property
    def key(self) -> str:
        """Table key, e.g. ``"c2/TREND/d0"``."""
        return f"{_confidence_part(self.confidence_bucket, self.regime)}/d{self.drawdown_bucket}"

    @classmethod
    def from_key(cls, key: str) -> SizingState:
        """Inverse of :attr:`key` (the learner gets the key back through ``trades.closed``)."""
        try:
            conf, regime, dd = key.split("/")
            return cls(int(conf.removeprefix("c")), Regime(regime), int(dd.removeprefix("d")))
        except ValueError as exc:
            raise InvalidInputError("sizing state key", key, "c<int>/<REGIME>/d<int>") from exc


def _confidence_part(confidence_bucket: int, regime: Regime) -> str:
    return f"c{confidence_bucket}/{regime.value}"


def confidence_key(confidence: float, regime: Regime, cfg: SizingConfig) -> str:
    """``c<confidence bucket>/<REGIME>``: the sizing state without its drawdown bucket.

    A closed trade knows its confidence and regime but not the drawdown at decision time, so the
    ``SIZING`` reward's ``state`` is this prefix; the strategy stage completes it from what it
    recorded when it sized the decision.
    """
    return _confidence_part(bucket(confidence, cfg.confidence_edges), regime)


def bucket(value: float, edges: tuple[float, ...]) -> int:
    """Index of the bucket of ``value``: 0 under ``edges[0]``, len(edges) at/over the last."""
    return bisect_right(edges, value)


def sizing_state(
    confidence: float, regime: Regime, drawdown: float, cfg: SizingConfig
) -> SizingState:
    """Discretise (confidence, regime, drawdown) into a Q-table state."""
    return SizingState(
        bucket(confidence, cfg.confidence_edges), regime, bucket(drawdown, cfg.drawdown_edges)
    )


def _preference(multipliers: tuple[float, ...]) -> list[int]:
    """Action indices in greedy tie-break order: closest to 1.0 first, smaller first."""
    return sorted(
        range(len(multipliers)), key=lambda i: (abs(multipliers[i] - 1.0), multipliers[i])
    )


@dataclass(slots=True)
class QTable:
    """Q-values and visit counts per state key."""

    n_actions: int = len(MULTIPLIERS)
    q: dict[str, list[float]] = field(default_factory=dict)
    visits: dict[str, list[int]] = field(default_factory=dict)

    def values(self, state: SizingState) -> list[float]:
        """Q-values of ``state`` (zeros when never visited)."""
        return self.q.get(state.key) or [0.0] * self.n_actions

    def greedy(self, state: SizingState, cfg: SizingConfig) -> int:
        """Best action index, ties broken towards 1.0x."""
        q = self.values(state)
        best = max(q)
        return next(i for i in _preference(cfg.multipliers) if q[i] == best)

    def choose(self, state: SizingState, rng: random.Random, cfg: SizingConfig) -> int:
        """Epsilon-greedy action index (one ``rng.random()`` draw, one more when exploring)."""
        if rng.random() < cfg.epsilon:
            return rng.randrange(self.n_actions)
        return self.greedy(state, cfg)

    def update(self, state: SizingState, action: int, reward: float, cfg: SizingConfig) -> float:
        """One-step Q update; returns the new Q-value."""
        if not 0 <= action < self.n_actions:
            raise InvalidInputError("sizing action", action, f"0..{self.n_actions - 1}")
        q = self.q.setdefault(state.key, [0.0] * self.n_actions)
        n = self.visits.setdefault(state.key, [0] * self.n_actions)
        q[action] += cfg.alpha * (reward - q[action])
        n[action] += 1
        return q[action]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table."""
        return {"n_actions": self.n_actions, "q": self.q, "visits": self.visits}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QTable:
        """Inverse of :meth:`to_dict`."""
        return cls(
            int(data["n_actions"]),
            {k: [float(x) for x in v] for k, v in data["q"].items()},
            {k: [int(x) for x in v] for k, v in data["visits"].items()},
        )


def margin_for(equity: float, risk_fraction: float, max_margin: float) -> float:
    """Margin of a position: ``risk_fraction`` of ``equity``, capped at ``max_margin``.

    The one sizing rule in dollars: the strategy stage sizes its decision with it and the risk
    stage re-sizes the decision against the portfolio's equity with it. 10 000 USD equity at
    15 % -> 1 500 USD; 20 000 USD at 15 % -> 3 000, capped to 2 000; no equity, no margin.
    """
    return min(risk_fraction * equity, max_margin) if equity > 0.0 else 0.0


@dataclass(frozen=True, slots=True)
class SizeChoice:
    """What the sizing agent decided and the context the learner needs later."""

    state: SizingState
    action: int
    multiplier: float
    margin: float


def size_position(
    table: QTable,
    confidence: float,
    regime: Regime,
    drawdown: float,
    equity: float,
    limits: tuple[float, float],
    rng: random.Random,
    cfg: SizingConfig = SizingConfig(),
) -> SizeChoice:
    """Choose a multiplier for this state and turn it into margin.

    ``limits`` is ``(base_risk_fraction, max_margin_per_position_usd)`` from ``RiskLimits``.
    """
    state = sizing_state(confidence, regime, drawdown, cfg)
    action = table.choose(state, rng, cfg)
    mult = cfg.multipliers[action]
    return SizeChoice(state, action, mult, margin_for(equity, limits[0] * mult, limits[1]))
