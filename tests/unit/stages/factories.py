"""Hand-made contract records for the stage tests (real values, shaped like the sample data)."""

from __future__ import annotations

from streams.contracts.records import (
    Action,
    BiasShares,
    DecisionSized,
    ExitReason,
    ModelVote,
    OrderApproved,
    Regime,
    Side,
    SignalScored,
    SignalSupervised,
    TickKind,
    TickReceived,
    TradeClosed,
)

T0 = 1_747_785_600_000  # 2025-05-21 00:00 UTC, first bar of the bundled sample
MODELS = {"xgboost": "v1", "lightgbm": "v1"}
MIN = 60_000


def scored(
    symbol: str = "ETHUSDT",
    t: int = T0,
    probs: tuple[float, float, float] = (0.1, 0.1, 0.8),
    model_probs: tuple[tuple[float, float, float], ...] | None = None,
) -> SignalScored:
    """A signal whose two models both vote ``model_probs`` (default: the ensemble probs)."""
    each = model_probs or (probs, probs)
    votes = tuple(
        ModelVote(
            model=m, version=v, action=Action(("SELL", "HOLD", "BUY")[p.index(max(p))]),
            confidence=max(p), probabilities=p, weight=0.5, latency_us=0,
        )
        for (m, v), p in zip(MODELS.items(), each, strict=True)
    )  # fmt: skip
    top = probs.index(max(probs))
    return SignalScored(
        signal_id=f"{symbol}:{t}", symbol=symbol, event_time_ms=t, feature_version="f1-2025.11",
        votes=votes, action=Action(("SELL", "HOLD", "BUY")[top]), confidence=probs[top],
        probabilities=probs, close=2500.0, atr_pct=0.002, volatility=0.001,
    )  # fmt: skip


def supervised(s: SignalScored, vetoed: bool = False) -> SignalSupervised:
    """``s`` as the supervisor would pass it (no veto unless asked)."""
    bias = BiasShares(
        symbol_buy_share=0.5, symbol_sell_share=0.5, symbol_window=2,
        overall_buy_share=0.5, overall_sell_share=0.5, overall_window=2,
    )  # fmt: skip
    return SignalSupervised(
        signal_id=s.signal_id, symbol=s.symbol, event_time_ms=s.event_time_ms, signal=s,
        vetoed=vetoed, veto_reasons=(), bias=bias,
        final_action=Action.HOLD if vetoed else s.action,
    )  # fmt: skip


def decision(
    symbol: str = "ETHUSDT", t: int = T0, side: Side = Side.LONG, price: float = 2500.0
) -> DecisionSized:
    """A sized decision at 1.0x of a 10 % base risk."""
    return DecisionSized(
        decision_id=f"{symbol}:{t}:decision", signal_id=f"{symbol}:{t}", symbol=symbol,
        event_time_ms=t, side=side, confidence=0.8, price=price, atr_pct=0.002,
        regime=Regime.TREND, strategy="trend_follow", size_multiplier=1.0, risk_fraction=0.1,
        margin_usd=1000.0, model_versions=dict(MODELS),
    )  # fmt: skip


def kline(
    symbol: str, t: int, o: float, h: float, low: float, c: float, v: float = 1000.0
) -> TickReceived:
    """A closed 1-minute kline."""
    return TickReceived(
        symbol=symbol, event_time_ms=t, kind=TickKind.KLINE_1M, open=o, high=h, low=low,
        close=c, volume=v, interval_ms=60_000, source="test",
    )  # fmt: skip


def trade_closed(
    decision_id: str, net_pnl: float, t: int, qty: float = 1.0, strategy: str = "trend_follow"
) -> TradeClosed:
    """A long stopped out at ``t`` after two bars, on 250 USDT of margin at 1.25x, conf 0.85."""
    return TradeClosed(
        trade_id=decision_id,
        decision_id=decision_id,
        order_id=f"{decision_id}:entry",
        symbol=decision_id.split(":")[0],
        event_time_ms=t,
        opened_ms=t - 2 * MIN,
        side=Side.LONG,
        entry_price=2500.0,
        exit_price=2490.0,
        qty=qty,
        leverage=10.0,
        margin_usd=250.0,
        gross_pnl=net_pnl + 2.0,
        fees=2.0,
        net_pnl=net_pnl,
        return_pct=net_pnl / 250.0,
        holding_ms=2 * MIN,
        exit_reason=ExitReason.STOP_LOSS,
        strategy=strategy,
        regime=Regime.TREND,
        size_multiplier=1.25,
        confidence=0.85,
        model_versions=dict(MODELS),
    )


def approved(
    d: DecisionSized, margin: float, max_leverage: float = 30.0, equity: float = 10_000.0
) -> OrderApproved:
    """``d`` as the risk stage approves it, with ``margin`` reserved."""
    return OrderApproved(
        order_id=f"{d.decision_id}:entry", decision_id=d.decision_id, symbol=d.symbol,
        event_time_ms=d.event_time_ms, decision=d, approved_margin_usd=margin,
        max_leverage=max_leverage, equity_usd=equity, open_positions=1,
    )  # fmt: skip
