"""The live ingest's Kafka sink: the file replay's sink, plus live dead letters and idle marks.

Subclassing :class:`~streams.adapters.replay.files.KafkaTickSink` keeps one producer path for
ticks and their watermarks, so a live tick is produced exactly like a replayed one.
"""

from __future__ import annotations

from streams import kafka_io
from streams.adapters.replay.files import KafkaTickSink, kafka_tick_sink
from streams.contracts.records import DeadLettered


class KafkaLiveSink(KafkaTickSink):
    """``market.ticks`` and ``deadletter`` of one topic prefix."""

    def send_dead_letter(self, record: DeadLettered) -> None:
        """Key = where the message came from (``binance-ws:<connection>``)."""
        kafka_io.produce(
            self.producer, self.deadletter_topic, (record.source_file or "").encode(),
            self._encode_dead_letter(record), on_delivery=self.tracker,
        )  # fmt: skip
        self.tracker.raise_if_failed()

    def advance_idle(self, watermark: int) -> bool:
        """Event time passed ``watermark`` without a tick: see WatermarkWriter.advance_idle."""
        return self.watermarks.advance_idle(watermark)


def kafka_live_sink(
    bootstrap: str,
    prefix: str,
    *,
    partitions: int,
    replication: int = 1,
    idempotence: bool = True,
) -> KafkaLiveSink:
    """A sink on ``<prefix>market.ticks`` (created with ``partitions`` when missing)."""
    options = kafka_io.ProducerOptions(bootstrap, idempotence=idempotence)
    return kafka_tick_sink(bootstrap, prefix, options, partitions, replication, None, KafkaLiveSink)
