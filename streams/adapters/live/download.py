"""``quantum-trader data download``: closed 1-minute klines over REST into the project's files.

The same REST code as the live backfill (:class:`~.rest.RestKlines`: paged, within the request
weight, ``Retry-After`` waited out), written as one CSV(.gz) per symbol with the header
``open_time_ms,open,high,low,close,volume`` and numbers in plain positional decimal, shortest
form, trailing zeros dropped: the format of ``data/sample`` and ``../shared/data/binance``, so
``replay --data``, ``backtest --data`` and ``models train`` read a download as they read those.

Resumable: a symbol whose file exists continues after its last open time (a gzip file grows by
one gzip member per chunk, which every gzip reader reads as one stream), so an interrupted
download loses at most one chunk. Only closed klines are written: the end is capped at the
exchange's current minute (its ``serverTime``). Minutes the exchange has no kline for stay
missing (counted), as everywhere in the project.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Final

from streams.adapters.live.klines import Kline
from streams.adapters.live.rest import RestError, RestKlines
from streams.adapters.live.sequencer import BackfillRequest, floor_minute

HEADER: Final = "open_time_ms,open,high,low,close,volume"
MINUTE_MS: Final = 60_000
#: Minutes fetched (and appended) per step: a few pages, then the file is safe on disk.
CHUNK_MINUTES: Final = 5_000


def plain_decimal(value: float) -> str:
    """Shortest round-trip text of ``value`` without exponent or trailing zeros (``106800``)."""
    text = repr(float(value))
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def kline_row(kline: Kline) -> str:
    """One line of the file (no newline)."""
    values = (kline.open, kline.high, kline.low, kline.close, kline.volume)
    return ",".join([str(kline.open_time_ms), *map(plain_decimal, values)])


def file_for(out_dir: Path, symbol: str, compress: bool = True) -> Path:
    """``<out_dir>/<SYMBOL>.csv.gz`` (``.csv`` uncompressed)."""
    return out_dir / f"{symbol}.csv{'.gz' if compress else ''}"


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="ascii")  # type: ignore[return-value]
    return path.open(mode, encoding="ascii")


def last_open_time(path: Path) -> int | None:
    """The newest open time already in ``path`` (``None``: no file, or no row yet)."""
    if not path.exists():
        return None
    last = None
    with _open(path, "r") as rows:
        header = next(rows, "").strip()
        if header != HEADER:
            raise ValueError(f"{path}: header {header!r} is not {HEADER!r}; not resuming into it")
        for line in rows:
            if line.strip():
                last = line
    return None if last is None else int(last.split(",", 1)[0])


@dataclass
class SymbolDownload:
    """What one symbol's download did."""

    symbol: str
    path: Path
    resumed_after_ms: int | None = None
    written: int = 0
    missing: int = 0
    chunks: list[tuple[int, int]] = field(default_factory=list)


def chunks(start_ms: int, end_ms: int, minutes: int = CHUNK_MINUTES) -> list[tuple[int, int]]:
    """``[start, end)`` cut into steps of ``minutes`` (each a REST request range)."""
    step = minutes * MINUTE_MS
    return [(a, min(a + step, end_ms)) for a in range(start_ms, end_ms, step)]


async def download_symbol(
    rest: RestKlines,
    symbol: str,
    start_ms: int,
    end_ms: int,
    path: Path,
    on_minutes: Callable[[int], None] = lambda _n: None,
) -> SymbolDownload:
    """Append ``symbol``'s closed klines of ``[start_ms, end_ms)`` to ``path`` (resuming)."""
    done = SymbolDownload(symbol, path, resumed_after_ms=last_open_time(path))
    begin = floor_minute(start_ms)
    if done.resumed_after_ms is not None:
        begin = max(begin, done.resumed_after_ms + MINUTE_MS)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with _open(path, "w") as out:
            out.write(HEADER + "\n")
    for a, b in chunks(begin, end_ms):
        klines = await rest.fetch(BackfillRequest(symbol, a, b))
        if klines:
            with _open(path, "a") as out:
                out.writelines(kline_row(k) + "\n" for k in klines)
        done.written += len(klines)
        done.missing += (b - a) // MINUTE_MS - len(klines)
        done.chunks.append((a, b))
        on_minutes((b - a) // MINUTE_MS)
    return done


async def exchange_minute(rest: RestKlines) -> int:
    """Open time of the exchange's current (not yet closed) minute, from its ``serverTime``."""
    client = rest.client
    call = client.futures_time if rest.market == "futures" else client.get_server_time
    answer = await rest.request(call, "time", 1, {})
    if not isinstance(answer, dict) or not isinstance(answer.get("serverTime"), int):
        raise RestError(f"time: answer {answer!r:.80} has no serverTime")
    return floor_minute(answer["serverTime"])
