"""`quantum-trader data download` against the local Binance: real klines, paged, a 429, resumed.

The files it writes must hold exactly the rows of the recorded files they came from (same text:
the project's format is the shortest decimal form, as the shared data is written), and a second
run must continue after the last kline of the first.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from rich.console import Console

from streams.commands.data import _download
from tests.fakes.binance import FakeBinance, Faults, load_klines
from tests.fakes.live_support import FUTURES, MINUTE, T0, live_config

pytestmark = pytest.mark.slow

SYMBOLS = ("BTCUSDT", "XMRUSDT")
DAYS = 2


def source_lines(symbol: str, start: int, end: int) -> list[str]:
    with gzip.open(FUTURES / f"{symbol}.csv.gz", "rt") as rows:
        next(rows)
        return [line for line in rows if start <= int(line.split(",", 1)[0]) < end]


async def test_download_writes_the_recorded_rows_resumes_and_counts_missing(
    tmp_path: Path,
) -> None:
    end = T0 + DAYS * 1440 * MINUTE
    data = {s: load_klines(FUTURES / f"{s}.csv.gz", T0, end + 10 * MINUTE) for s in SYMBOLS}
    lost = {("XMRUSDT", T0 + 100 * MINUTE), ("XMRUSDT", T0 + 101 * MINUTE)}
    # the exchange's clock is 30 s into the minute `end`: that minute is open, not downloaded
    server = FakeBinance(data, end + 30_000, 1.0, Faults(missing=lost, rate_limit_requests={3}))
    await server.start()
    console = Console(stderr=True)
    try:
        live = live_config(server, rest_page_limit=1000)
        half = T0 + 1440 * MINUTE + 7 * MINUTE
        first = await _download(live, tmp_path, True, SYMBOLS, T0, half, console)
        second = await _download(live, tmp_path, True, SYMBOLS, T0, None, console)
    finally:
        await server.stop()
    assert [r.resumed_after_ms for r in first] == [None, None]
    assert [r.resumed_after_ms for r in second] == [half - MINUTE] * 2
    for symbol in SYMBOLS:
        with gzip.open(tmp_path / f"{symbol}.csv.gz", "rt") as written:
            assert next(written) == "open_time_ms,open,high,low,close,volume\n"
            rows = list(written)
        expected = [
            line for line in source_lines(symbol, T0, end)
            if (symbol, int(line.split(",", 1)[0])) not in lost
        ]  # fmt: skip
        assert rows == expected, symbol
    assert {r.symbol: r.missing for r in first} == {"BTCUSDT": 0, "XMRUSDT": 2}
    assert sum(r.written for r in first + second) == DAYS * 1440 * 2 - 2
    assert server.requests > 2 * DAYS * 2  # paged (1000 per request), a 429 waited out


def test_the_format_is_the_shortest_plain_decimal() -> None:
    from streams.adapters.live.download import plain_decimal

    assert [plain_decimal(x) for x in (106800.0, 0.00001, 2.50, 1e16, 0.1 + 0.2)] == [
        "106800", "0.00001", "2.5", "10000000000000000", "0.30000000000000004",
    ]  # fmt: skip
