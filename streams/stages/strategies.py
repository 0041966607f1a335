"""The nine strategies and the meta selector of the strategy stage: which strategy to follow.

Part of the strategy stage (:mod:`streams.stages.strategy` offers every tradeable signal to
:func:`choose_strategy` and applies ``STRATEGY`` rewards with :meth:`MetaSelector.update`).

A strategy is a pure rule: given the supervised signal's side and confidence, the regime and
the market view, it *takes* the signal or *skips* it. Strategies never invert the models'
direction (the ensemble is the only source of direction); they decide when that direction is
worth trading. ``stand_aside`` never takes: it is the "do nothing" arm, worth exactly 0.

The meta selector learns, per regime, which strategy pays. Per signal it considers the
strategies whose rule takes the signal plus ``stand_aside`` and picks one epsilon-greedily
(seeded ``random.Random`` passed in) on the mean reward of that (regime, strategy) pair.
Restricting the choice to takers matters: a strategy whose rule never fires in a regime would
otherwise stay at its prior forever and block learning. Ties go to the earlier strategy in
:data:`STRATEGY_NAMES` (``stand_aside`` last), so an untried taker is preferred to doing nothing
until its rewards turn negative. The value is an incremental mean whose step never falls under
``min_step``, so it keeps tracking a market that changes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.config import SelectorConfig, StrategyConfig
from streams.errors import InvalidInputError
from streams.stages.regime import MarketView
from streams.vocabulary import Regime, Side


@dataclass(frozen=True, slots=True)
class StrategyInput:
    """What every strategy rule sees."""

    side: Side
    confidence: float
    regime: Regime
    view: MarketView


@dataclass(frozen=True, slots=True)
class StrategyCall:
    """A strategy's verdict; ``side`` is None when it skips."""

    strategy: str
    take: bool
    side: Side | None
    reason: str


Rule = Callable[[StrategyInput, StrategyConfig], str | None]
"""A rule returns the reason it takes the signal, or None to skip."""


def _with_trend(x: StrategyInput) -> bool:
    return x.view.trend * x.side.sign > 0


def trend_follow(x: StrategyInput, c: StrategyConfig) -> str | None:
    """Trade with an established trend."""
    return (
        "trend regime, signal with trend" if x.regime is Regime.TREND and _with_trend(x) else None
    )


def mean_revert(x: StrategyInput, c: StrategyConfig) -> str | None:
    """In a range, buy low in the band / sell high in the band."""
    if x.regime is not Regime.RANGE:
        return None
    b = x.view.band_position
    low, high = x.side is Side.LONG and b <= c.band_low, x.side is Side.SHORT and b >= c.band_high
    return "range regime, signal from the band edge" if low or high else None


def breakout(x: StrategyInput, c: StrategyConfig) -> str | None:
    """Trade a close outside the band in the breakout's direction."""
    b = x.view.band_position
    up, down = x.side is Side.LONG and b > 1.0, x.side is Side.SHORT and b < 0.0
    return "close outside the band, signal in breakout direction" if up or down else None


def momentum_scalp(x: StrategyInput, c: StrategyConfig) -> str | None:
    """Trade strong short-term momentum in the signal's direction."""
    strong = x.view.momentum * x.side.sign >= c.momentum_atr * x.view.atr_pct
    return "momentum with the signal" if strong and x.view.momentum != 0.0 else None


def volatility_fade(x: StrategyInput, c: StrategyConfig) -> str | None:
    """In high volatility, fade an over-extended move (buy oversold, sell overbought)."""
    if x.regime is not Regime.HIGH_VOLATILITY:
        return None
    rsi = x.view.rsi
    fade = (x.side is Side.LONG and rsi <= c.rsi_oversold) or (
        x.side is Side.SHORT and rsi >= c.rsi_overbought
    )
    return "high volatility, signal fades an extreme" if fade else None


def range_scalp(x: StrategyInput, c: StrategyConfig) -> str | None:
    """In a range, take confident signals from the near half of the band."""
    if x.regime is not Regime.RANGE or x.confidence < c.scalp_confidence:
        return None
    b = x.view.band_position
    near = (x.side is Side.LONG and b < 0.5) or (x.side is Side.SHORT and b > 0.5)
    return "range regime, confident signal from the near half" if near else None


def trend_pullback(x: StrategyInput, c: StrategyConfig) -> str | None:
    """Join a trend after a pullback (RSI retreated against the trend)."""
    if x.regime is not Regime.TREND or not _with_trend(x):
        return None
    rsi = x.view.rsi
    pulled = rsi < c.pullback_rsi if x.side is Side.LONG else rsi > 100.0 - c.pullback_rsi
    return "trend regime, pullback entry" if pulled else None


def counter_trend(x: StrategyInput, c: StrategyConfig) -> str | None:
    """Bet against an exhausted trend (signal against the trend at an RSI extreme)."""
    if _with_trend(x) or x.view.trend == 0.0:
        return None
    rsi = x.view.rsi
    exhausted = rsi >= c.rsi_overbought if x.side is Side.SHORT else rsi <= c.rsi_oversold
    return "signal against an exhausted trend" if exhausted else None


def stand_aside(x: StrategyInput, c: StrategyConfig) -> str | None:
    """Never trade: the zero-value baseline arm."""
    return None


STANDING_ASIDE = "stand_aside"

STRATEGIES: dict[str, Rule] = {
    "trend_follow": trend_follow,
    "trend_pullback": trend_pullback,
    "breakout": breakout,
    "momentum_scalp": momentum_scalp,
    "mean_revert": mean_revert,
    "range_scalp": range_scalp,
    "volatility_fade": volatility_fade,
    "counter_trend": counter_trend,
    STANDING_ASIDE: stand_aside,
}
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)


def evaluate_all(x: StrategyInput, cfg: StrategyConfig) -> list[StrategyCall]:
    """Every strategy's verdict on ``x``, in :data:`STRATEGY_NAMES` order."""
    calls = []
    for name, rule in STRATEGIES.items():
        reason = rule(x, cfg)
        take = reason is not None
        calls.append(StrategyCall(name, take, x.side if take else None, reason or "skip"))
    return calls


@dataclass(slots=True)
class ArmStats:
    """Reward statistics of one (regime, strategy) arm."""

    count: int = 0
    value: float = 0.0


@dataclass(slots=True)
class MetaSelector:
    """Epsilon-greedy bandit per regime over the strategies that take the signal."""

    arms: dict[str, ArmStats] = field(default_factory=dict)  # key "REGIME/strategy"

    @staticmethod
    def key(regime: Regime, strategy: str) -> str:
        """Table key of an arm."""
        return f"{regime.value}/{strategy}"

    def value(self, regime: Regime, strategy: str) -> float:
        """Mean reward of an arm; ``stand_aside`` is always 0."""
        if strategy == STANDING_ASIDE:
            return 0.0
        arm = self.arms.get(self.key(regime, strategy))
        return arm.value if arm else 0.0

    def select(
        self, calls: list[StrategyCall], regime: Regime, rng: random.Random, cfg: SelectorConfig
    ) -> StrategyCall:
        """Pick one call among the takers and ``stand_aside`` (epsilon-greedy, seeded)."""
        candidates = [c for c in calls if c.take or c.strategy == STANDING_ASIDE]
        if not candidates:
            raise InvalidInputError("strategy calls", calls, f"a list containing {STANDING_ASIDE}")
        if rng.random() < cfg.epsilon:
            return candidates[rng.randrange(len(candidates))]
        best = max(self.value(regime, c.strategy) for c in candidates)
        return next(c for c in candidates if self.value(regime, c.strategy) == best)

    def update(self, regime: Regime, strategy: str, reward: float, cfg: SelectorConfig) -> None:
        """Fold one reward into the arm's mean (step ``max(1/n, min_step)``)."""
        if strategy not in STRATEGIES:
            raise InvalidInputError("strategy", strategy, f"one of {STRATEGY_NAMES}")
        arm = self.arms.setdefault(self.key(regime, strategy), ArmStats())
        arm.count += 1
        arm.value += max(1.0 / arm.count, cfg.min_step) * (reward - arm.value)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table."""
        return {k: {"count": a.count, "value": a.value} for k, a in self.arms.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetaSelector:
        """Inverse of :meth:`to_dict`."""
        return cls({k: ArmStats(int(v["count"]), float(v["value"])) for k, v in data.items()})


def choose_strategy(
    x: StrategyInput,
    selector: MetaSelector,
    rng: random.Random,
    strategy_cfg: StrategyConfig = StrategyConfig(),
    selector_cfg: SelectorConfig = SelectorConfig(),
) -> StrategyCall:
    """Evaluate all nine rules on ``x`` and let the selector pick the one to follow."""
    return selector.select(evaluate_all(x, strategy_cfg), x.regime, rng, selector_cfg)
