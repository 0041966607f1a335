"""Interleave the partitions of a recorded topic back into one event-time ordered stream.

A topic replay reads every partition at once, and a consumer delivers partitions at their own
pace, so one partition can run hours of event time ahead of another. New in-band watermarks
(:mod:`.watermarks`) are only true if records are written in event-time order across
partitions, as the original ingest wrote them: :class:`PartitionInterleave` buffers each
partition's records and releases the earliest head once every open partition has one (a k-way
merge of per-partition ordered streams).

A partition's own order is never changed. A record whose timestamp is earlier than one before
it on its partition (a foreign producer's late record) keeps its place and is released at its
predecessor's time, so the copy of every partition is the source's sequence, and the topology
judges that record exactly as it judged it the first time.

Pure Python, no Kafka: the topic replay feeds it and pauses partitions it buffers too much of.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Released(Generic[T]):
    """One record let out: its partition, the event time it is released at, the record."""

    partition: int
    time_ms: int
    item: T
    late: bool = False  # its own timestamp was earlier than its predecessor's


class PartitionInterleave(Generic[T]):
    """K-way merge by ``(time, partition, arrival)`` of partitions that are each time-ordered."""

    def __init__(self, partitions: Iterable[int]) -> None:
        self._buffers: dict[int, deque[Released[T]]] = {p: deque() for p in partitions}
        self._open = set(self._buffers)
        self._latest: dict[int, int] = {}  # newest release time pushed per partition

    def push(self, partition: int, timestamp_ms: int, item: T) -> None:
        """Buffer the next record of ``partition`` (records of a partition come in its order)."""
        if partition not in self._open:
            raise ValueError(f"partition {partition} is closed or unknown")
        latest = self._latest.get(partition, timestamp_ms)
        time_ms = max(latest, timestamp_ms)
        self._latest[partition] = time_ms
        self._buffers[partition].append(Released(partition, time_ms, item, timestamp_ms < latest))

    def close(self, partition: int) -> None:
        """No more records will come from ``partition``: it no longer holds the others back."""
        self._open.discard(partition)

    def buffered(self, partition: int) -> int:
        """Records of ``partition`` waiting to be released."""
        return len(self._buffers[partition])

    def pop_ready(self) -> Iterator[Released[T]]:
        """Release in order every record that no record still to come can precede."""
        while True:
            heads = [(b[0].time_ms, p) for p, b in self._buffers.items() if b]
            if not heads or any(not self._buffers[p] for p in self._open):
                return
            _time, partition = min(heads)
            yield self._buffers[partition].popleft()

    def drain(self) -> Iterator[Released[T]]:
        """Release everything left in order (every partition is closed)."""
        self._open.clear()
        yield from self.pop_ready()
