"""Event-time ordered merge of several inputs, released by watermarks (docs/determinism.md).

A stage that merges inputs (risk: decisions + closed trades; strategy: signals + rewards;
execution: orders + ticks) must process them in an order that does not depend on which record
reached the broker first. Each input record gets a *sort key* ``(time, rank, key, seq)``; each
source announces a watermark ``W`` meaning "every record I will still send sorts at ``time >= W``"
(an exclusive bound). A buffered record is released once the lowest watermark of all sources is
above its time, so everything that sorts before it has arrived.

Pure Python, no Faust: the in-process runner needs no such buffer (it calls stages in order),
and this class is unit-tested on its own.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

#: Header carrying an in-band watermark on an otherwise empty Kafka record.
WATERMARK_HEADER = "qt-watermark"
#: Header naming the stage partition that produced a record or watermark (``stage/partition``).
SOURCE_HEADER = "qt-source"
#: Header numbering a source's data records per output topic (1, 2, ...): a record re-sent after
#: a crash repeats its number, so readers drop the copy (:mod:`streams.agents.durable`).
SEQ_HEADER = "qt-seq"
#: Exclusive watermark that ends a bounded replay: every merge downstream drains.
END_OF_STREAM = 2**62
#: A source sends a watermark at most this often in event time (records imply one anyway).
WATERMARK_EVERY_MS = 60_000

T = TypeVar("T")


def header_value(headers: Any, name: str) -> bytes | None:
    """Value of header ``name`` in a Kafka client's header list (None when absent)."""
    for key, value in headers or ():
        if key == name:
            return value if isinstance(value, bytes) else str(value).encode()
    return None


class Redeliveries:
    """The last sequence number handled per (topic, partition, source): drops re-sent copies.

    A source numbers its data records 1, 2, 3... per output topic (``qt-seq``); on any one
    partition they arrive in increasing order, so a number at or below the last one seen is a
    copy. Records without a number (another client's, the replay's) always pass.
    """

    __slots__ = ("last",)

    def __init__(self, last: Mapping[str, int] | None = None) -> None:
        self.last: dict[str, int] = dict(last or {})

    def fresh(self, topic: str, partition: int, source: bytes | None, seq: bytes | None) -> bool:
        """Whether the record with these ``qt-source``/``qt-seq`` headers is new (remembered)."""
        if seq is None:
            return True
        try:
            number = int(seq)
        except ValueError:
            return True  # not ours: the reader judges the record itself
        key = f"{topic}/{partition}:{(source or b'?').decode(errors='replace')}"
        if number <= self.last.get(key, 0):
            return False
        self.last[key] = number
        return True


class OrderingError(ValueError):
    """A source went back in time, or a record arrived behind its source's watermark."""


@dataclass(order=True, frozen=True, slots=True)
class SortKey:
    """Position of a record in the merged order; ties broken by rank, then key, then seq."""

    time: int
    rank: int
    key: str = ""
    seq: int = 0


@dataclass(order=True, slots=True)
class _Entry(Generic[T]):
    sort: SortKey
    item: T = field(compare=False)


class EventTimeMerge(Generic[T]):
    """Buffer of items from named sources, released in :class:`SortKey` order.

    ``sources`` are the inputs whose watermarks gate release (e.g. ``strategy/0..N-1``). An item
    from a source not in that set (an operator command) is buffered and ordered like the others
    but never holds the merge back.
    """

    def __init__(self, sources: Iterable[str]) -> None:
        self._watermarks: dict[str, int] = dict.fromkeys(sources, -(2**62))
        if not self._watermarks:
            raise ValueError("an event-time merge needs at least one watermark source")
        self._heap: list[_Entry[T]] = []

    @property
    def low_watermark(self) -> int:
        """Every item still to come sorts at ``time >= low_watermark``."""
        return min(self._watermarks.values())

    def __len__(self) -> int:
        return len(self._heap)

    def earliest_buffered(self) -> int | None:
        """Sort time of the first buffered item (None when the buffer is empty)."""
        return self._heap[0].sort.time if self._heap else None

    def low_watermark_of(self, sources: Iterable[str]) -> int:
        """The lowest watermark among ``sources`` (END_OF_STREAM when there are none)."""
        return min((self._watermarks[s] for s in sources), default=END_OF_STREAM)

    def advance(self, source: str, watermark: int) -> None:
        """Record that ``source`` will send nothing sorting before ``watermark`` (monotone)."""
        if source in self._watermarks and watermark > self._watermarks[source]:
            self._watermarks[source] = watermark

    def add(self, source: str, sort: SortKey, item: T) -> None:
        """Buffer ``item``; a source's records arrive in time order, so this also advances it."""
        current = self._watermarks.get(source)
        if current is not None and sort.time < current:
            raise OrderingError(
                f"{source} sent a record at {sort.time} behind its watermark {current}"
            )
        heapq.heappush(self._heap, _Entry(sort, item))
        self.advance(source, sort.time)

    def pop_ready(self) -> Iterator[T]:
        """Release, in order, every buffered item that nothing still to come can precede."""
        low = self.low_watermark
        while self._heap and self._heap[0].sort.time < low:
            yield heapq.heappop(self._heap).item

    def drain(self) -> Iterator[T]:
        """Release everything in order (end of a bounded replay)."""
        while self._heap:
            yield heapq.heappop(self._heap).item

    def to_dict(self, encode: Any = None) -> dict[str, Any]:
        """Plain state for a Faust table; ``encode`` turns an item into a storable value."""
        enc = encode or (lambda x: x)
        return {
            "watermarks": dict(self._watermarks),
            "buffer": [
                [e.sort.time, e.sort.rank, e.sort.key, e.sort.seq, enc(e.item)]
                for e in sorted(self._heap)
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], decode: Any = None) -> EventTimeMerge[Any]:
        """Inverse of :meth:`to_dict`."""
        dec = decode or (lambda x: x)
        merge: EventTimeMerge[Any] = cls(data["watermarks"].keys())
        merge._watermarks.update({k: int(v) for k, v in data["watermarks"].items()})
        merge._heap = [
            _Entry(SortKey(int(t), int(r), str(k), int(s)), dec(v))
            for t, r, k, s, v in data["buffer"]
        ]
        heapq.heapify(merge._heap)
        return merge
