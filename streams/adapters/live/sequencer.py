"""Klines from several connections and REST merged into one ordered, gap-free, duplicate-free run.

Pure, no I/O. For every symbol of the universe the sequencer knows the next open time it owes
``market.ticks`` (``next``); klines arrive in any order, twice, or not at all, from the stream
or from REST, and it

* drops any kline at or before what was released already, or seen already (dedupe by
  (symbol, open time): counted as ``duplicates``);
* keeps the exchange clock: the newest event time any message carried (monotone);
* says which ranges to fetch over REST (:meth:`KlineSequencer.gaps`): from a symbol's first
  unsettled minute once that minute closed more than ``grace_ms`` ago on the exchange clock,
  up to its next kline in hand or to the exchange's current (open) minute;
* learns from a REST answer which minutes the exchange really has no kline for
  (:meth:`confirm`): counted as ``missing``, never invented;
* releases (:meth:`release`) every kline below the *frontier*, the first minute some symbol is
  not settled at, in (open time, symbol) order: the order of the file replay's merge, so the
  same klines make the same ``market.ticks``.

A symbol without a start (nothing in ``market.ticks``, no ``since``) starts at the exchange's
current minute minus ``warmup_ms`` once the first message shows the clock: the start is then
backfilled like any gap. The universe can change while it runs (:meth:`add_symbol`,
:meth:`remove_symbol`): a joining symbol starts with the others, at the next minute they owe.

A symbol that joins a stream already under way (a universe joiner, or a symbol new to a topic
that has ticks) cannot have ticks behind its partition's newest, so its ``warmup_ms`` of
history is *owed* instead (:meth:`history_requests`): once REST answered (:meth:`add_history`)
the history rides on the symbol's first released kline (:meth:`take_history`,
``TickReceived.history``) and the features stage folds it in before that kline. Until then
the frontier stays at the symbol's first minute: nothing is released past a kline that has not
got its history yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from streams.adapters.live.klines import Kline
from streams.contracts.ticks import KLINE_INTERVAL_MS


@dataclass(frozen=True, slots=True)
class BackfillRequest:
    """Fetch ``symbol``'s klines with open time in ``[start_ms, end_ms)`` (all closed)."""

    symbol: str
    start_ms: int
    end_ms: int


@dataclass
class SequencerCounts:
    """What the sequencer saw: klines accepted, dropped as duplicates, confirmed missing."""

    accepted: int = 0
    duplicates: int = 0
    released: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    #: history klines fetched for joiners' warm-ups, per symbol (summed over its joins)
    history: dict[str, int] = field(default_factory=dict)

    @property
    def missing_total(self) -> int:
        """Minutes the exchange has no kline for, all symbols."""
        return sum(self.missing.values())


def floor_minute(time_ms: int, interval_ms: int = KLINE_INTERVAL_MS) -> int:
    """Open time of the interval ``time_ms`` falls in."""
    return time_ms - time_ms % interval_ms


class KlineSequencer:
    """The per-symbol state described in the module doc."""

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        starts: Mapping[str, int] | None = None,
        warmup_ms: int = 0,
        grace_ms: int = 10_000,
        until_ms: int | None = None,
        interval_ms: int = KLINE_INTERVAL_MS,
    ) -> None:
        self.symbols = sorted(dict.fromkeys(symbols))
        if not self.symbols:
            raise ValueError("the live universe is empty: no symbol to subscribe to")
        self.interval_ms = interval_ms
        self.warmup_ms = warmup_ms
        self.grace_ms = grace_ms
        self.until_ms = until_ms
        self.clock_ms: int | None = None
        known = dict(starts or {})
        # A symbol new to a topic that has ticks starts with the others: an earlier start
        # would put ticks behind their partition's newest (out of order for every stage).
        joined_at = max(known.values()) if known else None
        self._next: dict[str, int | None] = {s: known.get(s, joined_at) for s in self.symbols}
        self._pending: dict[str, dict[int, Kline]] = {s: {} for s in self.symbols}
        self._missing: dict[str, set[int]] = {s: set() for s in self.symbols}
        self._history_owed: dict[str, BackfillRequest] = {}
        self._history: dict[str, tuple[Kline, ...]] = {}
        if joined_at is not None:
            for symbol in self.symbols:
                if symbol not in known:
                    self._owe_history(symbol, joined_at)
        self.counts = SequencerCounts()

    # ------------------------------------------------------------------------- universe

    def add_symbol(self, symbol: str) -> None:
        """``symbol`` joins: owed from the next minute the others owe (never behind them)."""
        if symbol in self._next:
            return
        started = [t for t in self._next.values() if t is not None]
        self.symbols = sorted([*self.symbols, symbol])
        self._next[symbol] = max(started) if started else None
        self._pending[symbol] = {}
        self._missing[symbol] = set()
        if started:
            self._owe_history(symbol, max(started))
        elif self.clock_ms is not None:
            self.observe_clock(self.clock_ms)

    def remove_symbol(self, symbol: str) -> None:
        """``symbol`` is no longer ingested: what it had in hand is dropped."""
        if symbol not in self._next or len(self.symbols) == 1:
            return  # the last symbol stays: an empty universe has no frontier
        self.symbols.remove(symbol)
        del self._next[symbol], self._pending[symbol], self._missing[symbol]
        self._history_owed.pop(symbol, None)
        self._history.pop(symbol, None)

    # --------------------------------------------------------------------------- warm-up

    def _owe_history(self, symbol: str, first_ms: int) -> None:
        if self.warmup_ms > 0:
            self._history_owed[symbol] = BackfillRequest(
                symbol, first_ms - self.warmup_ms, first_ms
            )

    def history_requests(self) -> list[BackfillRequest]:
        """The warm-up histories owed and not answered yet (one per joiner)."""
        return list(self._history_owed.values())

    def add_history(self, request: BackfillRequest, klines: Iterable[Kline]) -> int:
        """REST answered a warm-up ``request``: its closed klines, oldest first, are the history
        of the symbol's first released kline (a minute the exchange has not is left out).
        Returns how many klines it holds (0 for a request no longer owed)."""
        if self._history_owed.get(request.symbol) != request:
            return 0  # the symbol left (and maybe joined again) while it was under way
        del self._history_owed[request.symbol]
        bars = {k.open_time_ms: k for k in klines if k.symbol == request.symbol and k.closed
                and request.start_ms <= k.open_time_ms < request.end_ms}  # fmt: skip
        self._history[request.symbol] = tuple(bars[t] for t in sorted(bars))
        counts = self.counts.history
        counts[request.symbol] = counts.get(request.symbol, 0) + len(bars)
        return len(bars)

    def take_history(self, symbol: str) -> tuple[Kline, ...]:
        """The warm-up to send with ``symbol``'s kline being released (once; else empty)."""
        return self._history.pop(symbol, ())

    # ----------------------------------------------------------------------------- input

    def observe_clock(self, exchange_ms: int) -> None:
        """A message carried the exchange's time ``exchange_ms``; starts unstarted symbols."""
        if self.clock_ms is None or exchange_ms > self.clock_ms:
            self.clock_ms = exchange_ms
        start = floor_minute(self.clock_ms, self.interval_ms) - self.warmup_ms
        for symbol, nxt in self._next.items():
            if nxt is None:
                self._next[symbol] = start

    def add(self, kline: Kline) -> bool:
        """Take a closed kline; ``False`` when it is a duplicate, late or beyond the end."""
        if not kline.closed or kline.symbol not in self._next:
            return False
        t, nxt = kline.open_time_ms, self._next[kline.symbol]
        if self.until_ms is not None and t >= self.until_ms:
            return False
        pending = self._pending[kline.symbol]
        if (nxt is not None and t < nxt) or t in pending:
            self.counts.duplicates += 1
            return False
        self._missing[kline.symbol].discard(t)
        pending[t] = kline
        self.counts.accepted += 1
        return True

    def confirm(self, request: BackfillRequest, klines: Iterable[Kline]) -> int:
        """REST answered ``request`` with ``klines``; every other minute of it is missing.

        Returns how many klines were new (not seen on the stream or released already).
        """
        if request.symbol not in self._next:
            return 0  # it left the universe while the request was under way
        new = sum(self.add(k) for k in klines if k.symbol == request.symbol)
        nxt = self._next[request.symbol]
        pending, missing = self._pending[request.symbol], self._missing[request.symbol]
        for t in range(request.start_ms, request.end_ms, self.interval_ms):
            if (nxt is None or t >= nxt) and t not in pending:
                missing.add(t)
        return new

    # ---------------------------------------------------------------------------- output

    def settled_until(self, symbol: str) -> int | None:
        """First open time of ``symbol`` neither in hand nor confirmed missing (None: unstarted)."""
        t = self._next[symbol]
        if t is None:
            return None
        pending, missing = self._pending[symbol], self._missing[symbol]
        while t in pending or t in missing:
            t += self.interval_ms
        return t if self.until_ms is None else min(t, self.until_ms)

    def frontier(self, before_ms: int | None = None) -> int | None:
        """Every symbol is complete below this open time (None until every symbol started),
        capped at ``before_ms`` (a universe refresh at that time has not been written yet)."""
        settled = [
            self._next[s] if s in self._history_owed else self.settled_until(s)
            for s in self.symbols
        ]
        if any(t is None for t in settled):
            return None
        low = min(t for t in settled if t is not None)
        return low if before_ms is None else min(low, before_ms)

    @property
    def done(self) -> bool:
        """Everything before ``until_ms`` was released (never with no end)."""
        nexts = self._next.values()
        return self.until_ms is not None and all(
            t is not None and t >= self.until_ms for t in nexts
        )

    def release(self, before_ms: int | None = None) -> list[Kline]:
        """Every kline below the frontier (and ``before_ms``), in (open time, symbol) order;
        missing ones counted."""
        frontier = self.frontier(before_ms)
        if frontier is None:
            return []
        out: list[Kline] = []
        for symbol in self.symbols:
            nxt = self._next[symbol]
            assert nxt is not None  # frontier() is None otherwise
            pending, missing = self._pending[symbol], self._missing[symbol]
            for t in range(nxt, frontier, self.interval_ms):
                kline = pending.pop(t, None)
                if kline is not None:
                    out.append(kline)
                else:
                    missing.discard(t)
                    self.counts.missing[symbol] = self.counts.missing.get(symbol, 0) + 1
            self._next[symbol] = max(nxt, frontier)
        out.sort(key=lambda k: (k.open_time_ms, k.symbol))
        self.counts.released += len(out)
        return out

    def gaps(self) -> list[BackfillRequest]:
        """Ranges to fetch over REST now (see the module doc); one per symbol at most."""
        if self.clock_ms is None:
            return []
        current = floor_minute(self.clock_ms, self.interval_ms)  # open, not closed yet
        requests = []
        for symbol in self.symbols:
            start = self.settled_until(symbol)
            if start is None or (self.until_ms is not None and start >= self.until_ms):
                continue
            if self.clock_ms < start + self.interval_ms + self.grace_ms:
                continue  # not overdue: its kline may still be on the way
            later = [t for t in self._pending[symbol] if t > start]
            end = min(later) if later else current
            if self.until_ms is not None:
                end = min(end, self.until_ms)
            if end > start:
                requests.append(BackfillRequest(symbol, start, end))
        return requests

    def buffered(self) -> int:
        """Klines held back (waiting for a slower symbol or a backfill)."""
        return sum(len(p) for p in self._pending.values())
