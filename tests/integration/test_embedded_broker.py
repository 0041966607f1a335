"""The embedded Tansu broker: lifecycle, round trip, the B1 workaround, a Faust agent on it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from streams.brokers import (
    BrokerBinaryMissingError,
    BrokerError,
    EmbeddedBroker,
    faust_app_settings,
    resolve_bootstrap,
)
from streams.brokers.embedded import metadata_answers
from streams.brokers.tansu_workarounds import fetch_high_watermarks
from tests.integration.apps.harness import (
    FaustWorker,
    TopicWatcher,
    expected_roundtrip,
    roundtrip_with_headers,
)
from tests.kafka_topics import create_topics

pytestmark = pytest.mark.embedded


def test_broker_starts_answers_and_stops() -> None:
    broker = EmbeddedBroker()
    with broker:
        bootstrap = broker.bootstrap
        pid = broker.pid
        assert bootstrap.startswith("127.0.0.1:")
        assert metadata_answers(bootstrap, timeout_s=2)
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not metadata_answers(bootstrap, timeout_s=1)
    with pytest.raises(BrokerError):
        _ = broker.bootstrap


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    with pytest.raises(BrokerBinaryMissingError, match="QT_KAFKA_BOOTSTRAP"):
        EmbeddedBroker().start()


def test_taken_port_is_reported(embedded_bootstrap: str) -> None:
    port = int(embedded_bootstrap.rsplit(":", 1)[1])
    with pytest.raises(BrokerError, match="Tansu"):
        EmbeddedBroker(port=port, ready_timeout_s=3).start()


def test_resolve_bootstrap_prefers_the_configured_broker(embedded_bootstrap: str) -> None:
    class Configured:
        kafka_bootstrap = embedded_bootstrap

    class Unset:
        kafka_bootstrap = None

    with resolve_bootstrap(Configured()) as handle:
        # a configured Tansu is recognised (workarounds on) but not owned (not stopped)
        assert (handle.bootstrap, handle.embedded, handle.owns_broker) == (
            embedded_bootstrap,
            True,
            False,
        )
    assert metadata_answers(embedded_bootstrap, timeout_s=2)
    with resolve_bootstrap(Unset()) as handle:
        assert handle.embedded and handle.owns_broker
        assert handle.bootstrap != embedded_bootstrap
        assert metadata_answers(handle.bootstrap, timeout_s=2)
    assert not metadata_answers(handle.bootstrap, timeout_s=1)


def test_embedded_settings_carry_the_workarounds(embedded_bootstrap: str) -> None:
    settings = faust_app_settings(embedded_bootstrap, embedded=True)
    assert settings["broker"] == [f"kafka://{embedded_bootstrap}"]
    assert settings["processing_guarantee"] == "at_least_once"
    assert settings["broker_session_timeout"] < 10
    assert "processing_guarantee" not in faust_app_settings("127.0.0.1:1", embedded=False)


def test_records_and_headers_round_trip(embedded_bootstrap: str, unique_prefix: str) -> None:
    topic = f"{unique_prefix}roundtrip"
    create_topics(embedded_bootstrap, [topic], partitions=1)
    assert roundtrip_with_headers(embedded_bootstrap, topic) == expected_roundtrip()


async def test_fetch_high_watermarks_finds_the_log_end(
    embedded_bootstrap: str, unique_prefix: str
) -> None:
    """B1: ListOffsets(LATEST) may answer short on Tansu; the Fetch high watermark does not."""
    import aiokafka

    topic = f"{unique_prefix}batches"
    create_topics(embedded_bootstrap, [topic], partitions=1)
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=embedded_bootstrap, linger_ms=50)
    await producer.start()
    try:
        for batch in range(3):  # three multi-record batches
            futures = [await producer.send(topic, f"{batch}-{i}".encode()) for i in range(40)]
            await producer.flush()
            assert all(f.done() for f in futures)
    finally:
        await producer.stop()

    tp = aiokafka.TopicPartition(topic, 0)
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=embedded_bootstrap)
    await consumer.start()
    try:
        listed = await consumer.end_offsets([tp])
    finally:
        await consumer.stop()
    fixed = await fetch_high_watermarks([embedded_bootstrap], listed)
    assert fixed[tp] == 120, f"ListOffsets said {listed[tp]}"


@pytest.mark.slow
def test_faust_agent_passes_records_through(
    embedded_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    source, sink = f"{unique_prefix}pass-in", f"{unique_prefix}pass-out"
    create_topics(embedded_bootstrap, [source, sink], partitions=1)
    worker = FaustWorker(
        "tests.integration.apps.passthrough",
        bootstrap=embedded_bootstrap,
        embedded=True,
        prefix=unique_prefix,
        datadir=tmp_path / "data",
        log_path=tmp_path / "worker.log",
    )
    watcher = TopicWatcher(embedded_bootstrap, sink)
    try:
        worker.start()
        worker.wait_ready()
        sent = roundtrip_with_headers(embedded_bootstrap, source, count=20)
        assert sent == expected_roundtrip(20)
        got: list[tuple] = []
        consumer = watcher._consumer
        for _ in range(120):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.key(), msg.value(), msg.headers()))
            if len(got) >= 20:
                break
            worker.check_alive()
    finally:
        worker.stop(signal.SIGTERM)
        watcher.close()
    assert got == expected_roundtrip(20), worker.tail()


#: About as many one-record batches as market.bars got in the demo (18,070 for 32,407 bars).
BATCHES = 20_000


@pytest.fixture(scope="module")
def one_record_batches(embedded_bootstrap: str) -> str:
    """A partition of :data:`BATCHES` one-record batches, as a Faust agent writes them (its
    producer sends a batch per record or two at the topology's pace)."""
    import asyncio
    import secrets

    from tests.benchmarks.bench_embedded_broker import produce_batches

    topic = f"b5-{secrets.token_hex(4)}"
    create_topics(embedded_bootstrap, [topic], partitions=1)
    asyncio.run(produce_batches(embedded_bootstrap, topic, BATCHES))
    return topic


@pytest.mark.slow
async def test_b5_workaround_reads_the_whole_partition_with_the_short_wait(
    embedded_bootstrap: str, one_record_batches: str
) -> None:
    """With the workaround installed (as every embedded worker has it), a consumer with the
    worker's 10 ms wait reads everything: a starved answer makes the next Fetch wait long.
    Whether stock aiokafka starves here (B5) depends on the machine's speed, so that is
    measured, not asserted: ``python -m tests.benchmarks embedded_broker``."""
    from streams.brokers import tansu_workarounds
    from tests.benchmarks.bench_embedded_broker import read_all

    tansu_workarounds.apply(embedded_bootstrap)
    wait = tansu_workarounds.FETCH_MAX_WAIT_MS
    got, _ = await read_all(embedded_bootstrap, one_record_batches, wait, BATCHES, within_s=60)
    assert got == BATCHES
