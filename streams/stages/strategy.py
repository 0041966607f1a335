"""Strategy + sizing stage: features, supervised signals and rewards -> ``DecisionSized``.

Where its rules are: the regime detector and the mapping of a feature row to the indicators it
reads in :mod:`streams.stages.regime`; the nine strategies and the meta selector (a bandit per
regime) in :mod:`streams.stages.strategies`; the Q-learning sizing in :mod:`streams.stages.sizing`;
the reward they learn from in :mod:`streams.stages.learning`. This module keeps the per-symbol
state, turns records into rule inputs and back, and applies the rewards.

State is per *symbol* (:class:`StrategyState`): the regime baseline, the latest market view, the
strategy selector, the sizing Q-table and the symbol's realised equity track. Keying by symbol
rather than by partition makes every decision independent of how symbols are spread over
partitions; exploration draws come from ``ids.rng_for(seed, decision_id)`` for the same reason.

Inputs, in event-time order per symbol:

``on_features``
    Every feature row (``market.features``, co-partitioned by symbol) folds the regime baseline
    and becomes the :class:`~streams.stages.regime.MarketView` for the signal of the same bar.
    ``SignalScored`` does not carry the indicators the strategies read (trend, momentum, RSI,
    band position), and folding the baseline on every bar (not only on tradeable signals)
    keeps the regime independent of the vetoes.
``on_signal``
    A supervised BUY/SELL without veto, with the view of its own bar, is offered to the nine
    strategies; the selector picks one (``stand_aside`` included) and the Q-table sizes it.
    Vetoed, HOLD and stand-aside signals end here (None).
``on_reward``
    ``SIZING`` rewards update the Q-table (with the state key recorded at decision time: the
    drawdown bucket is only known here) and the realised equity track; ``STRATEGY`` rewards
    update the selector arm. A reward for an unknown or already rewarded decision is ignored, so
    at-least-once redelivery never learns twice; a strategy unknown to this build teaches nothing.
    A decision that never trades (risk rejected it) never gets a reward: its pending entries are
    forgotten :data:`REWARD_WAIT_MS` of event time after it, so they do not pile up forever.

Drawdown for the sizing state is the symbol's own realised drawdown: ``(peak - equity) / peak``
of ``starting equity + net PnL of this symbol's closed trades``. Portfolio equity is the risk
stage's business: it re-bases the margin on the portfolio equity at approval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from streams import ids
from streams.config import (
    RegimeConfig,
    RiskLimits,
    SelectorConfig,
    Settings,
    SizingConfig,
    StrategyConfig,
)
from streams.contracts.records import (
    Action,
    DecisionSized,
    FeaturesComputed,
    Learner,
    Regime,
    RewardComputed,
    Side,
    SignalSupervised,
)
from streams.stages.regime import MarketView, RegimeState, detect_regime, market_view
from streams.stages.sizing import QTable, SizingState, size_position
from streams.stages.strategies import STRATEGIES, MetaSelector, StrategyInput, choose_strategy

V = TypeVar("V")

#: How long a decision waits for its rewards (event time): the dedupe window, far longer than
#: a trade stays open; past it the decision is forgotten (rejected ones never get any).
REWARD_WAIT_MS = ids.DEDUPE_WINDOW_MS


@dataclass(slots=True)
class StrategyState:
    """Everything the strategy+sizing stage keeps for one symbol (a Faust table value)."""

    equity: float
    peak_equity: float
    regime_state: RegimeState = field(default_factory=RegimeState)
    view: MarketView | None = None
    view_time_ms: int = -1
    regime: Regime = Regime.RANGE
    qtable: QTable = field(default_factory=QTable)
    selector: MetaSelector = field(default_factory=MetaSelector)
    #: Decisions waiting for their rewards: sizing state key, action and the decision's event
    #: time; the strategy reward's decision time. Insertion order is event-time order.
    pending_sizing: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    pending_strategy: dict[str, int] = field(default_factory=dict)

    @property
    def drawdown(self) -> float:
        """Realised drawdown of this symbol's equity track from its peak."""
        return (self.peak_equity - self.equity) / self.peak_equity if self.peak_equity else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a Faust table."""
        return {
            "equity": self.equity,
            "peak_equity": self.peak_equity,
            "regime_state": self.regime_state.to_dict(),
            "view": None if self.view is None else self.view.to_dict(),
            "view_time_ms": self.view_time_ms,
            "regime": self.regime.value,
            "qtable": self.qtable.to_dict(),
            "selector": self.selector.to_dict(),
            "pending_sizing": {k: list(v) for k, v in self.pending_sizing.items()},
            "pending_strategy": dict(self.pending_strategy),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StrategyState:
        """Inverse of :meth:`to_dict`."""
        view, seen = data["view"], int(data["view_time_ms"])
        strategy = data["pending_strategy"]
        if isinstance(strategy, list):  # a document from before decisions kept their time
            strategy = dict.fromkeys(strategy, seen)
        return cls(
            equity=float(data["equity"]),
            peak_equity=float(data["peak_equity"]),
            regime_state=RegimeState.from_dict(data["regime_state"]),
            view=None if view is None else MarketView.from_dict(view),
            view_time_ms=seen,
            regime=Regime(data["regime"]),
            qtable=QTable.from_dict(data["qtable"]),
            selector=MetaSelector.from_dict(data["selector"]),
            pending_sizing={
                k: (str(v[0]), int(v[1]), int(v[2]) if len(v) > 2 else seen)
                for k, v in data["pending_sizing"].items()
            },
            pending_strategy={k: int(t) for k, t in strategy.items()},
        )


def forget_unrewarded(state: StrategyState, before_ms: int) -> None:
    """Drop the pending decisions made before ``before_ms``."""
    _drop_before(state.pending_sizing, before_ms, lambda entry: entry[2])
    _drop_before(state.pending_strategy, before_ms, lambda time_ms: time_ms)


def _drop_before(pending: dict[str, V], before_ms: int, time_of: Callable[[V], int]) -> None:
    """Oldest first: entries are inserted in event-time order (as :class:`~streams.ids.SeenIds`)."""
    while pending:
        first = next(iter(pending))
        if time_of(pending[first]) >= before_ms:
            return
        del pending[first]


def _side(action: Action) -> Side:
    return Side.LONG if action is Action.BUY else Side.SHORT


def model_versions(s: SignalSupervised) -> dict[str, str]:
    """Model -> version of the votes behind a signal (carried to the trade for traceability)."""
    return {v.model: v.version for v in s.signal.votes}


@dataclass(frozen=True, slots=True)
class StrategyTuning:
    """The tunables of this stage (``Settings`` fields; their defaults are the measured ones)."""

    regime: RegimeConfig = field(default_factory=RegimeConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    sizing: SizingConfig = field(default_factory=SizingConfig)


class StrategyStage:
    """Regime + meta-strategy + RL sizing for one symbol at a time (see the module doc)."""

    stage = "strategy"

    def __init__(self, limits: RiskLimits, seed: int, tuning: StrategyTuning | None = None) -> None:
        self.limits = limits
        self.seed = seed
        self.tuning = tuning or StrategyTuning()

    @classmethod
    def from_settings(cls, settings: Settings) -> StrategyStage:
        """The stage as the settings configure it."""
        s = settings
        return cls(s.risk, s.seed, StrategyTuning(s.regime, s.strategy, s.selector, s.sizing))

    def new_state(self) -> StrategyState:
        """A fresh symbol state at the configured starting equity."""
        e = self.limits.starting_equity_usd
        return StrategyState(equity=e, peak_equity=e)

    def on_features(self, state: StrategyState, f: FeaturesComputed) -> None:
        """Fold the bar into the regime baseline; keep its view for the bar's signal."""
        view = market_view(f)
        regime, state.regime_state = detect_regime(state.regime_state, view, self.tuning.regime)
        state.view, state.view_time_ms, state.regime = view, f.event_time_ms, regime

    def on_signal(self, state: StrategyState, s: SignalSupervised) -> DecisionSized | None:
        """A sized decision for a tradeable signal, or None (vetoed, HOLD, stand aside)."""
        if s.vetoed or s.final_action is Action.HOLD or state.view is None:
            return None
        if state.view_time_ms != s.event_time_ms:
            return None  # no feature row of this bar: never trade on another bar's view
        side, conf = _side(s.final_action), s.signal.confidence
        decision = ids.decision_id(s.signal_id)
        rng = ids.rng_for(self.seed, decision)
        x = StrategyInput(side, conf, state.regime, state.view)
        t = self.tuning
        call = choose_strategy(x, state.selector, rng, t.strategy, t.selector)
        if not call.take:
            return None
        limits = (self.limits.base_risk_fraction, self.limits.max_margin_per_position_usd)
        choice = size_position(
            state.qtable, conf, state.regime, state.drawdown, state.equity, limits, rng, t.sizing
        )
        forget_unrewarded(state, s.event_time_ms - REWARD_WAIT_MS)
        state.pending_sizing[decision] = (choice.state.key, choice.action, s.event_time_ms)
        state.pending_strategy[decision] = s.event_time_ms
        return DecisionSized(
            decision_id=decision,
            signal_id=s.signal_id,
            symbol=s.symbol,
            event_time_ms=s.event_time_ms,
            side=side,
            confidence=conf,
            price=state.view.close,
            atr_pct=state.view.atr_pct,
            regime=state.regime,
            strategy=call.strategy,
            size_multiplier=choice.multiplier,
            risk_fraction=self.limits.base_risk_fraction * choice.multiplier,
            margin_usd=choice.margin,
            model_versions=model_versions(s),
            model_drift=s.signal.model_drift,
            health_veto_share=s.health_veto_share,
        )

    def on_reward(self, state: StrategyState, r: RewardComputed) -> bool:
        """Learn from one reward; False when it was unknown or already applied."""
        if r.learner is Learner.SIZING:
            pending = state.pending_sizing.pop(r.decision_id, None)
            if pending is None:
                return False
            key, action, _ = pending
            state.qtable.update(SizingState.from_key(key), action, r.reward, self.tuning.sizing)
            state.equity += r.net_pnl
            state.peak_equity = max(state.peak_equity, state.equity)
            return True
        if r.decision_id not in state.pending_strategy:
            return False
        del state.pending_strategy[r.decision_id]
        if r.strategy in STRATEGIES:
            state.selector.update(r.regime, r.strategy, r.reward, self.tuning.selector)
        return True
