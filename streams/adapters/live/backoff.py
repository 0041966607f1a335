"""Unlimited jittered exponential backoff with a cap (pure; the random source is injected).

Attempt ``n`` (0-based) waits ``d/2 + U(0, d/2)`` with ``d = min(cap, base * 2**n)``: "equal
jitter", so a fleet of clients reconnecting after one outage spreads out (no reconnect storm)
yet never retries at once. There is no attempt limit: a market-data edge that gives up is a
silent gap. :meth:`Backoff.reset` starts over once a connection proved stable.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays of consecutive failed attempts."""

    def __init__(
        self, base_s: float, cap_s: float, rand: Callable[[], float] = random.random
    ) -> None:
        if not 0 < base_s <= cap_s:
            raise ValueError(f"backoff needs 0 < base ({base_s}) <= cap ({cap_s})")
        self.base_s = base_s
        self.cap_s = cap_s
        self._rand = rand
        self.attempts = 0

    def ceiling(self, attempt: int) -> float:
        """The un-jittered delay of ``attempt``: ``min(cap, base * 2**attempt)``."""
        # 2**attempt overflows floats past ~1000 attempts; the cap is reached long before.
        return self.cap_s if attempt >= 64 else min(self.cap_s, self.base_s * 2.0**attempt)

    def next_delay(self) -> float:
        """The delay before the next attempt; counts the attempt."""
        ceiling = self.ceiling(self.attempts)
        self.attempts += 1
        return ceiling / 2 + self._rand() * ceiling / 2

    def reset(self) -> None:
        """The last attempt succeeded for long enough: start from ``base`` again."""
        self.attempts = 0
