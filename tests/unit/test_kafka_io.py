"""The pure parts of streams.kafka_io: client configuration, error mapping, topic checks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams import kafka_io
from streams.kafka_io import (
    BrokerUnreachableError,
    ConsumerOptions,
    DeliveryFailedError,
    DeliveryTracker,
    KafkaIOError,
    PartitionCountError,
    ProducerOptions,
)

# ------------------------------------------------------------------------- configuration


def test_producer_options_match_faust_partitioning_and_allow_tansu() -> None:
    config = ProducerOptions("h:1", idempotence=False).config()
    assert config["bootstrap.servers"] == "h:1"
    assert config["partitioner"] == "murmur2_random"
    assert config["enable.idempotence"] is False
    assert config["acks"] == "all"
    assert ProducerOptions("h:1").config()["enable.idempotence"] is True


def test_producer_extra_settings_override_the_defaults() -> None:
    config = ProducerOptions("h:1", extra={"linger.ms": 0, "client.id": "x"}).config()
    assert config["linger.ms"] == 0 and config["client.id"] == "x"


def test_consumer_options_never_auto_commit_and_read_from_the_start() -> None:
    plain = ConsumerOptions("h:1", "g").config()
    assert plain == {
        "bootstrap.servers": "h:1",
        "group.id": "g",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    bounded = ConsumerOptions("h:1", "g", partition_eof=True).config()
    assert bounded["enable.partition.eof"] is True and "isolation.level" not in bounded
    sink = ConsumerOptions("h:1", "g", partition_eof=True, transactional=True).config()
    assert sink["isolation.level"] == "read_committed"
    assert sink["enable.auto.offset.store"] is False


def test_admin_config_quiet_and_connect_timeout() -> None:
    assert kafka_io.admin_config("h:1") == {"bootstrap.servers": "h:1"}
    quiet = kafka_io.admin_config("h:1", quiet=True, connect_timeout_ms=1000)
    assert isinstance(quiet["logger"], logging.Logger)
    assert quiet["logger"].level == logging.CRITICAL
    assert quiet["socket.connection.setup.timeout.ms"] == 1000


def test_configs_are_accepted_by_librdkafka() -> None:
    # Building a client validates every property name and value; no broker is contacted.
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    Producer(ProducerOptions("127.0.0.1:1", extra={"client.id": "t"}).config())
    Consumer(ConsumerOptions("127.0.0.1:1", "g", partition_eof=True, transactional=True).config())
    AdminClient(kafka_io.admin_config("127.0.0.1:1", quiet=True, connect_timeout_ms=1000))


def test_aiokafka_probe_config_is_outside_any_group() -> None:
    config = kafka_io.aiokafka_probe_config(["h:1", "h:2"], 10)
    assert config == {
        "bootstrap_servers": ["h:1", "h:2"],
        "group_id": None,
        "enable_auto_commit": False,
        "fetch_max_wait_ms": 10,
    }


# -------------------------------------------------------------------------- error mapping


def test_transport_failures_mean_unreachable() -> None:
    for code in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._RESOLVE):
        error = kafka_io.broker_error("h:1", "listing topics", KafkaException(KafkaError(code)))
        assert isinstance(error, BrokerUnreachableError)
        assert str(error).startswith("broker h:1 unreachable while listing topics: ")


def test_a_broker_refusal_is_a_kafka_io_error_naming_the_action() -> None:
    exc = KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    error = kafka_io.broker_error("h:1", "creating topics", exc)
    assert type(error) is KafkaIOError
    assert str(error) == (
        "creating topics on h:1 failed: Broker: Topic authorization failed "
        "(TOPIC_AUTHORIZATION_FAILED)"
    )


def test_errors_without_a_kafka_error_are_described_by_their_text() -> None:
    assert kafka_io.describe(ValueError("plain")) == "plain"
    assert kafka_io.error_code(ValueError("plain")) is None
    assert kafka_io.error_code(KafkaException(KafkaError(KafkaError._TRANSPORT))) == "_TRANSPORT"
    timed_out = kafka_io.broker_error("h:1", "x", RuntimeError("request timed out"))
    assert isinstance(timed_out, BrokerUnreachableError)


# ------------------------------------------------------------------------------- delivery


@dataclass
class FakeMessage:
    topic_name: str
    key_bytes: bytes | None

    def topic(self) -> str:
        return self.topic_name

    def key(self) -> bytes | None:
        return self.key_bytes


def test_delivery_tracker_counts_and_raises_the_first_failure() -> None:
    tracker = DeliveryTracker()
    message: Any = FakeMessage("t", b"k")
    tracker(None, message)
    tracker(None, message)
    tracker.raise_if_failed()
    assert tracker.delivered["t"] == 2
    tracker(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), FakeMessage("t", b"big"))
    tracker(KafkaError(KafkaError._MSG_TIMED_OUT), FakeMessage("t", b"late"))
    with pytest.raises(DeliveryFailedError) as raised:
        tracker.raise_if_failed()
    assert str(raised.value) == (
        "2 record(s) not delivered; first: topic t key b'big': "
        "Broker: Message size too large (MSG_SIZE_TOO_LARGE)"
    )


# --------------------------------------------------------------------------------- topics


def test_partition_mismatches_name_only_existing_topics_with_other_counts() -> None:
    wanted = {"a": 4, "b": 1, "c": 4}
    assert kafka_io.partition_mismatches(wanted, {"a": 4, "b": 2}) == {"b": (2, 1)}
    assert kafka_io.partition_mismatches(wanted, {}) == {}


def test_wrong_partition_counts_are_refused_with_a_clear_message() -> None:
    kafka_io.check_partitions({"a": 4}, {"a": 4, "other": 1})
    with pytest.raises(PartitionCountError) as raised:
        kafka_io.check_partitions({"p.market.ticks": 4, "p.deadletter": 1}, {"p.market.ticks": 2})
    assert "p.market.ticks has 2, wanted 4" in str(raised.value)
    assert "p.deadletter" not in str(raised.value)
    assert "QT_TOPIC_PREFIX" in str(raised.value)


def test_new_topics_carry_partitions_replication_and_retention() -> None:
    kept, default = kafka_io.new_topics({"a": 4, "b": 1}, 3, keep_forever=True)
    assert (kept.topic, kept.num_partitions, kept.replication_factor) == ("a", 4, 3)
    assert kept.config == {"retention.ms": "-1"} and default.num_partitions == 1
    (plain,) = kafka_io.new_topics({"a": 2}, 1, keep_forever=False)
    assert plain.config == {}
    log, changelog = kafka_io.new_topics({"a": 2, "c": 2}, 1, keep_forever=True, compacted={"c"})
    assert log.config == {"retention.ms": "-1"}
    assert changelog.config == {"cleanup.policy": "compact"}  # a state changelog keeps each key


def test_unreachable_broker_when_ensuring_topics_is_a_clear_error() -> None:
    with pytest.raises(BrokerUnreachableError, match=r"127\.0\.0\.1:1 unreachable"):
        kafka_io.ensure_topics("127.0.0.1:1", {"a": 1}, replication_factor=1, timeout_s=2)


# ------------------------------------------------------------------------------ placement


def test_partition_is_kafkas_murmur2() -> None:
    # The Java client's default partitioner (murmur2, positive, modulo) for these keys.
    assert [kafka_io.partition_for(s, 4) for s in ("BTCUSDT", "ETHUSDT", "XRPUSDT")] == [2, 1, 0]
    assert {kafka_io.partition_for(s, 1) for s in ("BTCUSDT", "ETHUSDT")} == {0}
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        kafka_io.partition_for("BTCUSDT", 0)
