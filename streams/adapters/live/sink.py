"""The live ingest's Kafka sink: the file replay's sink, plus live dead letters and the
universe's changes.

Subclassing :class:`~streams.adapters.replay.files.KafkaTickSink` keeps one producer path for
ticks and their watermarks, so a live tick is produced exactly like a replayed one.
"""

from __future__ import annotations

from streams import kafka_io
from streams.adapters.replay.files import KafkaTickSink, kafka_tick_sink
from streams.contracts.records import DeadLettered, UniverseChanged
from streams.topics import Topic, topic_name


class KafkaLiveSink(KafkaTickSink):
    """``market.ticks``, ``deadletter`` and ``universe.events`` of one topic prefix."""

    universe_topic: str = Topic.UNIVERSE_EVENTS.value

    def send_dead_letter(self, record: DeadLettered) -> None:
        """Key = where the message came from (``binance-ws:<connection>``)."""
        kafka_io.produce(
            self.producer, self.deadletter_topic, (record.source_file or "").encode(),
            self._encode_dead_letter(record), on_delivery=self.tracker,
        )  # fmt: skip
        self.tracker.raise_if_failed()

    def send_universe(self, record: UniverseChanged) -> None:
        """Key = symbol, timestamp = the selection time; one partition (risk reads it whole)."""
        from streams.contracts.codec import serializer_for

        kafka_io.produce(
            self.producer, self.universe_topic, record.symbol.encode(),
            serializer_for(Topic.UNIVERSE_EVENTS)(record), partition=0,
            timestamp=record.event_time_ms, on_delivery=self.tracker,
        )  # fmt: skip
        self.tracker.raise_if_failed()


def kafka_live_sink(
    bootstrap: str,
    prefix: str,
    *,
    partitions: int,
    replication: int = 1,
    idempotence: bool = True,
) -> KafkaLiveSink:
    """A sink on ``<prefix>market.ticks`` (created with ``partitions`` when missing) and
    ``<prefix>universe.events`` (one partition)."""
    options = kafka_io.ProducerOptions(bootstrap, idempotence=idempotence)
    universe = topic_name(Topic.UNIVERSE_EVENTS, prefix)
    kafka_io.ensure_topics(
        bootstrap, {universe: 1}, replication_factor=replication, timeout_s=10,
        exact_partitions=False, keep_forever=True,
    )  # fmt: skip
    sink = kafka_tick_sink(bootstrap, prefix, options, partitions, replication, None, KafkaLiveSink)
    sink.universe_topic = universe
    return sink
