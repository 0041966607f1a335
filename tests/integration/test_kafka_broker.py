"""Smoke tests of the real Apache Kafka started by infra/kafka/kafka.sh (or QT_KAFKA_BOOTSTRAP)."""

from __future__ import annotations

import pytest

from tests.integration.apps.harness import expected_roundtrip, roundtrip_with_headers
from tests.kafka_topics import create_topics

pytestmark = pytest.mark.kafka


def test_records_and_headers_round_trip(kafka_bootstrap: str, unique_prefix: str) -> None:
    topic = f"{unique_prefix}roundtrip"
    create_topics(kafka_bootstrap, [topic], partitions=1)
    assert roundtrip_with_headers(kafka_bootstrap, topic) == expected_roundtrip()


def test_transactions_hide_aborted_records(kafka_bootstrap: str, unique_prefix: str) -> None:
    """Exactly-once stays possible: a read_committed consumer never sees an aborted record."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    topic = f"{unique_prefix}txn"
    create_topics(kafka_bootstrap, [topic], partitions=1)
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{unique_prefix}tx"}
    )
    producer.init_transactions(30)
    for outcome in ("commit", "abort", "commit"):
        producer.begin_transaction()
        for i in range(3):
            producer.produce(topic, key=outcome.encode(), value=f"{outcome}-{i}".encode())
        if outcome == "commit":
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"{unique_prefix}reader",
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen = []
    for _ in range(40):
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            seen.append(msg.value().decode())
    consumer.close()
    assert seen == [f"commit-{i}" for i in range(3)] * 2


def test_kafka_is_not_mistaken_for_tansu(kafka_bootstrap: str) -> None:
    from streams.brokers import resolve_bootstrap

    class Configured:
        kafka_bootstrap: str

    settings = Configured()
    settings.kafka_bootstrap = kafka_bootstrap
    handle = resolve_bootstrap(settings)
    assert (handle.embedded, handle.owns_broker) == (False, False)
