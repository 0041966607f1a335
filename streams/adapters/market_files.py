"""Recorded market files: discovery, lazy reading and an event-time merge of several symbols.

Pure reading, no Kafka import. A data set is a folder of one CSV(.gz) per symbol (format of
``../shared/data/binance``: 1-minute klines or raw trades, told apart by the header); each data
line becomes a contract ``TickReceived`` or a ``RejectedRow`` with its reason
(:mod:`streams.adapters.market_rows`), so a caller can dead-letter bad rows and go on. Files are
read lazily and merged with :func:`heapq.merge`, so memory stays flat whatever the data set size.
"""

from __future__ import annotations

import gzip
import heapq
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final

from streams.adapters.market_rows import (
    KLINE_HEADER,
    TRADE_HEADER_PREFIX,
    RejectedRow,
    ReplayItem,
    RowCursor,
    validate_line,
)
from streams.contracts.records import TickKind, TickReceived
from streams.contracts.ticks import symbol_problem

ONE_MINUTE_MS: Final = 60_000
# Epoch-ms values below this (1973-03-03) are almost surely seconds typed by mistake.
_MIN_EPOCH_MS: Final = 100_000_000_000
_SUFFIXES: Final = (".csv.gz", ".csv")


class MarketFileError(Exception):
    """A market file or data set cannot be used at all (not one bad row: that is a RejectedRow)."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(f"{path}: {message}" if path is not None else message)
        self.path = path


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Half-open event-time window ``[start_ms, end_ms)``; ``None`` leaves a side open."""

    start_ms: int | None = None
    end_ms: int | None = None

    def __post_init__(self) -> None:
        if self.start_ms is not None and self.end_ms is not None and self.end_ms <= self.start_ms:
            raise MarketFileError(f"empty time window: end {self.end_ms} <= start {self.start_ms}")

    def contains(self, time_ms: int) -> bool:
        """Whether ``time_ms`` falls inside the window."""
        after_start = self.start_ms is None or time_ms >= self.start_ms
        return after_start and (self.end_ms is None or time_ms < self.end_ms)

    def is_past(self, time_ms: int) -> bool:
        """Whether ``time_ms`` is at or beyond the end (a sorted file can stop there)."""
        return self.end_ms is not None and time_ms >= self.end_ms


#: No time filter.
ALL_TIME: Final = TimeWindow()


@dataclass(frozen=True, slots=True)
class MarketFileSpec:
    """One discovered file: where it is, which symbol and kind, and its name in dead letters."""

    path: Path
    symbol: str
    kind: TickKind
    source: str


def parse_time_bound(text: str) -> int:
    """Epoch milliseconds of a CLI time bound: epoch ms digits, or an ISO date/date-time.

    A naive ISO value is read as UTC (exchange data is UTC); ``2025-05-05`` is its midnight.
    """
    value = text.strip()
    if value.lstrip("-").isdigit():
        millis = int(value)
        if millis < _MIN_EPOCH_MS:
            raise MarketFileError(f"time {text!r} looks like seconds; give epoch milliseconds")
        return millis
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MarketFileError(f"time {text!r} is neither epoch ms nor an ISO date") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def format_epoch_ms(millis: int) -> str:
    """``2025-05-05 00:00:00`` (UTC) for progress lines and summaries."""
    return datetime.fromtimestamp(millis / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _symbol_of(path: Path) -> str | None:
    name = path.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)].upper()
    return None


def _open_text(path: Path) -> tuple[BinaryIO, io.BufferedReader]:
    """The raw file (its ``tell()`` measures progress) and a line reader over its content."""
    raw = path.open("rb")
    if path.name.endswith(".gz"):
        return raw, io.BufferedReader(gzip.GzipFile(fileobj=raw))
    return raw, io.BufferedReader(raw)


def _kind_of_header(header: bytes, path: Path) -> TickKind:
    columns = tuple(col.strip() for col in header.decode("utf-8", "replace").strip().split(","))
    if columns == KLINE_HEADER:
        return TickKind.KLINE_1M
    if columns[: len(TRADE_HEADER_PREFIX)] == TRADE_HEADER_PREFIX:
        return TickKind.TRADE
    raise MarketFileError(f"unknown header {','.join(columns)!r}", path)


def read_header_kind(path: Path) -> TickKind:
    """The kind of a market file, from its header line."""
    raw, reader = _open_text(path)
    try:
        with raw, reader:
            return _kind_of_header(reader.readline(), path)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise MarketFileError(f"cannot read header: {exc}", path) from exc


def _spec_for(path: Path, root: Path) -> MarketFileSpec:
    symbol = _symbol_of(path)
    if symbol is None:
        raise MarketFileError("not a .csv or .csv.gz market file", path)
    bad_symbol = symbol_problem(symbol)
    if bad_symbol is not None:  # every stage would refuse its ticks: refuse the file
        raise MarketFileError(f"file name gives no usable symbol: {bad_symbol[1]}", path)
    source = f"{root.name}/{path.name}" if root != path else f"{path.parent.name}/{path.name}"
    return MarketFileSpec(path=path, symbol=symbol, kind=read_header_kind(path), source=source)


def discover_files(data: Path, symbols: Sequence[str] = ()) -> list[MarketFileSpec]:
    """The market files of one data set: ``data`` is a single file or a data-set folder.

    The symbol comes from the file name (``BTCUSDT.csv.gz``). A folder of data-set folders is
    refused rather than merged: spot and futures prices of one symbol must not share a key.
    """
    if not data.exists():
        raise MarketFileError("no such file or directory", data)
    if data.is_file():
        files = [data]
    else:
        files = sorted(p for p in data.iterdir() if p.is_file() and _symbol_of(p) is not None)
        if not files:
            nested = sorted(p.name for p in data.iterdir() if p.is_dir())
            hint = f"; pick one data set: {', '.join(nested)}" if nested else ""
            raise MarketFileError(f"no .csv/.csv.gz market files{hint}", data)
    specs = [_spec_for(path, data) for path in files]
    seen: dict[str, Path] = {}
    for spec in specs:
        if spec.symbol in seen:
            raise MarketFileError(
                f"two files for {spec.symbol}: {seen[spec.symbol].name}", spec.path
            )
        seen[spec.symbol] = spec.path
    wanted = {s.upper() for s in symbols}
    if wanted:
        specs = [spec for spec in specs if spec.symbol in wanted]
        if not specs:
            available = ", ".join(sorted(_symbol_of(p) or "" for p in files))
            raise MarketFileError(
                f"no file for symbols {', '.join(sorted(wanted))} (available: {available})", data
            )
    return specs


class MarketFileReader:
    """Lazy validated rows of one file inside a time window, in file order.

    Rejected rows are kept when their own time is inside the window; a row without a readable
    time is attributed to the last accepted time of its file (or to the window start before the
    first one). Reading stops at the first accepted row at or past the window end, since the
    files are sorted. ``bytes_read`` (compressed bytes consumed) drives a progress bar.
    """

    def __init__(
        self,
        spec: MarketFileSpec,
        window: TimeWindow = ALL_TIME,
        interval_ms: int = ONE_MINUTE_MS,
    ) -> None:
        self.spec = spec
        self.window = window
        self.interval_ms = interval_ms
        self.bytes_read = 0
        self.size = spec.path.stat().st_size

    def __iter__(self) -> Iterator[ReplayItem]:
        raw, reader = _open_text(self.spec.path)
        with raw, reader:
            try:
                yield from self._rows(raw, reader)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                raise MarketFileError(f"read failed: {exc}", self.spec.path) from exc
        self.bytes_read = self.size

    def _rows(self, raw: BinaryIO, reader: io.BufferedReader) -> Iterator[ReplayItem]:
        _kind_of_header(reader.readline(), self.spec.path)
        cursor = RowCursor()
        for line_no, line in enumerate(reader, start=2):
            self.bytes_read = raw.tell()
            if not line.strip():
                continue
            item = validate_line(line, self.spec, line_no, cursor, self.interval_ms)
            if isinstance(item, TickReceived):
                if self.window.is_past(item.event_time_ms):
                    return
                if self.window.contains(item.event_time_ms):
                    yield item
            elif self._keeps_rejected(item, cursor):
                yield item

    def _keeps_rejected(self, row: RejectedRow, cursor: RowCursor) -> bool:
        if row.event_time_ms is not None:
            return self.window.contains(row.event_time_ms)
        return cursor.last_time_ms is None or self.window.contains(cursor.last_time_ms)


def _positioned(reader: Iterable[ReplayItem]) -> Iterator[tuple[int, str, ReplayItem]]:
    """Tag items with a non-decreasing position time so each input of the merge is sorted.

    A tick's position is its own time; a rejected row sits at the last tick's time before it
    (its own time may be out of order, which is the very reason it was rejected).
    """
    position = -1
    for item in reader:
        if isinstance(item, TickReceived):
            position = item.event_time_ms
        yield (position, item.symbol, item)


def merge_in_event_time(readers: Sequence[Iterable[ReplayItem]]) -> Iterator[ReplayItem]:
    """Merge several files' rows by (event time, symbol), streaming; stable within a file."""
    merged = heapq.merge(*(_positioned(r) for r in readers), key=lambda t: (t[0], t[1]))
    for _position, _symbol, item in merged:
        yield item


def open_data_set(
    data: Path,
    symbols: Sequence[str] = (),
    window: TimeWindow = ALL_TIME,
    interval_ms: int = ONE_MINUTE_MS,
) -> tuple[list[MarketFileReader], Iterator[ReplayItem]]:
    """Readers of a data set's files and their merged rows (the readers report progress)."""
    readers = [MarketFileReader(s, window, interval_ms) for s in discover_files(data, symbols)]
    return readers, merge_in_event_time(readers)
