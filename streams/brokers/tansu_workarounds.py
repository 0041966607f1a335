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
B5  A Fetch lists every record-batch object the partition ever stored, under a deadline: what
    remains of the request's max_wait, spent partition after partition of the request
    (dynostore.rs ``fetch`` checks it per listed object). A fetch offset beyond the objects
    listed in time gets an empty answer although the partition has data, and since the list
    only grows, so does every later fetch with the same wait: the consumer stalls for good.
    With B4's 10 ms wait that happens at some hundreds to thousands of objects on a loaded
    2-core machine, and Faust's producer writes 1-2 records per batch: the risk stage stopped
    reading ``market.bars`` (18,070 batches for 32,407 records) after a few hundred records.
    A long wait lists far more in time, and costs nothing when there is data to return (the
    broker answers as soon as a round found some; it only sleeps when none did). Fix: after a
    response in which a partition came back empty while behind its high watermark (starved:
    the data exists), the next Fetch waits :data:`STARVED_FETCH_WAIT_MS`; then B4's short wait
    again (:func:`next_fetch_wait_ms`, patched into aiokafka's fetcher). Whether it shows
    depends on the machine's speed: ``python -m tests.benchmarks embedded_broker`` measures it
    (CI's machine read all 20k objects in time in December 2026); the workaround's guarantee is
    ``tests/integration/test_embedded_broker.py::test_b5_*``.
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
#: B5: fetch wait after a starved response. The starved partition has data, so the broker
#: answers once its listing reaches it (100 ms listed 18k objects under load, 10 ms did not);
#: it would sleep half of it only if the data vanished (a produce between Tansu's high-watermark
#: update and its write of the batch), so this is also the worst case's delay, once.
STARVED_FETCH_WAIT_MS = 500
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
    from aiokafka.consumer.fetcher import Fetcher
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    with _lock:
        for name, original in _originals.items():
            setattr(Fetcher if name == "_proc_fetch_request" else AIOKafkaConsumerThread,
                    name, original)  # fmt: skip
        _originals.clear()
        _embedded_servers.clear()


def is_embedded(servers: Iterable[str]) -> bool:
    """True when any of ``servers`` (``host:port``) was registered with :func:`apply`."""
    return any(server in _embedded_servers for server in servers)


def _split_servers(bootstrap: str) -> list[str]:
    return [s.strip().removeprefix("kafka://") for s in bootstrap.split(",") if s.strip()]


def _install() -> None:
    """Wrap two AIOKafkaConsumerThread methods and aiokafka's fetch round (B5); the wrappers
    fall through for real Kafka."""
    from aiokafka.consumer.fetcher import Fetcher
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create_consumer = AIOKafkaConsumerThread._create_worker_consumer
    highwaters = AIOKafkaConsumerThread._highwaters
    _originals["_create_worker_consumer"] = create_consumer
    _originals["_highwaters"] = highwaters
    _originals["_proc_fetch_request"] = Fetcher._proc_fetch_request
    AIOKafkaConsumerThread._create_worker_consumer = _patched_create_consumer(create_consumer)  # type: ignore[method-assign]
    AIOKafkaConsumerThread._highwaters = _patched_highwaters(highwaters)  # type: ignore[method-assign,assignment]
    Fetcher._proc_fetch_request = _patched_fetch_round(Fetcher._proc_fetch_request)


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


def next_fetch_wait_ms(starved: int, short_ms: int) -> int:
    """B5: the next Fetch's wait after a response that left ``starved`` partitions empty though
    behind their high watermark (their data exists, a long wait lists it in time)."""
    return STARVED_FETCH_WAIT_MS if starved else short_ms


def starved_partitions(
    requested: Iterable[tuple[Any, int]], highwater: Callable[[Any], int | None], got: Any
) -> list[Any]:
    """The partitions of a Fetch (``(tp, fetch offset)`` pairs) that came back without records
    (not in ``got``) although their high watermark in the response is past the fetch offset."""
    starved = []
    for tp, offset in requested:
        high = highwater(tp)
        if tp not in got and high is not None and high > offset:
            starved.append(tp)
    return starved


def _fetcher_is_embedded(fetcher: Any) -> bool:
    """True for a fetcher of a consumer connected to a registered embedded broker (cached)."""
    known = fetcher.__dict__.get("_qt_embedded")
    if known is None:
        servers = fetcher._client._bootstrap_servers
        listed = _split_servers(servers) if isinstance(servers, str) else list(servers)
        known = fetcher.__dict__["_qt_embedded"] = is_embedded(listed)
    return bool(known)


FetchRound = Callable[..., Awaitable[bool]]


def _patched_fetch_round(original: FetchRound) -> FetchRound:
    """B5: after each Fetch response, pick the next request's wait (:func:`next_fetch_wait_ms`)."""

    @functools.wraps(original)
    async def proc_fetch_request(self: Any, assignment: Any, node_id: int, request: Any) -> bool:
        short_ms = self.__dict__.setdefault("_qt_short_wait_ms", self._fetch_max_wait_ms)
        woke = await original(self, assignment, node_id, request)
        if not assignment.active or not _fetcher_is_embedded(self):
            return woke
        from aiokafka.structs import TopicPartition

        requested = [
            (TopicPartition(topic, partition), offset)
            for topic, partitions in request.topics
            for partition, offset, _max_bytes in partitions
        ]

        def highwater(tp: Any) -> int | None:
            state = assignment.state_value(tp)
            return None if state is None else state.highwater

        starved = starved_partitions(requested, highwater, self._records)
        self._fetch_max_wait_ms = next_fetch_wait_ms(len(starved), short_ms)
        return woke

    return proc_fetch_request


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
