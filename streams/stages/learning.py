"""Learning stage: ``TradeClosed`` -> one ``RewardComputed`` per learner (sizing, strategy).

This module is the one home of the reward rule; the strategy stage applies the rewards
(:meth:`streams.stages.strategy.StrategyStage.on_reward`). The reward of a trade is its net
return on margin, ``net_pnl / margin``, clipped to ``[-clip, clip]``. Return on margin (not raw
PnL) makes trades of different size and symbol comparable, and it is what the sizing multiplier
changes; the clip keeps one outsized win or a gap through a stop from dominating a Q-value learnt
with a constant step. With the default ladder a full stop-out costs about 32 % of margin plus
fees and a full ladder earns roughly 50-70 %, so ``clip = 1`` only bites on gaps. A trade that
never filled (quantity 0) teaches nothing and yields no reward.

Event time: stateless; a reward carries its trade's ``event_time_ms`` (the close) and reaches
the strategy stage ``feedback_lag_ms`` later (:mod:`streams.stages`). Reward ids are
``<trade_id>:<learner>``, so a re-processed trade re-emits the same records and the strategy
stage applies each once.

The SIZING reward's ``state`` is :func:`~streams.stages.sizing.confidence_key`
(``c<confidence bucket>/<REGIME>``): the drawdown bucket of the decision is only known to the
strategy stage, which completes the key from what it recorded at decision time; its ``action``
is the multiplier. The STRATEGY reward's ``state`` is the regime and its ``action`` the strategy.
"""

from __future__ import annotations

from streams.config import RewardConfig, Settings, SizingConfig
from streams.contracts.records import Learner, RewardComputed, TradeClosed
from streams.stages.sizing import confidence_key


def return_on_margin(t: TradeClosed) -> float:
    """Net PnL over the margin the trade used (0 for a trade that used none)."""
    return t.net_pnl / t.margin_usd if t.margin_usd > 0.0 else 0.0


def clipped(value: float, clip: float) -> float:
    """``value`` limited to ``[-clip, clip]``."""
    return max(-clip, min(clip, value))


def rewards_for(t: TradeClosed, reward: RewardConfig, sizing: SizingConfig) -> list[RewardComputed]:
    """The SIZING and STRATEGY rewards of ``t``, in that order (none for an unfilled entry)."""
    if t.qty <= 0.0:
        return []
    rom = return_on_margin(t)
    value = clipped(rom, reward.clip)
    per_learner = (
        (Learner.SIZING, confidence_key(t.confidence, t.regime, sizing), repr(t.size_multiplier)),
        (Learner.STRATEGY, t.regime.value, t.strategy),
    )
    return [
        RewardComputed(
            reward_id=f"{t.trade_id}:{learner.value}",
            trade_id=t.trade_id,
            decision_id=t.decision_id,
            symbol=t.symbol,
            event_time_ms=t.event_time_ms,
            learner=learner,
            state=state,
            action=action,
            reward=value,
            net_pnl=t.net_pnl,
            return_pct=rom,
            regime=t.regime,
            strategy=t.strategy,
            size_multiplier=t.size_multiplier,
        )
        for learner, state, action in per_learner
    ]


class LearningStage:
    """Turns closed trades into rewards (stateless)."""

    stage = "learning"

    def __init__(self, reward: RewardConfig | None = None, sizing: SizingConfig | None = None):
        self.reward = reward or RewardConfig()
        self.sizing = sizing or SizingConfig()

    @classmethod
    def from_settings(cls, settings: Settings) -> LearningStage:
        """The stage as the settings configure it."""
        return cls(settings.reward, settings.sizing)

    def on_trade_closed(self, t: TradeClosed) -> list[RewardComputed]:
        """The rewards of ``t`` (:func:`rewards_for`)."""
        return rewards_for(t, self.reward, self.sizing)
