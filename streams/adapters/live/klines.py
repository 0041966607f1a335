"""Binance's kline wire format as typed values, and klines as contract ticks (pure).

Two shapes carry the same kline:

* a combined-stream websocket message ``{"stream": "btcusdt@kline_1m", "data": {"e": "kline",
  "E": <event ms>, "s": "BTCUSDT", "k": {"t": <open ms>, "T": <close ms>, "i": "1m", "o": "..",
  "h": "..", "l": "..", "c": "..", "v": "..", "x": <closed?>, ...}}}``;
* a REST row ``[open ms, "o", "h", "l", "c", "v", close ms, "q", trades, "V", "Q", "0"]``.

Prices arrive as decimal strings and are read with ``float``, as the file replay reads its
CSV text, so the same kline gives the same tick bit for bit. Anything else raises
:class:`KlineMessageError` with a reason code of :class:`~streams.contracts.ticks.TickReason`
(the ingest dead-letters it and goes on).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from streams.contracts.records import HistoryBar, TickKind, TickReceived
from streams.contracts.ticks import (
    KLINE_INTERVAL_MS,
    TickReason,
    bar_problem,
    event_time_problem,
    symbol_problem,
)

#: ``source`` of a live tick: this prefix and the stream name (``binance-ws:btcusdt@kline_1m``).
#: A backfilled kline carries its stream's name too: a tick is the same record however it
#: reached us, so a run with reconnects gives the same ``market.ticks`` as one without.
SOURCE_PREFIX: Final = "binance-ws:"


class KlineMessageError(ValueError):
    """A message or REST row that is not a usable 1-minute kline."""

    def __init__(self, reason: TickReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Kline:
    """One 1-minute kline of one symbol (``closed`` False for an update of the open minute)."""

    symbol: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    closed: bool = True


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """A decoded kline message: its stream, the exchange's event time and the kline."""

    stream: str
    event_time_ms: int
    kline: Kline


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise KlineMessageError(TickReason.UNPARSABLE, f"{name}={value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise KlineMessageError(
            TickReason.UNPARSABLE, f"{name}={value!r} is not a number"
        ) from None
    if not math.isfinite(number):
        raise KlineMessageError(TickReason.NAN, f"{name}={value!r} is not finite")
    return number


def _millis(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise KlineMessageError(TickReason.UNPARSABLE, f"{name}={value!r} is not integer ms")
    return value


def checked_kline(kline: Kline) -> Kline:
    """``kline`` if it is a tick every stage accepts; else :class:`KlineMessageError`."""
    t = kline.open_time_ms
    problem = (
        symbol_problem(kline.symbol)
        or event_time_problem(t)
        or bar_problem(kline.open, kline.high, kline.low, kline.close, kline.volume)
    )
    if problem is None and t % KLINE_INTERVAL_MS:
        problem = TickReason.MISALIGNED_TIME, f"open time {t} not a multiple of 60000"
    if problem is not None:
        raise KlineMessageError(*problem)
    return kline


def parse_stream_message(text: str | bytes) -> StreamEvent | None:
    """A combined-stream kline message; ``None`` for a control answer (``{"result": ...}``)."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise KlineMessageError(TickReason.UNPARSABLE, "message is not JSON") from None
    if not isinstance(message, dict):
        raise KlineMessageError(TickReason.UNPARSABLE, "message is not a JSON object")
    if "result" in message or "id" in message:
        return None  # an answer to a (un)subscribe request
    stream, data = message.get("stream"), message.get("data")
    if not isinstance(stream, str) or not isinstance(data, dict):
        raise KlineMessageError(TickReason.UNPARSABLE, "no 'stream'/'data' (not a combined stream)")
    k = data.get("k")
    if data.get("e") != "kline" or not isinstance(k, dict):
        raise KlineMessageError(TickReason.UNPARSABLE, f"{stream}: not a kline event")
    if k.get("i") != "1m":
        raise KlineMessageError(TickReason.BAD_KIND_FIELDS, f"{stream}: interval {k.get('i')!r}")
    symbol = k.get("s", data.get("s"))
    if not isinstance(symbol, str):
        raise KlineMessageError(TickReason.BAD_SYMBOL, f"{stream}: no symbol")
    kline = Kline(
        symbol=symbol, open_time_ms=_millis(k.get("t"), "t"), open=_number(k.get("o"), "o"),
        high=_number(k.get("h"), "h"), low=_number(k.get("l"), "l"),
        close=_number(k.get("c"), "c"), volume=_number(k.get("v"), "v"), closed=k.get("x") is True,
    )  # fmt: skip
    return StreamEvent(stream, _millis(data.get("E"), "E"), checked_kline(kline))


def parse_rest_row(symbol: str, row: Any) -> Kline:
    """One row of ``GET /fapi/v1/klines`` (or ``/api/v3/klines``) for ``symbol``."""
    if not isinstance(row, list | tuple) or len(row) < 6:
        raise KlineMessageError(TickReason.UNPARSABLE, f"{symbol}: REST row {row!r:.80} too short")
    kline = Kline(
        symbol=symbol, open_time_ms=_millis(row[0], "open time"), open=_number(row[1], "open"),
        high=_number(row[2], "high"), low=_number(row[3], "low"), close=_number(row[4], "close"),
        volume=_number(row[5], "volume"),
    )  # fmt: skip
    return checked_kline(kline)


def to_tick(kline: Kline, stream: str, history: Sequence[Kline] = ()) -> TickReceived:
    """The contract tick of a closed kline (the same record the file replay makes of its row),
    with the warm-up ``history`` of a symbol that joined a running stream."""
    return TickReceived(
        symbol=kline.symbol, event_time_ms=kline.open_time_ms, kind=TickKind.KLINE_1M,
        open=kline.open, high=kline.high, low=kline.low, close=kline.close, volume=kline.volume,
        interval_ms=KLINE_INTERVAL_MS, source=SOURCE_PREFIX + stream,
        history=tuple(HistoryBar(open_time_ms=h.open_time_ms, open=h.open, high=h.high,
                                 low=h.low, close=h.close, volume=h.volume) for h in history),
    )  # fmt: skip
