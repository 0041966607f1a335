"""In-band event-time watermarks on the ticks topic (docs/determinism.md).

A watermark is an empty record with the ``qt-watermark`` header: "no tick before this event
time follows on this partition". The file replay sends one to every partition that got no tick
since the last one whenever event time advances by :data:`~streams.ordering.WATERMARK_EVERY_MS`
(a partition that just received a tick needs none: its next tick implies the same progress),
and :meth:`WatermarkWriter.end_stream` sends the final one, which lets every downstream merge
drain a bounded replay. Partitions are where the producers' murmur2 partitioner puts a symbol
(:func:`streams.kafka_io.partition_for`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from streams.kafka_io import DeliveryTracker, partition_for, produce
from streams.ordering import END_OF_STREAM, SOURCE_HEADER, WATERMARK_EVERY_MS, WATERMARK_HEADER

if TYPE_CHECKING:
    from confluent_kafka import Producer

#: ``qt-source`` header of the replay's watermarks (the merges track progress per source).
REPLAY_SOURCE = b"replay"


class WatermarkWriter:
    """Sends the watermarks of one topic with ``partitions`` partitions through ``producer``."""

    def __init__(
        self, producer: Producer, topic: str, partitions: int, tracker: DeliveryTracker
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.partitions = partitions
        self.tracker = tracker
        #: watermark records produced (they share the topic with the ticks)
        self.sent = 0
        self._watermark = -1
        self._quiet: set[int] = set(range(partitions))  # got no tick since the last watermark
        self._partition_of: dict[str, int] = {}

    def before_tick(self, symbol: str, event_time_ms: int) -> None:
        """Call before producing a tick: a watermark first when event time moved on."""
        self.before_record(self._partition(symbol), event_time_ms)

    def before_record(self, partition: int, event_time_ms: int) -> None:
        """:meth:`before_tick` for a record whose partition is known (a topic copy)."""
        if event_time_ms >= self._watermark + WATERMARK_EVERY_MS:
            self.send(event_time_ms, self._quiet)
            self._quiet = set(range(self.partitions))
        self._quiet.discard(partition)

    def send(self, watermark: int, partitions: Iterable[int] | None = None) -> None:
        """Tell ``partitions`` (all by default) that no tick before ``watermark`` follows."""
        # Record timestamp in event time too (the final one at the last tick's time), so
        # time-range readers of the topic never see a wall-clock or far-future timestamp.
        timestamp = max(self._watermark, 0) if watermark == END_OF_STREAM else watermark
        self._watermark = watermark
        targets = sorted(range(self.partitions) if partitions is None else partitions)
        self.sent += len(targets)
        headers = [(SOURCE_HEADER, REPLAY_SOURCE), (WATERMARK_HEADER, str(watermark).encode())]
        for partition in targets:
            produce(
                self.producer, self.topic, None, b"", partition=partition, headers=headers,
                timestamp=timestamp, on_delivery=self.tracker,
            )  # fmt: skip

    def announce(self, event_time_ms: int) -> None:
        """Every partition: no tick before ``event_time_ms`` follows (the next tick's time).

        What :meth:`before_tick` of that tick would imply, said before the tick is produced
        (a paced replay waits for it); the tick then needs no watermark of its own.
        """
        if event_time_ms > self._watermark:
            self.send(event_time_ms)
            self._quiet = set(range(self.partitions))

    def end_stream(self) -> None:
        """Close a bounded replay: the last watermark lets every downstream merge drain."""
        self.send(END_OF_STREAM)

    def _partition(self, symbol: str) -> int:
        partition = self._partition_of.get(symbol)
        if partition is None:
            partition = self._partition_of[symbol] = partition_for(symbol, self.partitions)
        return partition
