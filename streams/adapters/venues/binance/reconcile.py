"""Reconciliation: the exchange's view of one symbol against the venue's, as findings.

Pure: :func:`diff_symbol` compares a :class:`VenueView` (what the venue's state says should be
on the exchange) with a :class:`~.messages.SymbolSnapshot` (what the exchange says is there) and
names every difference with the fix in the safe direction; the venue applies the fixes
(:meth:`streams.adapters.venues.binance.venue.BinanceVenue.reconcile`) and the findings become
events with their reasons. Orders the venue has sent but not yet seen acknowledged are not in
the view (they may still be in flight), so a slow acknowledgement is never "missing".
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.adapters.venues.binance.messages import ReconcileFinding, SymbolSnapshot
from streams.vocabulary import ReconcileKind

__all__ = ["ReconcileKind", "SymbolSnapshot", "VenueView", "diff_symbol"]

#: Quantities closer than this (base units) are equal: floats parsed from decimal strings.
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class VenueView:
    """What the venue expects on the exchange for one symbol."""

    symbol: str
    amount: float  # signed open quantity; 0 when flat or the entry has not filled
    open_orders: tuple[str, ...]  # acknowledged, not conditional
    open_algo_orders: tuple[str, ...]  # acknowledged conditional orders
    pending: tuple[str, ...] = ()  # sent, not acknowledged yet: never "unknown", never "missing"


def diff_symbol(
    view: VenueView, snap: SymbolSnapshot, unknown_position: str
) -> list[ReconcileFinding]:
    """Every difference between ``view`` and ``snap``, in a fixed order (position, orders)."""
    t, sym = snap.time_ms, snap.symbol
    found: list[ReconcileFinding] = []
    theirs, ours = snap.amount, view.amount
    if abs(theirs) > _EPS and abs(ours) <= _EPS:
        kind = (
            ReconcileKind.UNKNOWN_POSITION_ADOPTED
            if unknown_position == "adopt"
            else ReconcileKind.UNKNOWN_POSITION_FLATTENED
        )
        detail = f"exchange holds {theirs:g} @ {snap.entry_price:g} that no decision of ours opened"
        found.append(ReconcileFinding(sym, kind, detail, t, theirs, snap.entry_price))
    elif abs(ours) > _EPS and abs(theirs) <= _EPS:
        detail = f"we hold {ours:g}, the exchange is flat: closed at ~{snap.mark_price:g}"
        found.append(ReconcileFinding(sym, ReconcileKind.POSITION_GONE, detail, t, ours))
    elif abs(theirs - ours) > _EPS:
        detail = f"exchange {theirs:g}, venue {ours:g}"
        found.append(
            ReconcileFinding(sym, ReconcileKind.QUANTITY_MISMATCH, detail, t, theirs - ours)
        )
    if abs(ours) > _EPS:  # a flat venue's leftover legs are cancelled as unknown orders below
        for cid in (*view.open_orders, *view.open_algo_orders):
            if cid not in snap.open_orders and cid not in snap.open_algo_orders:
                found.append(
                    ReconcileFinding(
                        sym,
                        ReconcileKind.ORDER_MISSING,
                        f"{cid} is not open on the exchange",
                        t,
                        client_id=cid,
                    )
                )
    mine = set(view.open_orders) | set(view.open_algo_orders) | set(view.pending)
    for cid, algo in [(c, False) for c in snap.open_orders] + [
        (c, True) for c in snap.open_algo_orders
    ]:
        if cid not in mine:
            what = "algo order" if algo else "order"
            found.append(
                ReconcileFinding(
                    sym,
                    ReconcileKind.UNKNOWN_ORDER_CANCELLED,
                    f"{what} {cid} is open on the exchange, not in the venue",
                    t,
                    client_id=cid,
                )
            )
    return found
