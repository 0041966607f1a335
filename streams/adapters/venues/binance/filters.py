"""Binance symbol filters from ``exchangeInfo`` and the rounding every order goes through.

An order's quantity is rounded *down* to ``LOT_SIZE.stepSize`` (``MARKET_LOT_SIZE`` for market
orders: never more than the plan asked for); its prices to ``PRICE_FILTER.tickSize``, half-even
(the plan's levels are already on our grid; a venue grid can be coarser). An order that still
cannot satisfy a filter (below ``minQty``, under ``MIN_NOTIONAL.notional``, a price out of
``minPrice``/``maxPrice``) is refused with a reason here, before it costs a request: the venue
turns that into a rejection event, never an exception.

All arithmetic is in :class:`~decimal.Decimal` on the exchange's own strings, so ``0.1 + 0.2``
never reaches the wire as ``0.30000000000000004`` (Binance answers that with -1111).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class SymbolFilters:
    """The filters of one symbol that an order must pass (Decimal, as the exchange states them)."""

    symbol: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal

    @classmethod
    def from_exchange_info(cls, entry: Mapping[str, Any]) -> SymbolFilters:
        """One ``symbols[]`` entry of ``GET /fapi/v1/exchangeInfo``."""
        by_type = {f["filterType"]: f for f in entry.get("filters", ())}
        price = by_type.get("PRICE_FILTER", {})
        lot = by_type.get("LOT_SIZE", {})
        market = by_type.get("MARKET_LOT_SIZE", lot)
        notional = by_type.get("MIN_NOTIONAL", {})
        return cls(
            symbol=str(entry["symbol"]),
            tick_size=_dec(price.get("tickSize"), "0"),
            min_price=_dec(price.get("minPrice"), "0"),
            max_price=_dec(price.get("maxPrice"), "0"),
            step_size=_dec(lot.get("stepSize"), "0"),
            min_qty=_dec(lot.get("minQty"), "0"),
            max_qty=_dec(lot.get("maxQty"), "0"),
            market_step_size=_dec(market.get("stepSize"), "0"),
            market_min_qty=_dec(market.get("minQty"), "0"),
            market_max_qty=_dec(market.get("maxQty"), "0"),
            min_notional=_dec(notional.get("notional"), "0"),
        )


def _dec(value: object, default: str) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(default)


def filters_by_symbol(exchange_info: Mapping[str, Any]) -> dict[str, SymbolFilters]:
    """Every TRADING symbol's filters from an ``exchangeInfo`` body."""
    symbols: Iterable[Mapping[str, Any]] = exchange_info.get("symbols", ())
    return {
        s["symbol"]: SymbolFilters.from_exchange_info(s)
        for s in symbols
        if s.get("status", "TRADING") == "TRADING"
    }


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """``value`` rounded down to a multiple of ``step`` (``step`` 0: unchanged)."""
    if step <= 0:
        return value
    return (value / step).quantize(Decimal(1), rounding=ROUND_DOWN) * step


def round_to(value: Decimal, step: Decimal) -> Decimal:
    """``value`` rounded half-even to a multiple of ``step`` (``step`` 0: unchanged)."""
    if step <= 0:
        return value
    return (value / step).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * step


def wire(value: Decimal) -> str:
    """The plain decimal string Binance accepts (no exponent, no trailing zeros)."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


@dataclass(frozen=True, slots=True)
class RoundedOrder:
    """An order's quantity and prices on the exchange grid, as wire strings (None: not sent)."""

    quantity: str | None
    price: str | None
    trigger_price: str | None


class FilterRejection(ValueError):
    """An order that no rounding can make acceptable; ``reason`` says which filter and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def round_order(
    f: SymbolFilters,
    *,
    quantity: float | None,
    price: float | None = None,
    trigger_price: float | None = None,
    market: bool = False,
    reference_price: float | None = None,
    reduce_only: bool = False,
) -> RoundedOrder:
    """Round an order to ``f``; raise :class:`FilterRejection` when it cannot pass.

    ``reference_price`` values a market order for the notional check (the last known price);
    without it and without a limit price the notional is not checked (the exchange will).
    Reduce-only orders are exempt from ``MIN_NOTIONAL`` (Binance: "unless you choose reduce
    only"), so the last small leg of a ladder can always close what is left.
    """
    qty = _rounded_quantity(f, quantity, market)
    px = _rounded_price(f, price, "price")
    trig = _rounded_price(f, trigger_price, "trigger price")
    value_px = px if px is not None else trig
    if value_px is None and reference_price is not None:
        value_px = Decimal(repr(reference_price))
    if qty is not None and value_px is not None and f.min_notional > 0 and not reduce_only:
        notional = qty * value_px
        if notional < f.min_notional:
            raise FilterRejection(
                f"MIN_NOTIONAL: {wire(qty)} x {wire(value_px)} = {wire(notional)} is under "
                f"{wire(f.min_notional)} on {f.symbol}"
            )
    return RoundedOrder(
        wire(qty) if qty is not None else None,
        wire(px) if px is not None else None,
        wire(trig) if trig is not None else None,
    )


def _rounded_quantity(f: SymbolFilters, quantity: float | None, market: bool) -> Decimal | None:
    if quantity is None:
        return None
    step, low, high = (
        (f.market_step_size, f.market_min_qty, f.market_max_qty)
        if market
        else (f.step_size, f.min_qty, f.max_qty)
    )
    qty = floor_to(Decimal(repr(quantity)), step)
    name = "MARKET_LOT_SIZE" if market else "LOT_SIZE"
    if qty <= 0 or qty < low:
        raise FilterRejection(
            f"{name}: quantity {quantity!r} rounds to {wire(qty)}, under minQty {wire(low)} "
            f"on {f.symbol}"
        )
    if high > 0 and qty > high:
        raise FilterRejection(
            f"{name}: quantity {wire(qty)} is over maxQty {wire(high)} on {f.symbol}"
        )
    return qty


def _rounded_price(f: SymbolFilters, price: float | None, what: str) -> Decimal | None:
    if price is None:
        return None
    px = round_to(Decimal(repr(price)), f.tick_size)
    if px <= 0 or (f.min_price > 0 and px < f.min_price):
        raise FilterRejection(
            f"PRICE_FILTER: {what} {price!r} rounds to {wire(px)}, under minPrice "
            f"{wire(f.min_price)} on {f.symbol}"
        )
    if f.max_price > 0 and px > f.max_price:
        raise FilterRejection(
            f"PRICE_FILTER: {what} {wire(px)} is over maxPrice {wire(f.max_price)} on {f.symbol}"
        )
    return px
