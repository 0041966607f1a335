"""The venue's messages as the contract records of ``venue.commands`` and ``venue.events``.

The state machine and the gateway speak :mod:`.messages`; between processes they travel as
:class:`~streams.contracts.records.VenueCommand` and
:class:`~streams.contracts.records.VenueEventReceived` (Avro, ``schemas/venue.*.avsc``). Both
directions are lossless for every field the venue reads, and event ids derive from the
exchange's own ids, so a redelivered event has the id of the original.
"""

from __future__ import annotations

from streams.adapters.venues.binance.messages import (
    AlgoUpdate,
    CancelOrder,
    Command,
    ExchangeEvent,
    OrderRejected,
    OrderUpdate,
    PlaceOrder,
    PositionUpdate,
    ReconcileFinding,
    SymbolSnapshot,
)
from streams.contracts.records import VenueCommand, VenueEventReceived
from streams.vocabulary import VenueCommandKind, VenueEventKind


def command_record(cmd: Command, time_ms: int, decision_id: str = "") -> VenueCommand:
    """``cmd`` as a ``venue.commands`` record, caused at ``time_ms``."""
    if isinstance(cmd, CancelOrder):
        return VenueCommand(
            command_id=f"{cmd.client_id}/CANCEL",
            kind=VenueCommandKind.CANCEL,
            symbol=cmd.symbol,
            event_time_ms=time_ms,
            decision_id=decision_id,
            client_id=cmd.client_id,
            conditional=cmd.conditional,
        )
    return VenueCommand(
        command_id=f"{cmd.client_id}/PLACE",
        kind=VenueCommandKind.PLACE,
        symbol=cmd.symbol,
        event_time_ms=time_ms,
        decision_id=decision_id,
        client_id=cmd.client_id,
        conditional=cmd.conditional,
        side=cmd.side,
        order_type=cmd.order_type,
        quantity=cmd.quantity,
        price=cmd.price,
        trigger_price=cmd.trigger_price,
        callback_rate_pct=cmd.callback_rate_pct,
        reduce_only=cmd.reduce_only,
        close_position=cmd.close_position,
        time_in_force=cmd.time_in_force,
        leverage=cmd.leverage,
        reference_price=cmd.reference_price,
    )


def command_from_record(r: VenueCommand) -> Command:
    """Inverse of :func:`command_record`."""
    if r.kind is VenueCommandKind.CANCEL:
        return CancelOrder(r.client_id, r.symbol, r.conditional)
    return PlaceOrder(
        client_id=r.client_id,
        symbol=r.symbol,
        side=r.side or "",
        order_type=r.order_type or "",
        quantity=r.quantity,
        price=r.price,
        trigger_price=r.trigger_price,
        callback_rate_pct=r.callback_rate_pct,
        reduce_only=r.reduce_only,
        close_position=r.close_position,
        time_in_force=r.time_in_force,
        leverage=r.leverage,
        reference_price=r.reference_price,
    )


def event_record(ev: ExchangeEvent) -> VenueEventReceived:
    """``ev`` as a ``venue.events`` record."""
    if isinstance(ev, OrderUpdate):
        return VenueEventReceived(
            event_id=f"order/{ev.order_id}/{ev.exec_type}/{ev.trade_id or ev.status}",
            kind=VenueEventKind.ORDER,
            symbol=ev.symbol,
            event_time_ms=ev.time_ms,
            client_id=ev.client_id,
            order_id=ev.order_id,
            side=ev.side,
            order_type=ev.order_type,
            status=ev.status,
            exec_type=ev.exec_type,
            last_qty=ev.last_qty,
            last_price=ev.last_price,
            cum_qty=ev.cum_qty,
            avg_price=ev.avg_price,
            commission=ev.commission,
            commission_asset=ev.commission_asset,
            commission_usdt=ev.commission_usdt,
            maker=ev.maker,
            trade_id=ev.trade_id,
            reduce_only=ev.reduce_only,
            realized_pnl=ev.realized_pnl,
        )
    if isinstance(ev, AlgoUpdate):
        return VenueEventReceived(
            event_id=f"algo/{ev.algo_id}/{ev.status}",
            kind=VenueEventKind.ALGO,
            symbol=ev.symbol,
            event_time_ms=ev.time_ms,
            client_id=ev.client_id,
            status=ev.status,
            algo_id=ev.algo_id,
            actual_order_id=ev.actual_order_id,
        )
    if isinstance(ev, OrderRejected):
        return VenueEventReceived(
            event_id=f"rejected/{ev.client_id}/{ev.code}",
            kind=VenueEventKind.REJECTED,
            symbol=ev.symbol,
            event_time_ms=ev.time_ms,
            client_id=ev.client_id,
            code=ev.code,
            reason=ev.reason,
        )
    if isinstance(ev, PositionUpdate):
        return VenueEventReceived(
            event_id=f"position/{ev.symbol}/{ev.time_ms}",
            kind=VenueEventKind.POSITION,
            symbol=ev.symbol,
            event_time_ms=ev.time_ms,
            amount=ev.amount,
            entry_price=ev.entry_price,
        )
    if isinstance(ev, SymbolSnapshot):
        return VenueEventReceived(
            event_id=f"snapshot/{ev.symbol}/{ev.time_ms}",
            kind=VenueEventKind.SNAPSHOT,
            symbol=ev.symbol,
            event_time_ms=ev.time_ms,
            amount=ev.amount,
            entry_price=ev.entry_price,
            mark_price=ev.mark_price,
            open_orders=ev.open_orders,
            open_algo_orders=ev.open_algo_orders,
        )
    return VenueEventReceived(
        event_id=f"finding/{ev.symbol}/{ev.time_ms}/{ev.kind}/{ev.client_id}",
        kind=VenueEventKind.FINDING,
        symbol=ev.symbol,
        event_time_ms=ev.time_ms,
        client_id=ev.client_id,
        amount=ev.amount,
        entry_price=ev.entry_price,
        finding=str(ev.kind),
        detail=ev.detail,
    )


def event_from_record(r: VenueEventReceived) -> ExchangeEvent:
    """Inverse of :func:`event_record`."""
    k = r.kind
    if k is VenueEventKind.ORDER:
        return OrderUpdate(
            client_id=r.client_id,
            order_id=r.order_id,
            symbol=r.symbol,
            side=r.side,
            order_type=r.order_type,
            status=r.status,
            exec_type=r.exec_type,
            time_ms=r.event_time_ms,
            last_qty=r.last_qty,
            last_price=r.last_price,
            cum_qty=r.cum_qty,
            avg_price=r.avg_price,
            commission=r.commission,
            commission_asset=r.commission_asset,
            commission_usdt=r.commission_usdt,
            maker=r.maker,
            trade_id=r.trade_id,
            reduce_only=r.reduce_only,
            realized_pnl=r.realized_pnl,
        )
    if k is VenueEventKind.ALGO:
        return AlgoUpdate(
            r.client_id, r.algo_id, r.symbol, r.status, r.event_time_ms, r.actual_order_id
        )
    if k is VenueEventKind.REJECTED:
        return OrderRejected(r.client_id, r.symbol, r.code, r.reason, r.event_time_ms)
    if k is VenueEventKind.POSITION:
        return PositionUpdate(r.symbol, r.amount, r.entry_price, r.event_time_ms)
    if k is VenueEventKind.SNAPSHOT:
        return SymbolSnapshot(
            r.symbol,
            r.amount,
            r.entry_price,
            r.mark_price,
            tuple(r.open_orders),
            tuple(r.open_algo_orders),
            r.event_time_ms,
        )
    return ReconcileFinding(
        r.symbol, r.finding, r.detail, r.event_time_ms, r.amount, r.entry_price, r.client_id
    )
