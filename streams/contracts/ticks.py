"""What makes a market tick acceptable: one rule for files, the replay and every stage.

The Avro contract says a tick *has* the right fields; this module says its values make sense.
Two parts:

* :func:`tick_problem` — a pure function of one record (and its Kafka key): finite positive
  prices, ``low <= open, close <= high``, volume >= 0, a symbol that looks like one and is the
  record key, kind-specific fields, an event time between 2017 and 2100. The file adapter uses
  the same pieces (:func:`bar_problem`, :func:`event_time_problem`, :func:`symbol_problem`) for
  file rows, so a row the replay accepts is a tick every stage accepts.
* :class:`TickHistory` — the verdicts that depend on what came before on the same partition:
  a tick behind the partition's newest accepted tick (out of order), a kline or trade seen
  already (duplicate), or one too far ahead (a bad clock, :data:`DEFAULT_MAX_EVENT_SKEW_MS`).
  Only accepted ticks enter the history, and a partition's ticks reach every reader in the
  same order, so every stage that reads ``market.ticks`` (and a replay of it, and the
  in-process runner) reaches the same verdict on the same record. Watermarks do not count:
  the runner has none, and a verdict must not depend on them.

A rejected tick is a :class:`TickRejected` with a reason code (the dead letter's ``reason``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from streams.contracts.records import TickKind, TickReceived

#: 2017-01-01T00:00Z: no exchange we replay published a 1-minute kline before (Binance opened
#: in July 2017); smaller values are seconds or a zeroed clock, not milliseconds.
MIN_EVENT_TIME_MS: Final = 1_483_228_800_000
#: 2100-01-01T00:00Z: beyond it an event time is microseconds or garbage.
MAX_EVENT_TIME_MS: Final = 4_102_444_800_000
#: How far ahead of its partition's newest accepted tick a tick may be. A rejected tick does
#: not enter the history, so a legitimate gap longer than this loses everything after it on
#: that partition: the bound must exceed any real gap. Exchange-wide halts last hours (the
#: development data's longest gap is 284 minutes of maintenance), and a recorded data set may
#: miss days; a week clears both, while a clock off by weeks, months or years (a wrong date,
#: a wrong year) is caught. Smaller errors (a wrong time zone) look like a gap and cannot be
#: told from one by event time alone.
DEFAULT_MAX_EVENT_SKEW_MS: Final = 7 * 24 * 3_600_000
KLINE_INTERVAL_MS: Final = 60_000
#: The most history bars one tick may carry (a day: ~70 KB of Avro; a warm-up needs 128).
MAX_HISTORY_BARS: Final = 1_440
#: Exchange symbols: upper-case letters and digits, ``_``/``-`` for delivery contracts.
_SYMBOL: Final = re.compile(r"[A-Z0-9][A-Z0-9_-]{0,31}")


class TickReason(StrEnum):
    """Why a tick or a market-file row is refused (the ``reason`` of its dead letter)."""

    UNPARSABLE = "unparsable"  # a file row that is not a row
    NAN = "nan"
    NON_POSITIVE_PRICE = "non_positive_price"
    NEGATIVE_VOLUME = "negative_volume"
    HIGH_BELOW_LOW = "high_below_low"
    OPEN_CLOSE_OUTSIDE_RANGE = "open_close_outside_range"
    MISALIGNED_TIME = "misaligned_time"
    IMPLAUSIBLE_TIME = "implausible_time"
    BAD_SYMBOL = "bad_symbol"
    KEY_MISMATCH = "key_mismatch"
    BAD_KIND_FIELDS = "bad_kind_fields"
    OUT_OF_ORDER_TIME = "out_of_order_time"
    DUPLICATE_TIME = "duplicate_time"
    # Trades may share a millisecond; a repeated or decreasing trade id is the duplicate.
    DUPLICATE_TRADE_ID = "duplicate_trade_id"
    EVENT_TIME_SKEW = "event_time_skew"
    BAD_HISTORY = "bad_history"  # a kline's warm-up history that is no run of closed klines


Problem = tuple[TickReason, str]


class TickRejected(Exception):
    """A tick failed :func:`tick_problem` or its partition's :class:`TickHistory`."""

    def __init__(self, reason: TickReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def bar_problem(o: float, h: float, low: float, c: float, volume: float) -> Problem | None:
    """The first failed bar check: finite, prices > 0, volume >= 0, ``low <= o, c <= high``."""
    if not all(math.isfinite(x) for x in (o, h, low, c, volume)):
        return TickReason.NAN, f"values must be finite (o={o} h={h} l={low} c={c} v={volume})"
    if min(o, h, low, c) <= 0:
        return TickReason.NON_POSITIVE_PRICE, f"prices must be > 0 (o={o} h={h} l={low} c={c})"
    if volume < 0:
        return TickReason.NEGATIVE_VOLUME, f"volume={volume} < 0"
    if h < low:
        return TickReason.HIGH_BELOW_LOW, f"high={h} < low={low}"
    if not (low <= o <= h and low <= c <= h):
        detail = f"open={o}/close={c} outside [low={low}, high={h}]"
        return TickReason.OPEN_CLOSE_OUTSIDE_RANGE, detail
    return None


def event_time_problem(time_ms: int) -> Problem | None:
    """An event time outside [2017, 2100): seconds, microseconds or a broken clock."""
    if not MIN_EVENT_TIME_MS <= time_ms < MAX_EVENT_TIME_MS:
        return TickReason.IMPLAUSIBLE_TIME, (
            f"event_time_ms={time_ms} is outside [{MIN_EVENT_TIME_MS}, {MAX_EVENT_TIME_MS}) "
            "(2017 to 2100 in epoch milliseconds)"
        )
    return None


def symbol_problem(symbol: str) -> Problem | None:
    """A symbol that is not an exchange symbol (``BTCUSDT``, ``BTCUSD_250627``)."""
    if _SYMBOL.fullmatch(symbol) is None:
        return TickReason.BAD_SYMBOL, f"symbol {symbol[:40]!r} is not an upper-case exchange symbol"
    return None


def _kind_problem(t: TickReceived) -> Problem | None:
    if t.kind is TickKind.KLINE_1M:
        if t.interval_ms != KLINE_INTERVAL_MS or t.trade_id is not None:
            detail = f"a KLINE_1M has interval_ms={KLINE_INTERVAL_MS} and no trade_id"
            return TickReason.BAD_KIND_FIELDS, detail
        if t.event_time_ms % KLINE_INTERVAL_MS:
            detail = f"open_time_ms={t.event_time_ms} not a multiple of {KLINE_INTERVAL_MS}"
            return TickReason.MISALIGNED_TIME, detail
        return None
    if t.interval_ms != 0 or t.trade_id is None or not (t.open == t.high == t.low == t.close):
        detail = "a TRADE has interval_ms=0, a trade_id and open = high = low = close"
        return TickReason.BAD_KIND_FIELDS, detail
    return None


def tick_problem(tick: TickReceived, key: bytes | None) -> Problem | None:
    """Why ``tick`` (consumed with Kafka ``key``) is not a tick any stage should act on."""
    return (
        symbol_problem(tick.symbol)
        or _key_problem(tick.symbol, key)
        or event_time_problem(tick.event_time_ms)
        or _kind_problem(tick)
        or bar_problem(tick.open, tick.high, tick.low, tick.close, tick.volume)
        or history_problem(tick)
    )


def history_problem(tick: TickReceived) -> Problem | None:
    """Why a tick's ``history`` is not a warm-up: only a kline carries one, at most
    :data:`MAX_HISTORY_BARS` bars, aligned, strictly increasing, all before the tick, each a
    valid bar. One bad bar refuses the record: a producer that sent it is broken."""
    bars = tick.history
    if not bars:
        return None
    if tick.kind is not TickKind.KLINE_1M:
        return TickReason.BAD_HISTORY, f"a {tick.kind} carries {len(bars)} history bars"
    if len(bars) > MAX_HISTORY_BARS:
        return TickReason.BAD_HISTORY, f"{len(bars)} history bars, more than {MAX_HISTORY_BARS}"
    previous = None
    for i, b in enumerate(bars):
        t = b.open_time_ms
        where = f"history bar {i} at {t}"
        if t % KLINE_INTERVAL_MS or (previous is not None and t <= previous):
            return TickReason.BAD_HISTORY, f"{where}: not aligned or not after the bar before"
        if t >= tick.event_time_ms or event_time_problem(t) is not None:
            return TickReason.BAD_HISTORY, f"{where}: not before the tick at {tick.event_time_ms}"
        problem = bar_problem(b.open, b.high, b.low, b.close, b.volume)
        if problem is not None:
            return TickReason.BAD_HISTORY, f"{where}: {problem[0].value}: {problem[1]}"
        previous = t
    return None


def _key_problem(symbol: str, key: bytes | None) -> Problem | None:
    # The key places the tick on its symbol's partition; any other key breaks per-symbol order.
    if key != symbol.encode():
        shown = key[:40] if key is not None else None
        return TickReason.KEY_MISMATCH, f"record key {shown!r} is not the symbol {symbol!r}"
    return None


@dataclass(slots=True)
class PartitionHistory:
    """What one partition's accepted ticks established (bounded by the symbols on it)."""

    newest_ms: int | None = None
    last_kline_ms: dict[str, int] = field(default_factory=dict)
    last_trade_id: dict[str, int] = field(default_factory=dict)

    def problem(self, tick: TickReceived, max_skew_ms: int) -> Problem | None:
        """Why ``tick`` does not follow this history: late, duplicate, or too far ahead."""
        newest, t = self.newest_ms, tick.event_time_ms
        if newest is None:
            return None
        if t < newest:
            return TickReason.OUT_OF_ORDER_TIME, (
                f"event_time_ms={t} is behind the partition's newest tick at {newest}"
            )
        if t - newest > max_skew_ms:
            return TickReason.EVENT_TIME_SKEW, (
                f"event_time_ms={t} is {t - newest} ms ahead of the partition's newest tick at "
                f"{newest}, more than QT_MAX_EVENT_SKEW_MS={max_skew_ms}"
            )
        if tick.kind is TickKind.KLINE_1M:
            if self.last_kline_ms.get(tick.symbol, -1) >= t:
                return TickReason.DUPLICATE_TIME, f"{tick.symbol} kline at {t} seen already"
        elif tick.trade_id is not None:
            last = self.last_trade_id.get(tick.symbol, -1)
            if last >= tick.trade_id:
                detail = f"{tick.symbol} trade_id={tick.trade_id} not after {last}"
                return TickReason.DUPLICATE_TRADE_ID, detail
        return None

    def accept(self, tick: TickReceived) -> None:
        """``tick`` passed: it is now part of the history."""
        if self.newest_ms is None or tick.event_time_ms > self.newest_ms:
            self.newest_ms = tick.event_time_ms
        if tick.kind is TickKind.KLINE_1M:
            self.last_kline_ms[tick.symbol] = tick.event_time_ms
        elif tick.trade_id is not None:
            self.last_trade_id[tick.symbol] = tick.trade_id


class TickHistory:
    """The accepted history of every ``market.ticks`` partition one reader has seen.

    :meth:`admit` is the whole verdict: the record rule, then the partition's history; an
    accepted tick joins the history, a rejected one changes nothing. State is plain data
    (:meth:`to_dict`/:meth:`from_dict`) so it can live in a table next to the stage's own.
    """

    def __init__(self, max_skew_ms: int = DEFAULT_MAX_EVENT_SKEW_MS) -> None:
        if max_skew_ms <= 0:
            raise ValueError(f"max_skew_ms must be > 0, got {max_skew_ms}")
        self.max_skew_ms = max_skew_ms
        self.partitions: dict[int, PartitionHistory] = {}

    def admit(self, partition: int, tick: TickReceived, key: bytes | None) -> None:
        """Accept ``tick`` into ``partition``'s history or raise :class:`TickRejected`."""
        history = self.partitions.get(partition)
        problem = tick_problem(tick, key) or (
            history.problem(tick, self.max_skew_ms) if history is not None else None
        )
        if problem is not None:
            raise TickRejected(*problem)
        if history is None:
            history = self.partitions[partition] = PartitionHistory()
        history.accept(tick)

    def to_dict(self) -> dict[str, Any]:
        """Plain state for a Faust table."""
        return {
            "max_skew_ms": self.max_skew_ms,
            "partitions": {
                str(p): {
                    "newest_ms": h.newest_ms,
                    "last_kline_ms": dict(h.last_kline_ms),
                    "last_trade_id": dict(h.last_trade_id),
                }
                for p, h in self.partitions.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TickHistory:
        """Inverse of :meth:`to_dict`."""
        history = cls(int(data["max_skew_ms"]))
        for p, h in data["partitions"].items():
            history.partitions[int(p)] = PartitionHistory(
                None if h["newest_ms"] is None else int(h["newest_ms"]),
                {s: int(t) for s, t in h["last_kline_ms"].items()},
                {s: int(i) for s, i in h["last_trade_id"].items()},
            )
        return history
