"""Mean and variance over a sliding window of floats, O(1) per value and bit-reproducible.

Used by :class:`models.features.FeatureState` (streaming workers and training alike), so pure
Python: ``math``-free float arithmetic on a ``deque``, faster than numpy at these sizes.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class RollingMoments:
    """Mean and population variance over the last ``n`` values in O(1) per push.

    Sums are kept relative to an anchor and recomputed exactly (two-pass) every ``n`` pushes, so
    rounding drift and cancellation stay bounded however long the stream runs. The recompute
    schedule is part of the state, so a restored state continues bit-identically.
    """

    __slots__ = ("anchor", "n", "pushes", "s1", "s2", "values")

    def __init__(self, n: int) -> None:
        self.n = n
        self.values: deque[float] = deque(maxlen=n)
        self.anchor = 0.0
        self.s1 = 0.0
        self.s2 = 0.0
        self.pushes = 0

    def push(self, x: float) -> None:
        values = self.values
        if len(values) == self.n:
            old = values[0] - self.anchor
            self.s1 -= old
            self.s2 -= old * old
        values.append(x)
        d = x - self.anchor
        self.s1 += d
        self.s2 += d * d
        self.pushes += 1
        if self.pushes % self.n == 0:
            self._recompute()

    def _recompute(self) -> None:
        values = self.values
        self.anchor = sum(values) / len(values)
        s1 = s2 = 0.0
        for x in values:
            d = x - self.anchor
            s1 += d
            s2 += d * d
        self.s1, self.s2 = s1, s2

    def full(self) -> bool:
        return len(self.values) == self.n

    def mean(self) -> float:
        return self.anchor + self.s1 / len(self.values)

    def var(self) -> float:
        k = len(self.values)
        m = self.s1 / k
        return max(self.s2 / k - m * m, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": list(self.values),
            "anchor": self.anchor,
            "s1": self.s1,
            "s2": self.s2,
            "pushes": self.pushes,
        }

    def load(self, d: dict[str, Any]) -> None:
        self.values = deque((float(x) for x in d["values"]), maxlen=self.n)
        self.anchor = float(d["anchor"])
        self.s1 = float(d["s1"])
        self.s2 = float(d["s2"])
        self.pushes = int(d["pushes"])
