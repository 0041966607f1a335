"""Kafka I/O at the edges: client configuration, delivery tracking, errors, topics, placement.

Every Kafka client the project creates outside Faust's own is configured here: the
confluent-kafka producers, consumers and admin clients of the replay, the demo, the journal,
the control commands and the broker probes, and the aiokafka probe of the Tansu workarounds
(:mod:`streams.brokers.tansu_workarounds`, whose patches stay in their module). Faust's clients
are configured by :mod:`streams.brokers.faust_settings`.

* Configuration: :class:`ProducerOptions`, :class:`ConsumerOptions` and :func:`admin_config`
  build the librdkafka dictionaries (pure, unit-tested); :func:`producer`, :func:`consumer`
  and :func:`admin_client` create the clients.
* Delivery: :func:`produce` waits for queue space instead of failing, :class:`DeliveryTracker`
  counts acknowledged records and keeps the first failure, :func:`flush` raises it.
* Errors: :func:`broker_error` maps a librdkafka error to :class:`KafkaIOError` (or
  :class:`BrokerUnreachableError`) naming the broker and what was being done.
* Topics: :func:`ensure_topics` creates what is missing and refuses wrong partition counts.
* Placement: :func:`partition_for` is the partition the producers' ``murmur2_random``
  partitioner (and Faust's, the Java client's default) gives a key.

confluent-kafka and aiokafka are imported inside the functions: importing this module is free.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

#: A librdkafka configuration (values: str, int, bool, or a ``logging.Logger`` for ``logger``).
Config = dict[str, Any]

#: librdkafka error codes that mean "no broker answered" rather than "the broker said no".
_UNREACHABLE_CODES: Final = frozenset({"_TRANSPORT", "_TIMED_OUT", "_RESOLVE", "_ALL_BROKERS_DOWN"})
_UNREACHABLE_WORDS: Final = ("transport", "timed out", "resolve")
#: Java, aiokafka and so Faust hash keys with murmur2; librdkafka's default (crc32) differs.
MURMUR2_PARTITIONER: Final = "murmur2_random"


# ------------------------------------------------------------------------------------ errors


class KafkaIOError(Exception):
    """Talking to Kafka failed; the message names the broker, topic or action involved."""


class BrokerUnreachableError(KafkaIOError):
    """No answer from the bootstrap servers."""


class DeliveryFailedError(KafkaIOError):
    """The broker refused or lost records; the caller stops instead of skipping them."""


class PartitionCountError(KafkaIOError):
    """Topics exist with another partition count than the one wanted."""


class UnknownTopicError(KafkaIOError):
    """The topic does not exist on the broker."""


def _kafka_error_of(error: Any) -> Any:
    """The librdkafka ``KafkaError`` of a ``KafkaException`` (or the error itself)."""
    if isinstance(error, BaseException) and error.args:
        return error.args[0]
    return error


def describe(error: Any) -> str:
    """A librdkafka error (exception or ``KafkaError``) as one line: ``Local: ... (_TRANSPORT)``."""
    inner = _kafka_error_of(error)
    if callable(getattr(inner, "str", None)) and callable(getattr(inner, "name", None)):
        return f"{inner.str()} ({inner.name()})"
    return str(error)


def error_code(error: Any) -> str | None:
    """The librdkafka error name (``_TRANSPORT``, ``TOPIC_ALREADY_EXISTS``, ...), if any."""
    name = getattr(_kafka_error_of(error), "name", None)
    return str(name()) if callable(name) else None


def broker_error(bootstrap: str, action: str, exc: BaseException) -> KafkaIOError:
    """The project error for ``exc`` raised while doing ``action`` against ``bootstrap``."""
    text = describe(exc)
    unreachable = error_code(exc) in _UNREACHABLE_CODES or any(
        word in text.lower() for word in _UNREACHABLE_WORDS
    )
    if unreachable:
        return BrokerUnreachableError(f"broker {bootstrap} unreachable while {action}: {text}")
    return KafkaIOError(f"{action} on {bootstrap} failed: {text}")


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class ProducerOptions:
    """Producer tuning. ``idempotence`` must be off for the embedded Tansu broker (bug TX)."""

    bootstrap: str
    idempotence: bool = True
    linger_ms: int = 20
    batch_bytes: int = 1_000_000
    compression: str = "lz4"
    extra: Mapping[str, str | int | bool] = field(default_factory=dict)

    def config(self) -> Config:
        """librdkafka configuration of the producer."""
        return {
            "bootstrap.servers": self.bootstrap,
            "enable.idempotence": self.idempotence,
            "acks": "all",
            "linger.ms": self.linger_ms,
            "batch.size": self.batch_bytes,
            "compression.type": self.compression,
            # Same hash as Faust = a symbol lands on the partition the Faust agents expect.
            "partitioner": MURMUR2_PARTITIONER,
            "queue.buffering.max.messages": 200_000,
            **self.extra,
        }


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    """A consumer that reads from the start and commits only what its owner commits.

    ``partition_eof``: end-of-partition events, so a bounded read knows it is done.
    ``transactional``: read committed records only, offsets stored only by explicit commits
    (a sink that commits after its own write).
    """

    bootstrap: str
    group: str
    partition_eof: bool = False
    transactional: bool = False

    def config(self) -> Config:
        """librdkafka configuration of the consumer."""
        config: Config = {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
        if self.partition_eof:
            config["enable.partition.eof"] = True
        if self.transactional:
            config["enable.auto.offset.store"] = False
            config["isolation.level"] = "read_committed"
        return config


def admin_config(
    bootstrap: str, *, quiet: bool = False, connect_timeout_ms: int | None = None
) -> Config:
    """librdkafka configuration of an admin client.

    ``quiet``: librdkafka logs every failed connection attempt; callers that raise one clear
    :class:`KafkaIOError` instead silence it. ``connect_timeout_ms``: give up on a connection
    attempt sooner (probes of a broker that may not be up yet).
    """
    config: Config = {"bootstrap.servers": bootstrap}
    if quiet:
        silent = logging.getLogger(f"{__name__}.admin")
        silent.setLevel(logging.CRITICAL)
        config["logger"] = silent
    if connect_timeout_ms is not None:
        config["socket.connection.setup.timeout.ms"] = connect_timeout_ms
    return config


def aiokafka_probe_config(servers: Sequence[str], fetch_max_wait_ms: int) -> dict[str, Any]:
    """Keyword arguments of an aiokafka consumer outside any group that only reads metadata."""
    return {
        "bootstrap_servers": list(servers),
        "group_id": None,
        "enable_auto_commit": False,
        "fetch_max_wait_ms": fetch_max_wait_ms,
    }


def producer(options: ProducerOptions) -> Producer:
    """A confluent-kafka producer configured by ``options``."""
    from confluent_kafka import Producer

    return Producer(options.config())


def consumer(options: ConsumerOptions) -> Consumer:
    """A confluent-kafka consumer configured by ``options`` (the caller assigns or subscribes)."""
    from confluent_kafka import Consumer

    return Consumer(options.config())


def admin_client(
    bootstrap: str, *, quiet: bool = False, connect_timeout_ms: int | None = None
) -> AdminClient:
    """A confluent-kafka admin client (see :func:`admin_config`)."""
    from confluent_kafka.admin import AdminClient

    return AdminClient(admin_config(bootstrap, quiet=quiet, connect_timeout_ms=connect_timeout_ms))


# ---------------------------------------------------------------------------------- delivery


class DeliveryTracker:
    """Counts delivered records per topic; keeps the first failure to raise on the caller's thread.

    Pass it as ``on_delivery``: librdkafka calls it from ``poll``/``flush``, where raising would
    be lost, so :meth:`raise_if_failed` raises later.
    """

    def __init__(self) -> None:
        self.delivered: Counter[str] = Counter()
        self.failure: str | None = None
        self.failures = 0

    def __call__(self, err: Any, msg: Message) -> None:
        if err is None:
            self.delivered[msg.topic() or ""] += 1
            return
        self.failures += 1
        if self.failure is None:
            self.failure = f"topic {msg.topic()} key {msg.key()!r}: {describe(err)}"

    def raise_if_failed(self) -> None:
        """Raise :class:`DeliveryFailedError` if any record was refused or lost."""
        if self.failure is not None:
            raise DeliveryFailedError(
                f"{self.failures} record(s) not delivered; first: {self.failure}"
            )


def produce(
    producer: Producer, topic: str, key: bytes | None, value: bytes | None, **kwargs: Any
) -> None:
    """Produce, waiting for queue space instead of failing when librdkafka's buffer is full."""
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            break
        except BufferError:
            producer.poll(0.05)
    producer.poll(0)


def flush(producer: Producer, tracker: DeliveryTracker, timeout_s: float) -> None:
    """Wait until every produced record is acknowledged; raise on a failure or a timeout."""
    remaining = producer.flush(timeout_s)
    tracker.raise_if_failed()
    if remaining:
        raise DeliveryFailedError(f"{remaining} record(s) still unacknowledged after {timeout_s} s")


# ------------------------------------------------------------------------------------ topics


def partition_mismatches(
    wanted: Mapping[str, int], existing: Mapping[str, int]
) -> dict[str, tuple[int, int]]:
    """Topics of ``wanted`` that exist with another partition count: name -> (have, want)."""
    return {
        name: (existing[name], want)
        for name, want in wanted.items()
        if name in existing and existing[name] != want
    }


def check_partitions(wanted: Mapping[str, int], existing: Mapping[str, int]) -> None:
    """Raise :class:`PartitionCountError` naming every topic with a wrong partition count."""
    wrong = partition_mismatches(wanted, existing)
    if wrong:
        listed = "; ".join(f"{n} has {have}, wanted {want}" for n, (have, want) in wrong.items())
        raise PartitionCountError(
            "topics exist with the wrong partition count (delete them or use another topic "
            f"prefix, QT_TOPIC_PREFIX): {listed}"
        )


def new_topics(
    wanted: Mapping[str, int], replication_factor: int, keep_forever: bool
) -> list[NewTopic]:
    """``NewTopic`` requests for ``wanted``; ``keep_forever`` turns time-based retention off."""
    from confluent_kafka.admin import NewTopic

    config = {"retention.ms": "-1"} if keep_forever else {}
    return [
        NewTopic(name, num_partitions=n, replication_factor=replication_factor, config=config)
        for name, n in wanted.items()
    ]


def partition_counts(client: Any, timeout_s: float, topic: str | None = None) -> dict[str, int]:
    """Partition count of every topic on the broker (or of ``topic``) per any client's metadata.

    Topics the broker reports with an error (``topic`` unknown) are left out.
    """
    metadata = client.list_topics(topic, timeout=timeout_s)
    return {
        name: len(meta.partitions)
        for name, meta in metadata.topics.items()
        if meta.error is None and meta.partitions
    }


def topic_partitions(client: Any, bootstrap: str, topic: str, timeout_s: float) -> list[int]:
    """The partition ids of ``topic``, sorted, from the metadata of ``client`` (any client).

    Raises :class:`UnknownTopicError` when it does not exist, another :class:`KafkaIOError`
    when the broker does not answer.
    """
    from confluent_kafka import KafkaException

    # A topic created a moment ago can be reported unknown (or leaderless) until the broker's
    # metadata catches up: ask again until the timeout before calling it missing.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            meta = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            raise broker_error(bootstrap, f"reading the partitions of {topic}", exc) from exc
        if meta is not None and meta.error is None and meta.partitions:
            return sorted(meta.partitions)
        if time.monotonic() >= deadline:
            raise UnknownTopicError(f"topic {topic!r} does not exist on the broker {bootstrap}")
        time.sleep(0.25)


def ensure_topics(
    bootstrap: str,
    wanted: Mapping[str, int],
    *,
    replication_factor: int,
    keep_forever: bool = False,
    timeout_s: float = 30.0,
    exact_partitions: bool = True,
) -> list[str]:
    """Create the topics of ``wanted`` (name -> partitions) that are missing; their names.

    An existing topic with another partition count is refused (:class:`PartitionCountError`),
    also one a concurrent creator made meanwhile, unless ``exact_partitions=False`` (a replay
    into a topic that predates it keeps that topic as it is). ``keep_forever`` disables
    time-based retention on the created topics: replayed records carry their (old) event time,
    which a broker's time retention would delete within minutes.
    """
    from confluent_kafka import KafkaException

    admin = admin_client(bootstrap, quiet=True)
    try:
        existing = partition_counts(admin, timeout_s)
        if exact_partitions:
            check_partitions(wanted, existing)
        missing = {name: n for name, n in wanted.items() if name not in existing}
        raced = _create(admin, new_topics(missing, replication_factor, keep_forever), timeout_s)
        if raced and exact_partitions:
            check_partitions({n: missing[n] for n in raced}, partition_counts(admin, timeout_s))
    except KafkaException as exc:
        raise broker_error(bootstrap, "creating topics", exc) from exc
    return list(missing)


def _create(admin: AdminClient, topics: Iterable[NewTopic], timeout_s: float) -> list[str]:
    """Create ``topics``; the names a concurrent creator made first (not an error)."""
    from confluent_kafka import KafkaException

    requested = list(topics)
    if not requested:
        return []
    raced = []
    for name, future in admin.create_topics(requested, operation_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if error_code(exc) != "TOPIC_ALREADY_EXISTS":
                raise
            raced.append(name)
    return raced


# --------------------------------------------------------------------------------- placement


@functools.lru_cache(maxsize=4096)
def partition_for(key: str, partitions: int) -> int:
    """Kafka's default partition of a keyed record: ``(murmur2(key) & 0x7fffffff) % n``.

    What the producers' ``murmur2_random`` partitioner, aiokafka (so Faust) and the Java client
    choose, so the runner and the replay's watermarks place a symbol where the topology has it.
    Cached: the keys are mostly symbols, asked for on every tick and signal.
    """
    from aiokafka.partitioner import murmur2  # aiokafka takes 0.2 s to import: only when placing

    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions} (key {key!r})")
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions
