"""Shared pieces of the live-ingest tests: real klines, the fake exchange, an in-memory sink."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from streams.adapters.live.ingest import LiveIngest, LiveSummary
from streams.adapters.live.rest import binance_client
from streams.adapters.live.run import rest_client
from streams.config import LiveConfig
from streams.contracts.records import DeadLettered, TickReceived
from tests.fakes.binance import FakeBinance, load_klines
from tests.shared_data import BINANCE

FUTURES = BINANCE / "um_futures_1m_2025"
SYMBOLS = ("BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
T0 = 1746403200000  # 2025-05-05T00:00Z
MINUTE = 60_000


def recorded(
    symbols: tuple[str, ...], start_ms: int, end_ms: int
) -> dict[str, dict[int, list[str]]]:
    """The real klines of ``symbols`` in ``[start_ms, end_ms)``."""
    return {s: load_klines(FUTURES / f"{s}.csv.gz", start_ms, end_ms) for s in symbols}


def live_config(server: FakeBinance, **overrides: object) -> LiveConfig:
    """Live settings pointed at ``server``, with time compressed for tests."""
    values: dict[str, object] = {
        "futures_ws_url": server.ws_url, "futures_rest_url": server.rest_url,
        "max_streams_per_connection": 3, "idle_timeout_s": 0.6, "rotate_after_s": 1.5,
        "stable_after_s": 0.3, "backoff_base_s": 0.02, "backoff_cap_s": 0.2,
        "ping_interval_s": 0.5, "ping_timeout_s": 1.0, "overdue_grace_ms": 5_000,
        "rest_timeout_s": 5.0,
    }  # fmt: skip
    values.update(overrides)
    return LiveConfig.model_validate(values)


@dataclass
class MemorySink:
    """Records what the ingest sends, in order (ticks, watermarks, dead letters)."""

    ticks: list[TickReceived] = field(default_factory=list)
    dead: list[DeadLettered] = field(default_factory=list)
    #: (event time, ticks sent before it) of every announcement that moved event time on
    announced: list[tuple[int, int]] = field(default_factory=list)
    ended: bool = False

    def send_tick(self, tick: TickReceived) -> None:
        self.ticks.append(tick)

    def send_dead_letter(self, record: DeadLettered) -> None:
        self.dead.append(record)

    def announce(self, event_time_ms: int) -> None:
        if not self.announced or event_time_ms > self.announced[-1][0]:
            self.announced.append((event_time_ms, len(self.ticks)))

    def check_announcements(self) -> None:
        """Every announcement was true: no tick before it followed, every tick before was older."""
        times = [t.event_time_ms for t in self.ticks]
        for at, sent in self.announced:
            assert all(t < at for t in times[:sent]) and all(t >= at for t in times[sent:])

    def end_stream(self) -> None:
        self.ended = True

    def flush(self) -> None:
        pass


async def run_ingest(
    server: FakeBinance,
    sink: Any,
    *,
    symbols: tuple[str, ...] = SYMBOLS,
    starts: dict[str, int] | None = None,
    until_ms: int,
    timeout_s: float = 90.0,
    **config: object,
) -> LiveSummary:
    """The live ingest against ``server`` into ``sink`` until ``until_ms``."""
    cfg = live_config(server, **config)
    client = binance_client("futures", cfg.rest_url, cfg.rest_timeout_s)
    rest = rest_client(client, cfg)
    ingest = LiveIngest(
        cfg, symbols, sink, rest, starts=starts, until_ms=until_ms, end_of_stream=True
    )
    try:
        return await asyncio.wait_for(ingest.run(), timeout_s)
    finally:
        await client.close_connection()


@contextlib.contextmanager
def serving_in_thread(server: FakeBinance) -> Iterator[FakeBinance]:
    """``server`` running on its own event loop in a thread (for code that runs its own loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-binance", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=30)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
