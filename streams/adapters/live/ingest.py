"""The live ingest: supervised kline streams + REST backfill -> sequencer -> ``market.ticks``.

:class:`LiveIngest` runs one :class:`~.connection.StreamConnection` per 200 streams of the
chosen market, feeds every message to the :class:`~.sequencer.KlineSequencer`, fetches what it
asks for over REST (:class:`~.rest.RestKlines`, one request per symbol at a time) and sends
what it releases to a :class:`LiveSink`: the same sink, key, timestamp and watermark writer as
the file replay. A message that is no usable kline is dead-lettered (stage ``live``) and the
stream goes on. With ``until_ms`` the run ends once every kline before it was produced (the
tests, and ``quantum-trader live --until``); otherwise it runs until :meth:`LiveIngest.stop`.
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
from streams.contracts.deadletters import bounded_payload
from streams.contracts.records import DeadLettered, TickReceived

if TYPE_CHECKING:
    from streams.adapters.live.klines import Kline
    from streams.config import LiveConfig

log = logging.getLogger(__name__)

#: ``stage`` of a live dead letter.
DEAD_LETTER_STAGE = "live"


class LiveSink(Protocol):
    """Where the ingest sends: ticks (with their watermarks), dead letters, idle watermarks."""

    def send_tick(self, tick: TickReceived) -> None:
        """Produce one tick (a watermark first when event time moved on)."""

    def send_dead_letter(self, record: DeadLettered) -> None:
        """Produce one dead letter."""

    def advance_idle(self, watermark: int) -> bool:
        """Event time passed ``watermark`` with no tick: tell every partition."""

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
    ) -> None:
        self.config = config
        self.sink = sink
        self.rest = rest
        self.until_ms = until_ms
        self.end_of_stream = end_of_stream
        self.sequencer = KlineSequencer(
            symbols, starts=starts, warmup_ms=config.warmup_minutes * 60_000,
            grace_ms=config.overdue_grace_ms, until_ms=until_ms,
        )  # fmt: skip
        self._stream_of = {s: kline_stream(s) for s in self.sequencer.symbols}
        settings = connection_settings(config)
        chunks = chunk_streams(list(self._stream_of.values()), config.max_streams_per_connection)
        self.connections = [
            StreamConnection(
                f"{config.market}-{i}",
                combined_stream_url(config.ws_url, chunk),
                chunk,
                self._on_text_of(f"{config.market}-{i}"),
                settings,
                Backoff(config.backoff_base_s, config.backoff_cap_s, rand),
                connect=connect,
            )
            for i, chunk in enumerate(chunks)
        ]
        self.summary = LiveSummary(
            sequencer=self.sequencer.counts, rest=rest.counts,
            connections=[c.health for c in self.connections],
        )  # fmt: skip
        self._on_progress = on_progress
        self._progress_every_s = progress_every_s
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._failure: BaseException | None = None

    # --------------------------------------------------------------------------- control

    def stop(self) -> None:
        """Finish the current step, flush and return from :meth:`run` (no end of stream)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> LiveSummary:
        """Ingest until ``until_ms`` is reached or :meth:`stop`; returns the summary."""
        self._wake = asyncio.Event()
        tasks = [asyncio.create_task(c.run(), name=c.health.name) for c in self.connections]
        last_progress = time.monotonic()
        try:
            while not (self._stopping or self.sequencer.done or self._failure):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                self._wake.clear()
                self._check_tasks(tasks)
                self._pump()
                if self._on_progress and time.monotonic() - last_progress >= self._progress_every_s:
                    last_progress = time.monotonic()
                    self._on_progress(self.summary)
        finally:
            await _cancel([*tasks, *self._inflight.values()])
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
        released = self.sequencer.release()
        for kline in released:
            self._send(kline)
        if not released:
            frontier = self.sequencer.frontier()
            if frontier is not None:
                self.sink.advance_idle(frontier)
        if self._stopping:
            return
        for request in self.sequencer.gaps():
            if request.symbol not in self._inflight:
                self._inflight[request.symbol] = asyncio.create_task(self._backfill(request))

    def _send(self, kline: Kline) -> None:
        self.sink.send_tick(to_tick(kline, self._stream_of[kline.symbol]))
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
