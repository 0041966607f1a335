"""Every workaround for the embedded Tansu broker (0.6.0-510f3e2), and nothing else.

Measured in ``shared/notes/tansu-broker-measurements.md``. Each workaround names the bug it
works around; delete it when the broker is fixed. They apply only to apps whose bootstrap
servers were registered with :func:`apply` (the embedded broker), so a process that also talks
to a real Kafka keeps stock behaviour there.

B1  ListOffsets(LATEST) answers the base offset of the newest *batch* + 1, not the log end.
    Faust sizes table recovery with it, so recovery stops short (1996/2000 records) and a
    persisted store can fail with ConsistencyError. Fix: :func:`fetch_high_watermarks` reads the
    high watermark from a Fetch response instead (patched into Faust's ``_highwaters``).
B3  JoinGroup is held for session_timeout/2: Faust's 60 s default means 30 s per rebalance.
    Fix: a short session timeout (:data:`SESSION_TIMEOUT_S`) in :func:`faust_overrides`.
B4  Fetch sleeps max_wait/2 and does not wake up when data arrives; Faust hard-codes
    ``fetch_max_wait_ms=1500``, which costs ~750 ms per hop. Fix: the worker consumer's max
    wait is lowered to :data:`FETCH_MAX_WAIT_MS` (patched after Faust creates the consumer).
TX  Transactions and idempotent producers fail (aiokafka InitProducerId v0: UnknownError).
    Fix: :func:`faust_overrides` forces ``processing_guarantee="at_least_once"``, which keeps
    aiokafka's producer idempotence off.
Not worked around (no client-side fix): B2 offsets_for_times is batch-coarse (don't replay a
topic by time on Tansu), no log compaction (changelogs grow), no CreatePartitions.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from streams.kafka_io import aiokafka_probe_config

#: B4: fetch wait for Faust's worker consumer on Tansu (p50 0.27 s at 400 msg/s with 50 ms, vs
#: 4.9 s). The topology's feedback loop (risk -> execution -> risk) crosses several hops per bar:
#: the demo's 6-hour window drained in 38 s with 10 ms against 63 s with 50 ms.
FETCH_MAX_WAIT_MS = 10
#: B3: JoinGroup then takes ~3 s instead of 30 s; must stay above the heartbeat interval.
SESSION_TIMEOUT_S = 6.0
HEARTBEAT_INTERVAL_S = 1.0
#: B1: how long the high-watermark probe may take before falling back to ListOffsets.
PROBE_TIMEOUT_S = 10.0

_lock = threading.Lock()
_embedded_servers: set[str] = set()
_originals: dict[str, Callable[..., Any]] = {}


def faust_overrides() -> dict[str, object]:
    """faust.App settings the embedded broker needs (B3, TX); merged over the common ones."""
    return {
        "broker_session_timeout": SESSION_TIMEOUT_S,
        "broker_heartbeat_interval": HEARTBEAT_INTERVAL_S,
        "processing_guarantee": "at_least_once",
    }


def apply(bootstrap: str) -> None:
    """Register ``bootstrap`` as an embedded broker and install the Faust patches (idempotent)."""
    servers = _split_servers(bootstrap)
    with _lock:
        _embedded_servers.update(servers)
        if not _originals:
            _install()


def remove() -> None:
    """Undo :func:`apply`: restore Faust's methods and forget every registered server."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    with _lock:
        for name, original in _originals.items():
            setattr(AIOKafkaConsumerThread, name, original)
        _originals.clear()
        _embedded_servers.clear()


def is_embedded(servers: Iterable[str]) -> bool:
    """True when any of ``servers`` (``host:port``) was registered with :func:`apply`."""
    return any(server in _embedded_servers for server in servers)


def _split_servers(bootstrap: str) -> list[str]:
    return [s.strip().removeprefix("kafka://") for s in bootstrap.split(",") if s.strip()]


def _install() -> None:
    """Wrap the two AIOKafkaConsumerThread methods; the wrappers fall through for real Kafka."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create_consumer = AIOKafkaConsumerThread._create_worker_consumer
    highwaters = AIOKafkaConsumerThread._highwaters
    _originals["_create_worker_consumer"] = create_consumer
    _originals["_highwaters"] = highwaters
    AIOKafkaConsumerThread._create_worker_consumer = _patched_create_consumer(create_consumer)  # type: ignore[method-assign]
    AIOKafkaConsumerThread._highwaters = _patched_highwaters(highwaters)  # type: ignore[method-assign,assignment]


def _thread_servers(thread: Any) -> list[str]:
    """The ``host:port`` list a Faust consumer thread connects to."""
    from faust.transport.drivers.aiokafka import server_list

    return list(server_list(thread.transport.url, thread.transport.default_port))


def _patched_create_consumer(original: Callable[..., Any]) -> Callable[..., Any]:
    """B4: lower the fetch wait Faust hard-codes (aiokafka reads it when the consumer starts)."""

    @functools.wraps(original)
    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        if is_embedded(_thread_servers(self)):
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    return create_worker_consumer


def _patched_highwaters(
    original: Callable[..., Awaitable[Mapping[Any, int]]],
) -> Callable[..., Awaitable[Mapping[Any, int]]]:
    """B1: correct Faust's ListOffsets-based highwaters with Fetch high watermarks."""

    @functools.wraps(original)
    async def highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
        listed = await original(self, partitions)
        servers = _thread_servers(self)
        if self.consumer.in_transaction or not is_embedded(servers):
            return listed
        return await fetch_high_watermarks(servers, listed)

    return highwaters


async def fetch_high_watermarks(
    servers: list[str], listed: Mapping[Any, int], timeout_s: float = PROBE_TIMEOUT_S
) -> dict[Any, int]:
    """True log-end offsets: fetch from just below each ListOffsets answer and read the HW.

    ``listed`` maps topic-partitions (any ``(topic, partition)`` tuple, keys are returned
    as given) to ListOffsets(LATEST) answers. On Tansu that answer is the newest batch's base
    offset + 1, so fetching from answer - 1 returns the newest batch, and every Fetch response
    carries the partition's real high watermark. A partition whose probe times out keeps its
    listed value (never lower than what ListOffsets said).
    """
    import aiokafka

    wanted = {tp: offset for tp, offset in listed.items() if offset > 0}
    result = dict(listed)
    if not wanted:
        return result
    probe = aiokafka.AIOKafkaConsumer(**aiokafka_probe_config(servers, FETCH_MAX_WAIT_MS))
    await probe.start()
    try:
        by_ak = {aiokafka.TopicPartition(tp[0], tp[1]): tp for tp in wanted}
        probe.assign(list(by_ak))
        for ak_tp, tp in by_ak.items():
            probe.seek(ak_tp, wanted[tp] - 1)
        await _fetch_until_known(probe, list(by_ak), timeout_s)
        for ak_tp, tp in by_ak.items():
            high = probe.highwater(ak_tp)
            if high is not None:
                result[tp] = max(result[tp], high)
    finally:
        await probe.stop()
    return result


async def _fetch_until_known(probe: Any, partitions: list[Any], timeout_s: float) -> None:
    """Fetch (discarding records) until every partition has a high watermark or time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if all(probe.highwater(tp) is not None for tp in partitions):
            return
        await probe.getmany(*partitions, timeout_ms=100)
