"""Client-side rate limiting below Binance's caps, fed by the exchange's own counters.

Binance USD-M futures counts request weight per minute (2,400) and orders per 10 seconds (300)
and per minute (1,200), per account/IP, and reports the counts it holds in every response
(``X-MBX-USED-WEIGHT-1M``, ``X-MBX-ORDER-COUNT-10S``, ``X-MBX-ORDER-COUNT-1M``). The limiter keeps
sliding windows of what this process sent and takes the larger of its own count and the
exchange's (other clients of the same key count too), and answers how long to wait before the
next request fits under the configured caps. ``429`` sets a pause of ``Retry-After`` seconds;
``418`` (IP banned) is the gateway's business: it stops.

The clock is injected (seconds, monotonic) so the rules are tested without sleeping.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Caps:
    """What this client allows itself (below Binance's published limits)."""

    orders_10s: int = 240
    orders_1m: int = 1000
    weight_1m: int = 2000


@dataclass(slots=True)
class _Window:
    span_s: float
    cap: int
    sent: deque[tuple[float, int]] = field(default_factory=deque)
    reported: int = 0  # the exchange's count at reported_at
    reported_at: float = -1e18

    def used(self, now: float) -> int:
        while self.sent and self.sent[0][0] <= now - self.span_s:
            self.sent.popleft()
        mine = sum(n for _, n in self.sent)
        theirs = self.reported if now - self.reported_at < self.span_s else 0
        return max(mine, theirs)

    def wait(self, now: float, cost: int) -> float:
        if cost > self.cap:
            return 0.0  # can never fit: let the exchange decide rather than wait forever
        if self.used(now) + cost <= self.cap:
            return 0.0
        if self.sent:  # the oldest of ours leaves the window then
            return max(0.0, self.sent[0][0] + self.span_s - now)
        return max(0.0, self.reported_at + self.span_s - now)


class RateLimiter:
    """How long to wait before a request; what was sent; what the exchange reported."""

    def __init__(self, caps: Caps, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._orders = (_Window(10.0, caps.orders_10s), _Window(60.0, caps.orders_1m))
        self._weight = _Window(60.0, caps.weight_1m)
        self._paused_until = 0.0

    def delay(self, weight: int, order: bool) -> float:
        """Seconds to wait before sending a request of ``weight`` (an order when ``order``)."""
        now = self.clock()
        waits = [self._paused_until - now, self._weight.wait(now, weight)]
        if order:
            waits += [w.wait(now, 1) for w in self._orders]
        return max(0.0, *waits)

    def weight_share(self) -> float:
        """Share of the per-minute weight cap in use (ours or the exchange's count, the larger)."""
        return self._weight.used(self.clock()) / self._weight.cap

    def sent(self, weight: int, order: bool) -> None:
        """A request went out."""
        now = self.clock()
        self._weight.sent.append((now, weight))
        if order:
            for w in self._orders:
                w.sent.append((now, 1))

    def observe(self, headers: Mapping[str, str]) -> None:
        """The exchange's counters from a response's headers (case-insensitive names)."""
        now = self.clock()
        lower = {k.lower(): v for k, v in headers.items()}
        for name, window in (
            ("x-mbx-used-weight-1m", self._weight),
            ("x-mbx-order-count-10s", self._orders[0]),
            ("x-mbx-order-count-1m", self._orders[1]),
        ):
            if name in lower:
                try:
                    window.reported, window.reported_at = int(lower[name]), now
                except ValueError:
                    continue

    def pause(self, seconds: float) -> None:
        """A 429 (or -1003) said to wait ``seconds``: nothing is sent before then."""
        self._paused_until = max(self._paused_until, self.clock() + max(0.0, seconds))


def retry_after_s(headers: Mapping[str, str], default: float) -> float:
    """``Retry-After`` in seconds, or ``default`` when absent or malformed."""
    for k, v in headers.items():
        if k.lower() == "retry-after":
            try:
                return max(0.0, float(v))
            except ValueError:
                return default
    return default
