"""One line of a market file: a contract ``TickReceived``, or a ``RejectedRow`` with its reason.

Pure, no I/O. The two file kinds (format of ``../shared/data/binance``):

* kline CSV, header ``open_time_ms,open,high,low,close,volume`` (one row per minute);
* raw trade CSV, header ``trade_id,price,qty,trade_time_ms,event_time_ms,...``; a trade
  becomes a tick with ``open = high = low = close = price``, ``volume = qty`` and the exchange
  *trade* time as event time (the recorder's receive clock lags, see the data README).

A valid line is the ``TickReceived`` record the topology consumes (source
``replay-file:<data set>/<file>``); a bad one a :class:`RejectedRow` carrying the reason, the
file and the line, which :func:`dead_letter` turns into the ``DeadLettered`` record, so a
caller can dead-letter bad rows and go on. File discovery, reading and the event-time merge
are in :mod:`streams.adapters.market_files`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from streams.contracts.deadletters import bounded_payload
from streams.contracts.records import DeadLettered, TickKind, TickReceived
from streams.contracts.ticks import TickReason, bar_problem, event_time_problem

if TYPE_CHECKING:
    from streams.adapters.market_files import MarketFileSpec

KLINE_HEADER: Final = ("open_time_ms", "open", "high", "low", "close", "volume")
TRADE_HEADER_PREFIX: Final = (
    "trade_id", "price", "qty", "trade_time_ms", "event_time_ms", "is_buyer_maker",
)  # fmt: skip
#: ``source`` of a replayed tick: this prefix and the file's ``<data set>/<file name>``.
TICK_SOURCE_PREFIX: Final = "replay-file:"
#: ``stage`` of a rejected row's dead letter.
DEAD_LETTER_STAGE: Final = "replay"
_BOOLEANS: Final = {"true": True, "false": False}


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A data line that failed validation; ``event_time_ms`` is ``None`` when unreadable."""

    reason_code: TickReason
    detail: str
    file: str
    line_no: int
    raw_line: bytes
    symbol: str
    event_time_ms: int | None


#: What one data line of a market file becomes.
ReplayItem = TickReceived | RejectedRow


def dead_letter(row: RejectedRow) -> DeadLettered:
    """The ``DeadLettered`` record of a rejected row (schemas/deadletter.avsc).

    The id is deterministic (stage, file, line) so a second replay of the same file yields the
    same dead letters and a sink can deduplicate them.
    """
    return DeadLettered(
        dead_letter_id=f"{DEAD_LETTER_STAGE}:{row.file}:{row.line_no}",
        reason=row.reason_code.value,
        error_type="RejectedRow",
        stage=DEAD_LETTER_STAGE,
        symbol=row.symbol,
        event_time_ms=row.event_time_ms,
        source_file=row.file,
        source_line=row.line_no,
        # A line can be megabytes (a file without newlines): cut, with its length and sha256.
        **bounded_payload(row.raw_line, None, row.detail),
    )


class _RowError(Exception):
    """Internal: a row failed one check; carries the reason and, when known, its time."""

    def __init__(self, reason: TickReason, detail: str, time_ms: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.time_ms = time_ms


def _parse_fields(line: bytes, count: int) -> list[str]:
    fields = line.decode("ascii").strip().split(",")
    if len(fields) < count:
        raise _RowError(TickReason.UNPARSABLE, f"expected {count} columns, got {len(fields)}")
    return fields


def _to_int(text: str, column: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _RowError(TickReason.UNPARSABLE, f"{column}={text!r} is not an integer") from None


def _to_floats(texts: Sequence[str], columns: Sequence[str], time_ms: int) -> list[float]:
    values: list[float] = []
    for text, column in zip(texts, columns, strict=True):
        try:
            value = float(text)
        except ValueError:
            detail = f"{column}={text!r} is not a number"
            raise _RowError(TickReason.UNPARSABLE, detail, time_ms) from None
        if not math.isfinite(value):
            raise _RowError(TickReason.NAN, f"{column}={text!r} is not finite", time_ms)
        values.append(value)
    return values


def check_prices(o: float, h: float, low: float, c: float, volume: float, time_ms: int) -> None:
    """Raise the first failed bar check (the rule every stage applies to ticks, one home)."""
    problem = bar_problem(o, h, low, c, volume)
    if problem is not None:
        raise _RowError(problem[0], problem[1], time_ms)


def check_time(time_ms: int) -> None:
    """Raise when the event time is implausible on its own (before 2017, after 2100)."""
    problem = event_time_problem(time_ms)
    if problem is not None:
        raise _RowError(problem[0], problem[1], time_ms)


@dataclass(slots=True)
class RowCursor:
    """Per-file ordering state: the last *accepted* time and trade id."""

    last_time_ms: int | None = None
    last_trade_id: int | None = None


def parse_kline(
    line: bytes, spec: MarketFileSpec, cursor: RowCursor, interval_ms: int
) -> TickReceived:
    """One kline row as a tick; raises ``_RowError`` and leaves ``cursor`` untouched on failure."""
    fields = _parse_fields(line, len(KLINE_HEADER))
    time_ms = _to_int(fields[0], "open_time_ms")
    o, h, low, c, volume = _to_floats(fields[1:6], KLINE_HEADER[1:], time_ms)
    check_prices(o, h, low, c, volume, time_ms)
    check_time(time_ms)
    if time_ms % interval_ms:
        detail = f"open_time_ms={time_ms} not a multiple of {interval_ms}"
        raise _RowError(TickReason.MISALIGNED_TIME, detail, time_ms)
    last = cursor.last_time_ms
    if last is not None and time_ms == last:
        raise _RowError(TickReason.DUPLICATE_TIME, f"open_time_ms={time_ms} repeated", time_ms)
    if last is not None and time_ms < last:
        detail = f"open_time_ms={time_ms} before previous {last}"
        raise _RowError(TickReason.OUT_OF_ORDER_TIME, detail, time_ms)
    cursor.last_time_ms = time_ms
    return TickReceived(
        symbol=spec.symbol, event_time_ms=time_ms, kind=TickKind.KLINE_1M, open=o, high=h,
        low=low, close=c, volume=volume, interval_ms=interval_ms,
        source=TICK_SOURCE_PREFIX + spec.source,
    )  # fmt: skip


def parse_trade(line: bytes, spec: MarketFileSpec, cursor: RowCursor) -> TickReceived:
    """One raw trade as a tick (o=h=l=c=price, volume=qty, event time = trade time)."""
    fields = _parse_fields(line, len(TRADE_HEADER_PREFIX))
    trade_id = _to_int(fields[0], "trade_id")
    time_ms = _to_int(fields[3], "trade_time_ms")
    price, qty = _to_floats(fields[1:3], TRADE_HEADER_PREFIX[1:3], time_ms)
    is_buyer_maker = _BOOLEANS.get(fields[5].strip().lower())
    if is_buyer_maker is None:
        detail = f"is_buyer_maker={fields[5]!r} is not true/false"
        raise _RowError(TickReason.UNPARSABLE, detail, time_ms)
    check_prices(price, price, price, price, qty, time_ms)
    check_time(time_ms)
    if cursor.last_trade_id is not None and trade_id <= cursor.last_trade_id:
        detail = f"trade_id={trade_id} not after previous {cursor.last_trade_id}"
        raise _RowError(TickReason.DUPLICATE_TRADE_ID, detail, time_ms)
    if cursor.last_time_ms is not None and time_ms < cursor.last_time_ms:
        detail = f"trade_time_ms={time_ms} before previous {cursor.last_time_ms}"
        raise _RowError(TickReason.OUT_OF_ORDER_TIME, detail, time_ms)
    cursor.last_time_ms, cursor.last_trade_id = time_ms, trade_id
    return TickReceived(
        symbol=spec.symbol, event_time_ms=time_ms, kind=TickKind.TRADE, open=price, high=price,
        low=price, close=price, volume=qty, interval_ms=0,
        source=TICK_SOURCE_PREFIX + spec.source, trade_id=trade_id,
        is_buyer_maker=is_buyer_maker,
    )  # fmt: skip


def validate_line(
    line: bytes, spec: MarketFileSpec, line_no: int, cursor: RowCursor, interval_ms: int
) -> ReplayItem:
    """A data line as a tick, or the reason it is rejected (never raises for bad content)."""
    try:
        if spec.kind is TickKind.KLINE_1M:
            return parse_kline(line, spec, cursor, interval_ms)
        return parse_trade(line, spec, cursor)
    except UnicodeDecodeError:
        error = _RowError(TickReason.UNPARSABLE, "line is not ASCII text")
    except _RowError as exc:
        error = exc
    return RejectedRow(
        reason_code=error.reason,
        detail=error.detail,
        file=spec.source,
        line_no=line_no,
        raw_line=line.rstrip(b"\r\n"),
        symbol=spec.symbol,
        event_time_ms=error.time_ms,
    )
