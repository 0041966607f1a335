"""Produce ``models.events`` records (the promotion gate's, the trainer's, a rollback's)."""

from __future__ import annotations

from collections.abc import Sequence

from streams import kafka_io
from streams.contracts.records import ModelEventRecorded
from streams.topics import Topic, topic_name


def publish_model_events(
    bootstrap: str, prefix: str, events: Sequence[ModelEventRecorded], timeout_s: float = 15.0
) -> None:
    """Produce ``events`` to ``<prefix>models.events`` (key = event id) and wait for the acks."""
    from streams.contracts.codec import serializer_for

    producer = kafka_io.producer(kafka_io.ProducerOptions(bootstrap, idempotence=False))
    tracker = kafka_io.DeliveryTracker()
    serialize = serializer_for(Topic.MODELS_EVENTS)
    topic = topic_name(Topic.MODELS_EVENTS, prefix)
    for e in events:
        kafka_io.produce(producer, topic, e.event_id.encode(), serialize(e), on_delivery=tracker)
    kafka_io.flush(producer, tracker, timeout_s=timeout_s)
