"""The live ingest: supervised kline streams + REST backfill -> sequencer -> ``market.ticks``.

:class:`LiveIngest` runs one :class:`~.connection.StreamConnection` per 200 streams of the
chosen market, feeds every message to the :class:`~.sequencer.KlineSequencer`, fetches what it
asks for over REST (:class:`~.rest.RestKlines`, one request per symbol at a time) and sends
what it releases to a :class:`LiveSink`: the same sink, key, timestamp and watermark writer as
the file replay. A message that is no usable kline is dead-lettered (stage ``live``) and the
stream goes on. With ``until_ms`` the run ends once every kline before it was produced (the
tests, and ``quantum-trader live --until``); otherwise it runs until :meth:`LiveIngest.stop`.

With a :class:`~.universe.UniverseTracker` the universe is refreshed on the exchange clock:
when the clock reaches the next grid time ``T`` the ingest fetches exchangeInfo and the 24h
ticker (same REST client, same weight budget), writes each change to ``universe.events`` and
only then releases klines from ``T`` on (so a change always precedes the ticks it applies to);
joining symbols are subscribed on a running connection with room (else a new one), leavers
keep their stream through the wind-down and are unsubscribed after it. No other stream drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from streams.adapters.live import LiveError
from streams.adapters.live.backoff import Backoff
from streams.adapters.live.connection import ConnectionHealth, ConnectionSettings, StreamConnection
from streams.adapters.live.endpoints import chunk_streams, combined_stream_url, kline_stream
from streams.adapters.live.klines import KlineMessageError, parse_stream_message, to_tick
from streams.adapters.live.rest import RestCounts, RestError
from streams.adapters.live.sequencer import BackfillRequest, KlineSequencer, SequencerCounts
from streams.adapters.live.universe import (
    UniverseDataError,
    UniverseTracker,
    UniverseUpdate,
    selection_of,
    server_time_of,
)
from streams.contracts.deadletters import bounded_payload
from streams.contracts.records import DeadLettered, TickReceived, UniverseChanged

if TYPE_CHECKING:
    from streams.adapters.live.klines import Kline
    from streams.config import LiveConfig

log = logging.getLogger(__name__)

#: ``stage`` of a live dead letter.
DEAD_LETTER_STAGE = "live"


class LiveSink(Protocol):
    """Where the ingest sends: ticks (with their watermarks), dead letters, announcements."""

    def send_tick(self, tick: TickReceived) -> None:
        """Produce one tick (a watermark first when event time moved on)."""

    def send_dead_letter(self, record: DeadLettered) -> None:
        """Produce one dead letter."""

    def send_universe(self, record: UniverseChanged) -> None:
        """Produce one universe change (``universe.events``)."""

    def announce(self, event_time_ms: int) -> None:
        """Tell every partition that nothing before ``event_time_ms`` follows."""

    def end_stream(self) -> None:
        """The final watermark (a bounded run)."""

    def flush(self) -> None:
        """Wait until everything is acknowledged."""


class KlineFetcher(Protocol):
    """The REST side: every kline the exchange has in a request's range."""

    counts: RestCounts

    async def fetch(self, request: BackfillRequest, step_ms: int = 60_000) -> list[Kline]:
        """Fetch, retrying until the exchange answers."""
        ...

    async def universe_inputs(self) -> tuple[Any, Any]:
        """``exchangeInfo`` and the 24h ticker of every symbol, as JSON."""
        ...


@dataclass
class LiveSummary:
    """What a live run did."""

    ticks: int = 0
    dead_letters: int = 0
    backfilled: int = 0
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    sequencer: SequencerCounts = field(default_factory=SequencerCounts)
    rest: RestCounts = field(default_factory=RestCounts)
    connections: list[ConnectionHealth] = field(default_factory=list)
    ticks_by_symbol: dict[str, int] = field(default_factory=dict)
    universe_refreshes: int = 0
    universe_events: list[UniverseChanged] = field(default_factory=list)

    @property
    def reconnects(self) -> int:
        """Sessions that ended and were replaced, all connections."""
        return sum(c.reconnects for c in self.connections)


def connection_settings(config: LiveConfig) -> ConnectionSettings:
    """The supervision part of the live settings."""
    return ConnectionSettings(
        idle_timeout_s=config.idle_timeout_s,
        rotate_after_s=config.rotate_after_s,
        stable_after_s=config.stable_after_s,
        ping_interval_s=config.ping_interval_s,
        ping_timeout_s=config.ping_timeout_s,
    )


def message_dead_letter(raw: str | bytes, exc: KlineMessageError, connection: str) -> DeadLettered:
    """A message that is no usable kline, kept with its bytes (id: its content hash)."""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    digest = hashlib.sha256(data).hexdigest()[:24]
    return DeadLettered(
        dead_letter_id=f"{DEAD_LETTER_STAGE}:{digest}",
        reason=exc.reason.value,
        error_type="KlineMessageError",
        stage=DEAD_LETTER_STAGE,
        source_file=f"binance-ws:{connection}",
        **bounded_payload(data, None, exc.detail),
    )


class LiveIngest:
    """See the module doc."""

    def __init__(
        self,
        config: LiveConfig,
        symbols: Sequence[str],
        sink: LiveSink,
        rest: KlineFetcher,
        *,
        starts: Mapping[str, int] | None = None,
        until_ms: int | None = None,
        end_of_stream: bool = False,
        connect: Callable[..., Any] | None = None,
        rand: Callable[[], float] = random.random,
        on_progress: Callable[[LiveSummary], None] | None = None,
        progress_every_s: float = 5.0,
        universe: UniverseTracker | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.rest = rest
        self.until_ms = until_ms
        self.end_of_stream = end_of_stream
        self.universe = universe
        if universe is not None and universe.streamed:
            symbols = universe.streamed
        self.sequencer = KlineSequencer(
            symbols, starts=starts, warmup_ms=config.warmup_minutes * 60_000,
            grace_ms=config.overdue_grace_ms, until_ms=until_ms,
        )  # fmt: skip
        self._stream_of = {s: kline_stream(s) for s in self.sequencer.symbols}
        self._connect = connect
        self._rand = rand
        chunks = chunk_streams(list(self._stream_of.values()), config.max_streams_per_connection)
        self.connections = [self._connection(i, chunk) for i, chunk in enumerate(chunks)]
        self._opened = len(self.connections)
        self.summary = LiveSummary(
            sequencer=self.sequencer.counts, rest=rest.counts,
            connections=[c.health for c in self.connections],
        )  # fmt: skip
        self._on_progress = on_progress
        self._progress_every_s = progress_every_s
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._refresh: asyncio.Task[None] | None = None
        self._refresh_at: int | None = None  # klines from here wait for the refresh's events
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._failure: BaseException | None = None

    def _connection(self, index: int, streams: list[str]) -> StreamConnection:
        config, name = self.config, f"{self.config.market}-{index}"
        return StreamConnection(
            name, combined_stream_url(config.ws_url, streams), streams, self._on_text_of(name),
            connection_settings(config),
            Backoff(config.backoff_base_s, config.backoff_cap_s, self._rand),
            connect=self._connect, url_for=lambda s: combined_stream_url(config.ws_url, s),
        )  # fmt: skip

    # --------------------------------------------------------------------------- control

    def stop(self) -> None:
        """Finish the current step, flush and return from :meth:`run` (no end of stream)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> LiveSummary:
        """Ingest until ``until_ms`` is reached or :meth:`stop`; returns the summary."""
        self._wake = asyncio.Event()
        for c in self.connections:
            self._tasks[c.health.name] = asyncio.create_task(c.run(), name=c.health.name)
        start = self.universe.start if self.universe is not None else None
        if self.universe is not None and start is not None:
            # The start's selection: every member JOINED at its time (a symbol that left in an
            # earlier run may trade again).
            self._send_universe(self.universe.apply(start, start.at_ms))
        last_progress = time.monotonic()
        try:
            while not (self._stopping or self.sequencer.done or self._failure):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                self._wake.clear()
                self._check_tasks(list(self._tasks.values()))
                self._pump()
                await self._universe_step()
                if self._on_progress and time.monotonic() - last_progress >= self._progress_every_s:
                    last_progress = time.monotonic()
                    self._on_progress(self.summary)
        finally:
            refresh = [self._refresh] if self._refresh is not None else []
            await _cancel([*self._tasks.values(), *self._inflight.values(), *refresh])
            self.sink.flush()
        if self._failure is not None:
            raise LiveError(str(self._failure)) from self._failure
        if self.sequencer.done and self.end_of_stream:
            self.sink.end_stream()
            self.sink.flush()
        if self._on_progress:
            self._on_progress(self.summary)
        return self.summary

    @property
    def failure(self) -> BaseException | None:
        """What ended (or will end) the run, ``None`` while it goes on."""
        return self._failure

    # ---------------------------------------------------------------------------- inside

    def _on_text_of(self, connection: str) -> Callable[[str | bytes], str | None]:
        def on_text(text: str | bytes) -> str | None:
            try:
                event = parse_stream_message(text)
            except KlineMessageError as exc:
                log.warning("%s: message dead-lettered: %s", connection, exc)
                self.sink.send_dead_letter(message_dead_letter(text, exc, connection))
                self.summary.dead_letters += 1
                return None
            if event is None:
                return None
            self.sequencer.observe_clock(event.event_time_ms)
            if self.sequencer.add(event.kline) and self._wake is not None:
                self._wake.set()
            elif self._wake is not None and not event.kline.closed:
                self._wake.set()  # the clock moved: a gap may be overdue now
            return event.stream

        return on_text

    def _pump(self) -> None:
        """Produce what the sequencer releases; start the backfills it asks for."""
        released = self.sequencer.release(self._refresh_at)
        for kline in released:
            self._send(kline)
        # Say at once that every kline before the frontier is out: otherwise the merges
        # downstream learn a minute is complete only from the next minute's klines, and every
        # live decision waits one bar (docs/performance.md, latency). Quiet minutes too.
        frontier = self.sequencer.frontier(self._refresh_at)
        if frontier is not None:
            self.sink.announce(frontier)
        if self._stopping:
            return
        for request in self.sequencer.gaps():
            if request.symbol not in self._inflight:
                self._inflight[request.symbol] = asyncio.create_task(self._backfill(request))
        for request in self.sequencer.history_requests():
            key = f"history:{request.symbol}"
            if key not in self._inflight:
                self._inflight[key] = asyncio.create_task(self._warm_up(request, key))

    def _send(self, kline: Kline) -> None:
        history = self.sequencer.take_history(kline.symbol)
        self.sink.send_tick(to_tick(kline, self._stream_of[kline.symbol], history))
        s = self.summary
        s.ticks += 1
        s.ticks_by_symbol[kline.symbol] = s.ticks_by_symbol.get(kline.symbol, 0) + 1
        if s.first_event_ms is None:
            s.first_event_ms = kline.open_time_ms
        s.last_event_ms = kline.open_time_ms

    async def _backfill(self, request: BackfillRequest) -> None:
        try:
            klines = await self.rest.fetch(request)
            new = self.sequencer.confirm(request, klines)
            self.summary.backfilled += new
            log.info("backfilled %s [%s, %s): %d new of %d", request.symbol, request.start_ms,
                     request.end_ms, new, len(klines))  # fmt: skip
        except RestError as exc:
            self._failure = exc
        finally:
            self._inflight.pop(request.symbol, None)
            if self._wake is not None:
                self._wake.set()

    async def _warm_up(self, request: BackfillRequest, key: str) -> None:
        """A joiner's history, for its first kline to carry (``TickReceived.history``)."""
        try:
            klines = await self.rest.fetch(request)
        except RestError as exc:  # no history is no reason to stop: the symbol warms up cold
            log.warning("no warm-up history for %s (%s): its features warm up from its klines",
                        request.symbol, exc)  # fmt: skip
            klines = []
        finally:
            self._inflight.pop(key, None)
            if self._wake is not None:
                self._wake.set()
        held = self.sequencer.add_history(request, klines)
        log.info("warm-up of %s: %d klines of [%s, %s)", request.symbol, held, request.start_ms,
                 request.end_ms)  # fmt: skip

    # -------------------------------------------------------------------------- universe

    async def _universe_step(self) -> None:
        """Start a refresh that is due; unsubscribe the symbols whose wind-down ended."""
        tracker, clock = self.universe, self.sequencer.clock_ms
        if tracker is None or self._stopping:
            return
        at = tracker.due(clock)
        if at is not None and self.until_ms is not None and at >= self.until_ms:
            at = None  # a bounded run's end: nothing from then on is ingested
        if at is not None and self._refresh is None:
            self._refresh_at = at
            self._refresh = asyncio.create_task(self._refresh_universe(at), name="universe")
        for symbol in tracker.expired(clock):
            if symbol not in tracker.streamed:
                await self._unsubscribe(symbol)

    async def _refresh_universe(self, at_ms: int) -> None:
        """One refresh at grid time ``at_ms``: its events written before klines from ``at_ms``."""
        tracker = self.universe
        assert tracker is not None
        try:
            info, tickers = await self.rest.universe_inputs()
            selection = selection_of(info, tickers, tracker.rule, at_ms=at_ms)
            if not selection.symbols:
                raise UniverseDataError("the answers select no symbol")
            update = tracker.apply(selection, server_time_of(info, []))
            self._send_universe(update)
            for symbol in update.subscribe:
                await self._subscribe(symbol)
            self.summary.universe_refreshes += 1
        except UniverseDataError as exc:  # a bad answer is no universe: keep ours, retry later
            log.warning("universe refresh at %d failed (%s): universe kept", at_ms, exc)
            tracker.next_at_ms = at_ms + tracker.every_ms
        except RestError as exc:
            self._failure = exc
        finally:
            self._refresh, self._refresh_at = None, None
            if self._wake is not None:
                self._wake.set()

    def _send_universe(self, update: UniverseUpdate) -> None:
        for event in update.events:
            self.sink.send_universe(event)
            log.info("universe %s %s at %d: %s", event.change.value, event.symbol,
                     event.event_time_ms, event.reason)  # fmt: skip
        self.sink.flush()  # acknowledged before any kline it applies to is released
        self.summary.universe_events.extend(update.events)

    async def _subscribe(self, symbol: str) -> None:
        """``symbol``'s kline stream on a connection with room, else on a new connection."""
        stream = self._stream_of.setdefault(symbol, kline_stream(symbol))
        self.sequencer.add_symbol(symbol)
        room = [c for c in self.connections
                if c.capacity_used < self.config.max_streams_per_connection]  # fmt: skip
        if room:
            await room[0].subscribe([stream])
            return
        connection = self._connection(self._opened, [stream])
        self._opened += 1
        self.connections.append(connection)
        self.summary.connections.append(connection.health)
        name = connection.health.name
        self._tasks[name] = asyncio.create_task(connection.run(), name=name)

    async def _unsubscribe(self, symbol: str) -> None:
        """Stop ingesting ``symbol``; a connection left with no stream is closed."""
        stream = self._stream_of.get(symbol)
        self.sequencer.remove_symbol(symbol)
        for connection in list(self.connections):
            if stream not in connection.health.streams:
                continue
            await connection.unsubscribe([stream])
            if connection.capacity_used == 0:
                self.connections.remove(connection)
                self.summary.connections.remove(connection.health)
                await _cancel([self._tasks.pop(connection.health.name)])

    def _check_tasks(self, tasks: Sequence[asyncio.Task[None]]) -> None:
        # A connection task only ends by a bug (its loop retries forever): say so, stop.
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                self._failure = task.exception()


async def _cancel(tasks: Sequence[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
