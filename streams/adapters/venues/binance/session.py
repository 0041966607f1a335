"""The venue state machine and the gateway joined in one process (tests, local runs).

:class:`VenueSession` is the smallest complete loop across the boundary: intents go into the
:class:`~.venue.BinanceVenue`, its commands go to the :class:`~.gateway.BinanceGateway`, and
every exchange event (a REST answer, a user-stream message, a reconciliation snapshot) goes back
into the venue under one lock, so the venue sees one ordered sequence of events exactly as the
execution stage sees ``venue.events`` in the Kafka topology (docs/venues.md). Every event the
session applied is kept in :attr:`VenueSession.journal` (the sequence that replays the venue),
every venue event in :attr:`VenueSession.published`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from streams.adapters.venues.binance.gateway import BinanceGateway
from streams.adapters.venues.binance.messages import (
    ExchangeEvent,
    ReconcileFinding,
)
from streams.adapters.venues.binance.venue import BinanceVenue
from streams.adapters.venues.interface import Event, OrderIntent

log = logging.getLogger(__name__)


class VenueSession:
    """One venue, one gateway, one ordered event sequence."""

    def __init__(
        self, venue: BinanceVenue, gateway: BinanceGateway, symbols: Iterable[str]
    ) -> None:
        self.venue = venue
        self.gateway = gateway
        self.symbols = tuple(symbols)
        self.journal: list[ExchangeEvent] = []
        self.published: list[Event] = []
        self.findings: list[ReconcileFinding] = []
        self.connects = 0
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, stream: bool = True, reconcile_every_s: float | None = None) -> None:
        """Connect, reconcile, start the user stream (it reconciles on every connect)."""
        await self.gateway.start()
        if stream:
            self._tasks.append(
                asyncio.create_task(
                    self.gateway.user_stream(self.on_events, self.on_connect, self._stop)
                )
            )
            # orders go out only once fills can be heard: wait for the first connect
            for _ in range(int(self.gateway.cfg.request_timeout_s * 3 / 0.01)):
                if self.connects or self._tasks[0].done():
                    break
                await asyncio.sleep(0.01)
            if self._tasks[0].done():
                self._tasks[0].result()  # the stream failed at once: raise its error here
        else:
            await self.reconcile()
        if reconcile_every_s:
            self._tasks.append(asyncio.create_task(self._periodic(reconcile_every_s)))

    async def stop(self) -> None:
        """Stop the stream and the timers, close the connection."""
        self._stop.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)  # let the stream close cleanly
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.gateway.close()

    async def submit(self, intent: OrderIntent, entry_type: str = "MARKET") -> list[Event]:
        """Accept an intent and send its orders; the venue events of this step."""
        async with self._lock:
            events = list(self.venue.submit(intent, entry_type))
            events += await self._flush()
        self.published += events
        return events

    async def on_events(self, events: list[ExchangeEvent]) -> None:
        """User-stream events, in arrival order."""
        async with self._lock:
            out = self._apply(events)
            out += await self._flush()
        self.published += out

    async def on_connect(self) -> None:
        """After every (re)connect: what the stream missed, then the exchange's state."""
        self.connects += 1
        await self.reconcile(connected=True)

    async def reconcile(self, connected: bool = False) -> list[ReconcileFinding]:
        """Replay missed trades, then compare every symbol's snapshot with the venue."""
        async with self._lock:
            out: list[Event] = []
            for symbol in self._tracked():
                out += self._apply(await self.gateway.missed_trades(symbol, connected))
            found: list[ReconcileFinding] = []
            for snap in await self.gateway.snapshot(self.symbols):
                self.journal.append(snap)
                got = self.venue.reconcile(snap, out)
                found += got
                self.journal += got
            out += await self._flush()
        for f in found:
            log.warning("venue: reconcile %s %s: %s", f.symbol, f.kind, f.detail)
        self.findings += found
        self.published += out
        return found

    def _tracked(self) -> list[str]:
        return sorted({p.plan.symbol for p in self.venue.positions.values()})

    async def _periodic(self, every_s: float) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(every_s)
            await self.reconcile()

    def _apply(self, events: Iterable[ExchangeEvent]) -> list[Event]:
        out: list[Event] = []
        for ev in events:
            self.journal.append(ev)
            out += self.venue.on_exchange_event(ev)
        return out

    async def _flush(self) -> list[Event]:
        """Send what the venue asked for until it asks for nothing more."""
        out: list[Event] = []
        while True:
            cmds = self.venue.take_commands()
            if not cmds:
                return out
            out += self._apply(await self.gateway.execute_all(cmds))
