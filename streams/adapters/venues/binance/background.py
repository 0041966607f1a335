"""The venue gateway (and optionally the fake exchange) on a thread, for the demo and tests.

``quantum-trader venue`` is the production shape (its own process); a bounded run such as
``QT_MODE=testnet quantum-trader demo`` starts the same :class:`~.service.VenueService` beside
its worker with :class:`BackgroundVenue`, pointed at a :class:`~.fake_exchange.FakeExchange`
that replays the run's recorded klines paced by the topology itself: the fake market moves to the
event time the execution stage has reached (its watermarks on ``trades.closed``), so orders
meet the prices of the bars the topology is at, as on a live feed.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from streams import kafka_io
from streams.adapters.venues.binance.fake_exchange import FakeExchange, serve
from streams.adapters.venues.binance.gateway import BinanceGateway
from streams.adapters.venues.binance.service import VenueService
from streams.config import Settings
from streams.ordering import SOURCE_HEADER, WATERMARK_HEADER, header_value
from streams.topics import Topic, topic_name

log = logging.getLogger(__name__)


def fake_exchange_for(
    settings: Settings, data: Path, symbols: Iterable[str], start_ms: int | None
) -> FakeExchange:
    """A fake exchange with the settings' keys and the recorded klines of ``symbols`` from
    ``start_ms`` on (every ``<SYMBOL>.csv.gz`` in ``data`` when ``symbols`` is empty)."""
    key, secret = settings.binance_api_key, settings.binance_api_secret
    if key is None or secret is None:
        raise ValueError("the fake exchange checks signatures: set the testnet keys first")
    fake = FakeExchange(key.get_secret_value(), secret.get_secret_value())
    wanted = set(symbols)
    for path in sorted(data.glob("*.csv.gz")):
        symbol = path.name.split(".")[0]
        if wanted and symbol not in wanted:
            continue
        with gzip.open(path, "rt") as f:
            rows = [r for r in list(csv.reader(f))[1:] if start_ms is None or int(r[0]) >= start_ms]
        fake.load_klines(symbol, rows)
    return fake


class BackgroundVenue:
    """``with BackgroundVenue(settings, bootstrap, fake):`` the gateway runs for the block."""

    def __init__(
        self, settings: Settings, bootstrap: str, fake: FakeExchange | None, bar_s: float = 0.002
    ) -> None:
        self.settings, self.bootstrap, self.fake, self.bar_s = settings, bootstrap, fake, bar_s
        self.settle_s = 3.0
        self.service: VenueService | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="venue", daemon=True)

    def __enter__(self) -> BackgroundVenue:
        self._thread.start()
        if not self._ready.wait(60) or self.error is not None:
            self.__exit__(None, None, None)
            raise RuntimeError(f"the venue gateway did not start: {self.error!r}")
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        # The topology has drained, but its last commands (the cancels of a closed position's
        # legs) may still be in flight: stop only once the gateway has been quiet a while.
        deadline = time.monotonic() + self.settle_s * 10
        while (
            t is None
            and self.service is not None
            and self.service.quiet_for() < self.settle_s
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if t is None and self.error is not None:  # a gateway that died mid-run failed the run
            raise RuntimeError(f"the venue gateway failed: {self.error!r}") from self.error

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by __enter__ / __exit__
            log.exception("venue: the gateway stopped with an error")
            self.error = exc
            self._ready.set()

    async def _run(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        cfg = self.settings.binance
        key, secret = self.settings.binance_api_key, self.settings.binance_api_secret
        assert key is not None and secret is not None
        if self.fake is None:
            await self._serve(cfg, key, secret)
            return
        async with serve(self.fake) as (rest, ws):
            ticker = asyncio.create_task(self._follow(self.fake, self._stop))
            try:
                await self._serve(
                    cfg.model_copy(update={"rest_url": rest, "user_stream_url": ws}), key, secret
                )
            finally:
                ticker.cancel()

    async def _serve(self, cfg, key, secret) -> None:  # type: ignore[no-untyped-def]
        assert self._stop is not None
        self.service = VenueService(self.settings, BinanceGateway(cfg, key, secret), self.bootstrap)
        started = asyncio.create_task(self.service.run(self._stop))
        while not started.done() and not self.service.gateway.filters:
            await asyncio.sleep(0.05)
        self._ready.set()
        await started

    async def _follow(self, fake: FakeExchange, stop: asyncio.Event) -> None:
        """Advance the fake market to the execution stage's watermark, bar by bar."""
        consumer = kafka_io.consumer(
            kafka_io.ConsumerOptions(self.bootstrap, f"venue-pace-{id(self)}")
        )
        consumer.subscribe([topic_name(Topic.TRADES_CLOSED, self.settings.topic_prefix)])
        loop = asyncio.get_running_loop()
        reached = -(2**62)
        try:
            while not stop.is_set():
                msg = await loop.run_in_executor(None, consumer.poll, 0.2)
                if msg is not None and not msg.error():
                    source = (header_value(msg.headers(), SOURCE_HEADER) or b"").decode()
                    wm = header_value(msg.headers(), WATERMARK_HEADER)
                    if wm is not None and source.startswith("execution/"):
                        reached = max(reached, int(wm))
                end = min(reached, fake.last_bar_ms() + 60_000)
                while fake.now_ms < end and not stop.is_set():
                    await fake.advance()
                    await asyncio.sleep(self.bar_s)  # let the user stream deliver, bar by bar
        finally:
            consumer.close()
