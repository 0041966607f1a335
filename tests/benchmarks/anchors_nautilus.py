"""The NautilusTrader anchor of ``bench_anchors``: run by its own Python >= 3.12 venv.

``.venv-nautilus/bin/python tests/benchmarks/anchors_nautilus.py BARS.npz [options]`` reads the
bars ``bench_anchors`` wrote (``<symbol>.<field>`` arrays), runs a ``BacktestEngine`` with one
Binance-like USDT perpetual per symbol (taker fee = ``--fee``; market orders are takers) and a
Strategy trading the SMA cross of ``--fast``/``--slow`` with NautilusTrader's own
``SimpleMovingAverage`` (long-only, all in and out like the other anchors), ``--reps`` times,
and prints one JSON line: the fastest run's seconds (engine built, data wrangled, run), its
crosses and closed positions. Nautilus has no percentage slippage: ``--slippage`` is reported,
not applied. Imports nothing of the project (it runs outside the project's venv).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.indicators import SimpleMovingAverage
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
from nautilus_trader.model.instruments import CryptoPerpetual
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.persistence.wranglers import BarDataWrangler
from nautilus_trader.trading.strategy import Strategy

VENUE = Venue("BINANCE")


def decimals_of(prices: np.ndarray) -> int:
    """Fewest decimals (<= 8) that represent every price exactly (to 1e-9)."""
    for d in range(9):
        scaled = prices * 10**d
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-6):
            return d
    return 8


def perpetual(symbol: str, price_precision: int, fee: float) -> CryptoPerpetual:
    """A USDT-margined perpetual like Binance's, with our fee as maker and taker."""
    base = symbol.removesuffix("USDT")
    from nautilus_trader.model.objects import Currency

    increment = f"{10**-price_precision:.{price_precision}f}" if price_precision else "1"
    return CryptoPerpetual(
        instrument_id=InstrumentId(Symbol(f"{symbol}-PERP"), VENUE),
        raw_symbol=Symbol(symbol),
        base_currency=Currency.from_str(base),
        quote_currency=USDT,
        settlement_currency=USDT,
        is_inverse=False,
        price_precision=price_precision,
        price_increment=Price.from_str(increment),
        size_precision=3,
        size_increment=Quantity.from_str("0.001"),
        max_quantity=None,
        min_quantity=Quantity.from_str("0.001"),
        max_notional=None,
        min_notional=None,
        max_price=None,
        min_price=None,
        margin_init=Decimal("1"),
        margin_maint=Decimal("0.5"),
        maker_fee=Decimal(str(fee)),
        taker_fee=Decimal(str(fee)),
        ts_event=0,
        ts_init=0,
    )


class SmaCrossConfig(StrategyConfig, frozen=True):
    """The rule's parameters and the instruments it trades."""

    bar_types: tuple[str, ...]
    fast: int
    slow: int
    budget: float


class SmaCross(Strategy):
    """Long on a fast-over-slow SMA cross, flat on the cross back, per instrument."""

    def __init__(self, config: SmaCrossConfig) -> None:
        super().__init__(config)
        self.types = [BarType.from_str(b) for b in config.bar_types]
        self.fast = {t: SimpleMovingAverage(config.fast) for t in self.types}
        self.slow = {t: SimpleMovingAverage(config.slow) for t in self.types}
        self.diff: dict[BarType, float | None] = dict.fromkeys(self.types)
        self.crosses = 0

    def on_start(self) -> None:
        """Indicators follow the bars; subscribe."""
        for t in self.types:
            self.register_indicator_for_bars(t, self.fast[t])
            self.register_indicator_for_bars(t, self.slow[t])
            self.subscribe_bars(t)

    def on_bar(self, bar: Bar) -> None:
        """A cross of the two SMAs: enter or leave."""
        t = bar.bar_type
        if not self.slow[t].initialized:
            return
        now = self.fast[t].value - self.slow[t].value
        before, self.diff[t] = self.diff[t], now
        if before is None:
            return
        up, down = now > 0 >= before, now < 0 <= before
        if not (up or down):
            return
        self.crosses += 1
        instrument_id = t.instrument_id
        flat = self.portfolio.is_flat(instrument_id)
        if up and flat:
            instrument = self.cache.instrument(instrument_id)
            qty = instrument.make_qty(self.config.budget / float(bar.close))
            self.submit_order(self.order_factory.market(instrument_id, OrderSide.BUY, qty))
        elif down and not flat:
            self.close_all_positions(instrument_id)


def run_once(arrays: dict[str, np.ndarray], args: argparse.Namespace) -> dict[str, Any]:
    """Build the engine, wrangle the bars, run; seconds and figures."""
    started = time.perf_counter()
    symbols = sorted({k.split(".", 1)[0] for k in arrays})
    engine = BacktestEngine(
        BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR", bypass_logging=True))
    )
    engine.add_venue(
        VENUE, oms_type=OmsType.NETTING, account_type=AccountType.MARGIN,
        base_currency=USDT, starting_balances=[Money(args.cash, USDT)],
        default_leverage=Decimal(1),
    )  # fmt: skip
    bar_types = []
    for s in symbols:
        prices = np.concatenate([arrays[f"{s}.{k}"] for k in ("open", "high", "low", "close")])
        instrument = perpetual(s, decimals_of(prices), args.fee)
        engine.add_instrument(instrument)
        bar_type = BarType.from_str(f"{instrument.id}-1-MINUTE-LAST-EXTERNAL")
        frame = pd.DataFrame(
            {k: arrays[f"{s}.{k}"] for k in ("open", "high", "low", "close", "volume")},
            index=pd.to_datetime(arrays[f"{s}.time_ms"], unit="ms", utc=True),
        )
        engine.add_data(BarDataWrangler(bar_type, instrument).process(frame))
        bar_types.append(str(bar_type))
    budget = args.cash / len(symbols) * 0.95
    strategy = SmaCross(
        SmaCrossConfig(bar_types=tuple(bar_types), fast=args.fast, slow=args.slow, budget=budget)
    )
    engine.add_strategy(strategy)
    run_started = time.perf_counter()
    engine.run()
    seconds = time.perf_counter() - started
    # Netting: one position per instrument, reopened; a round trip ends with a filled SELL.
    exits = [o for o in engine.cache.orders() if o.side == OrderSide.SELL and o.is_closed]
    account = engine.cache.account_for_venue(VENUE)
    out = {
        "seconds": seconds,
        "engine_run_s": time.perf_counter() - run_started,
        "crosses": strategy.crosses,
        "closed_trades": sum(1 for o in exits if float(o.filled_qty) > 0),
        "final_value": float(account.balance_total(USDT).as_double()) if account else None,
    }
    engine.dispose()
    return out


def main(argv: list[str]) -> int:
    """Run ``--reps`` times and print the fastest as one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("bars")
    parser.add_argument("--cash", type=float, required=True)
    parser.add_argument("--fee", type=float, required=True)
    parser.add_argument("--slippage", type=float, default=0.0)
    parser.add_argument("--fast", type=int, default=10)
    parser.add_argument("--slow", type=int, default=30)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    with np.load(args.bars) as data:
        arrays = {k: data[k] for k in data.files}
    runs = [run_once(arrays, args) for _ in range(args.reps)]
    best = min(runs, key=lambda r: r["seconds"])
    import nautilus_trader

    best |= {
        "runs_s": [r["seconds"] for r in runs],
        "version": nautilus_trader.__version__,
        "python": sys.version.split()[0],
        "slippage_applied": False,
    }
    print(json.dumps(best))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
