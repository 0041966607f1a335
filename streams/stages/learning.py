"""Learning stage: ``TradeClosed`` -> one ``RewardComputed`` per learner (sizing, strategy).

The reward is the clipped net return on margin (:mod:`streams.logic.learning`). A trade that
never filled (quantity 0) teaches nothing and yields no reward. Reward ids are
``<trade_id>:<learner>``, so a re-processed trade re-emits the same records and the strategy
stage applies each once.

The SIZING reward's ``state`` is ``c<confidence bucket>/<REGIME>``: the drawdown bucket of the
decision is only known to the strategy stage, which completes the key from what it recorded at
decision time. The STRATEGY reward's ``state`` is the regime and its ``action`` the strategy.
"""

from __future__ import annotations

from streams.config import RewardConfig, Settings, SizingConfig
from streams.contracts.records import Learner, RewardComputed, TradeClosed
from streams.logic.sizing import bucket


def clipped(value: float, clip: float) -> float:
    """``value`` limited to ``[-clip, clip]``."""
    return max(-clip, min(clip, value))


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
        """The SIZING and STRATEGY rewards of ``t`` (none for an unfilled entry)."""
        if t.qty <= 0.0:
            return []
        rom = t.net_pnl / t.margin_usd if t.margin_usd > 0.0 else 0.0
        value = clipped(rom, self.reward.clip)
        conf_bucket = bucket(t.confidence, self.sizing.confidence_edges)
        per_learner = (
            (Learner.SIZING, f"c{conf_bucket}/{t.regime.value}", repr(t.size_multiplier)),
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
