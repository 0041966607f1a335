"""Learning: closed trades become rewards for the sizing and strategy agents.

The reward of a trade is its net return on margin, ``net_pnl / margin``, clipped to
``[-clip, clip]``. Return on margin (not raw PnL) makes trades of different size and symbol
comparable, and it is what the sizing multiplier changes; the clip keeps one outsized win or a
gap through a stop from dominating a Q-value learnt with a constant step. With the default
ladder a full stop-out costs about 32 % of margin plus fees and a full ladder earns roughly
50-70 %, so ``clip = 1`` only bites on gaps.

A reward is routed back to exactly what produced it, carried in the trade's
:class:`~streams.adapters.venues.interface.TradeContext`: the sizing state key and action, and the
(regime, strategy) arm of the meta selector. Unfilled entries (quantity 0) teach nothing and
yield no reward.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from streams.adapters.venues.interface import ClosedTrade
from streams.config import RewardConfig, SelectorConfig, SizingConfig
from streams.logic.sizing import QTable, SizingState
from streams.logic.strategy import STRATEGIES, MetaSelector
from streams.vocabulary import Regime


@dataclass(frozen=True, slots=True)
class Reward:
    """One ``learning.rewards`` record."""

    trade_id: str
    symbol: str
    value: float
    return_on_margin: float
    regime: str
    strategy: str
    sizing_state: str
    sizing_action: int
    time_ms: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a record."""
        return asdict(self)


def return_on_margin(trade: ClosedTrade) -> float:
    """Net PnL over the margin the trade used (0 for a trade that used none)."""
    return trade.net_pnl / trade.margin if trade.margin > 0.0 else 0.0


def reward_from_trade(trade: ClosedTrade, cfg: RewardConfig = RewardConfig()) -> Reward | None:
    """The reward of ``trade``; None for an unfilled entry."""
    if trade.quantity <= 0.0:
        return None
    rom = return_on_margin(trade)
    ctx = trade.context
    return Reward(
        trade_id=trade.trade_id,
        symbol=trade.symbol,
        value=max(-cfg.clip, min(cfg.clip, rom)),
        return_on_margin=rom,
        regime=ctx.regime,
        strategy=ctx.strategy,
        sizing_state=ctx.sizing_state,
        sizing_action=ctx.sizing_action,
        time_ms=trade.closed_ms,
    )


def apply_reward(
    reward: Reward,
    table: QTable,
    selector: MetaSelector,
    sizing_cfg: SizingConfig = SizingConfig(),
    selector_cfg: SelectorConfig = SelectorConfig(),
) -> None:
    """Update the sizing Q-table and the strategy selector with one reward.

    Parts of the context that are absent (a trade sized without the RL agent, or placed by a
    strategy unknown to this build) are skipped; the rest still learns.
    """
    if reward.sizing_state and reward.sizing_action >= 0:
        state = SizingState.from_key(reward.sizing_state)
        table.update(state, reward.sizing_action, reward.value, sizing_cfg)
    if reward.regime and reward.strategy in STRATEGIES:
        selector.update(Regime(reward.regime), reward.strategy, reward.value, selector_cfg)
