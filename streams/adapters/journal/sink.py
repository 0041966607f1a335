"""The journal sink: business topics -> batches -> one database transaction -> offsets.

:class:`JournalSink` consumes decoded records with its own confluent-kafka consumer group,
turns them into rows (:mod:`.rows`), writes each batch in one transaction (:mod:`.writer`) and
commits the batch's offsets only after the database committed. A failed write rolls back,
seeks the consumer back to the batch's first offsets, backs off and retries. In-band
watermarks (header ``qt-watermark``) carry no business data and are skipped, but their offsets
are committed like any other. A record the journal cannot decode is stored raw in
``journal_undecodable``: the sink never commits past a record it did not keep.

:func:`journal_run` journals a finished run up to the topics' current end; :func:`journal_forever`
is the long-running sink. Wall-clock time is used only for batching and retry pacing (the sink's
own edge), never for trading logic; ``clock`` and ``sleep`` are injectable.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from streams import kafka_io
from streams.adapters.journal import JournalConfigError, JournalConsumeError, JournalWriteError
from streams.adapters.journal.migrations import migrate_dsn, validate_schema_name
from streams.adapters.journal.rows import Row, rows_for, undecodable_row
from streams.adapters.journal.writer import Batch, prepare_staging, write_batch
from streams.ordering import WATERMARK_HEADER, header_value
from streams.topics import Topic, topic_name
from streams.topology import journaled_topics

if TYPE_CHECKING:
    import psycopg
    from confluent_kafka import Consumer, Message, TopicPartition

    from streams.contracts.registry import SchemaRegistry

log = logging.getLogger(__name__)

#: Business topics the journal consumes. Not journaled: ``market.features`` (derived from the
#: ticks, large windows) and ``signals.ensemble`` (embedded in every ``signals.supervised``).
#: The business topics journaled (declared in streams/topology.py).
JOURNALED_TOPICS: Final = journaled_topics()


@dataclass(frozen=True, slots=True)
class JournalOptions:
    """How the sink batches, samples and retries."""

    schema: str = "public"
    batch_size: int = 5_000
    max_batch_wait_s: float = 1.0
    trade_sample_every: int = 100
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    #: give up (raise :class:`JournalWriteError`) after this many consecutive failed writes
    #: (a retry re-polls from the batch's first offsets, so its batch may differ);
    #: ``None`` = retry forever (the long-running sink: it waits for the database to return)
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        validate_schema_name(self.schema)
        if self.batch_size < 1 or self.trade_sample_every < 0 or self.retry_initial_s < 0:
            raise JournalConfigError(f"invalid journal options: {self}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise JournalConfigError("max_attempts must be >= 1 (or None: retry forever)")


@dataclass
class JournalStats:
    """What a sink did: records, rows inserted per table, watermarks, retries, commits."""

    records: int = 0
    watermarks: int = 0
    undecodable: int = 0
    batches: int = 0
    failed_writes: int = 0
    commit_failures: int = 0
    inserted: Counter[str] = field(default_factory=Counter)


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """Exponential backoff before retry ``attempt`` (1-based): initial, 2x, 4x, ... capped."""
    return float(min(max_s, initial_s * 2 ** max(attempt - 1, 0)))


class JournalSink:
    """Consumes decoded business records, writes batches, commits offsets after the database.

    The consumer is given (subscribed or assigned by the caller) and must have
    ``enable.auto.commit=false``; ``connect`` opens a database connection (called again after
    a connection is lost).
    """

    def __init__(
        self,
        consumer: Consumer,
        connect: Callable[[], psycopg.Connection[Any]],
        prefix: str,
        options: JournalOptions,
        *,
        registry: SchemaRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._consumer = consumer
        self._connect = connect
        self._prefix = prefix
        self._options = options
        self._registry = registry
        self._clock = clock
        self._sleep = sleep
        self._conn: psycopg.Connection[Any] | None = None
        self._failures = 0
        self.stats = JournalStats()
        #: (topic, partition) -> next offset to consume: start, then after each committed batch
        self.positions: dict[tuple[str, int], int] = {}
        self._eof: dict[tuple[str, int], int] = {}

    def reached(self, pending: Batch | None = None) -> dict[tuple[str, int], int]:
        """How far each partition is covered: committed batches, ``pending``, end-of-partition.

        An end-of-partition event counts only when no write is outstanding before it: a failed
        batch forgets the events it saw (:meth:`_seek_back`).
        """
        out = dict(self.positions)
        for key, offset in (pending.next if pending is not None else {}).items():
            out[key] = max(out.get(key, 0), offset)
        for key, offset in self._eof.items():
            out[key] = max(out.get(key, 0), offset)
        return out

    # ------------------------------------------------------------------------- consuming

    def poll_batch(self, done: Callable[[Batch], bool] | None = None) -> Batch:
        """Consume until the batch is full, ``max_batch_wait_s`` passed, or ``done(batch)``."""
        batch = Batch()
        deadline = self._clock() + self._options.max_batch_wait_s
        while batch.row_count < self._options.batch_size and self._clock() < deadline:
            if done is not None and done(batch):
                break
            messages = self._consumer.consume(num_messages=500, timeout=0.2)
            for msg in messages:
                self._take(batch, msg)
        return batch

    def _take(self, batch: Batch, msg: Message) -> None:
        from confluent_kafka import KafkaError

        error = msg.error()
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                # Everything before ``offset`` was delivered (trailing transaction markers
                # included, which no record covers); forgotten again if the batch fails.
                self._eof[(topic, partition)] = offset
                return
            if error.fatal() or not error.retriable():
                detail = kafka_io.describe(error)
                raise JournalConsumeError(f"consuming {topic}[{partition}]: {detail}")
            log.warning("consumer: %s", error)
            return
        batch.add_position(topic, partition, offset)
        if header_value(msg.headers(), WATERMARK_HEADER) is not None:
            batch.watermarks += 1
            return
        batch.records += 1
        batch.add_rows(self._rows_of(msg, batch))

    def _rows_of(self, msg: Message, batch: Batch) -> list[Row]:
        from streams.contracts.codec import topic_codec
        from streams.contracts.errors import ContractError

        name = msg.topic() or ""
        base = Topic(name.removeprefix(self._prefix))
        raw = msg.value() or b""
        try:
            record = topic_codec(base, self._registry).decode_record(raw)
        except ContractError as exc:
            batch.undecodable += 1
            return [
                undecodable_row(name, msg.partition() or 0, msg.offset() or 0, exc, raw, msg.key())
            ]
        return rows_for(record, self._options.trade_sample_every)

    # --------------------------------------------------------------------------- writing

    def flush(self, batch: Batch) -> bool:
        """Write ``batch`` then commit its offsets; False (and seek back) if the write failed.

        Raises :class:`JournalWriteError` once ``max_attempts`` writes of the same batch failed.
        """
        import psycopg

        if not batch:
            return True
        try:
            if batch.rows:
                inserted = write_batch(self._connection(), self._options.schema, batch)
                self.stats.inserted.update(inserted)
        except psycopg.Error as exc:
            self._on_write_failure(batch, exc)
            return False
        self._failures = 0
        self._commit(batch)
        self.stats.batches += 1
        self.stats.records += batch.records
        self.stats.watermarks += batch.watermarks
        self.stats.undecodable += batch.undecodable
        return True

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = self._connect()
            prepare_staging(conn, self._options.schema)
            self._conn = conn
        return self._conn

    def _on_write_failure(self, batch: Batch, exc: BaseException) -> None:
        """Roll back (done by the transaction block), rewind the consumer, back off."""
        self._failures += 1
        self.stats.failed_writes += 1
        if self._conn is not None and self._conn.broken:
            self._conn.close()
            self._conn = None
        self._seek_back(batch)
        attempts = self._options.max_attempts
        if attempts is not None and self._failures >= attempts:
            raise JournalWriteError(self._failures, batch.first, exc) from exc
        delay = backoff_s(self._failures, self._options.retry_initial_s, self._options.retry_max_s)
        log.warning(
            "journal write failed (attempt %d), retrying in %.1f s, offsets not committed: %s",
            self._failures, delay, exc,
        )  # fmt: skip
        self._sleep(delay)

    def _seek_back(self, batch: Batch) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        for (topic, partition), offset in batch.first.items():
            self._eof.pop((topic, partition), None)
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # Revoked by a rebalance meanwhile: its new owner starts from the committed
                # offset, which is at or before this batch, so nothing is lost either way.
                log.warning("seek %s[%d]@%d failed: %s", topic, partition, offset, exc)

    def _commit(self, batch: Batch) -> None:
        """Commit the batch's next offsets, synchronously, after the database commit."""
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(batch.next.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The rows are in the database: a redelivery after this is absorbed by the keys.
            self.stats.commit_failures += 1
            log.warning("offset commit failed (rows are written; redelivery is harmless): %s", exc)
        for key, offset in batch.next.items():
            self.positions[key] = max(self.positions.get(key, 0), offset)

    def close(self) -> None:
        """Close the database connection (the caller closes the consumer)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def journal_topics(prefix: str) -> list[str]:
    """Broker-side names of the journaled topics under ``prefix``."""
    return [topic_name(t, prefix) for t in JOURNALED_TOPICS]


def _consumer(bootstrap: str, group: str) -> Consumer:
    """Reads committed records; offsets are stored only by the sink's commits (after the DB)."""
    return kafka_io.consumer(
        kafka_io.ConsumerOptions(bootstrap, group, partition_eof=True, transactional=True)
    )


def default_group(prefix: str) -> str:
    """The journal's consumer group under ``prefix`` (apart from every stage's group)."""
    return f"{prefix}journal"


def _connector(dsn: str) -> Callable[[], psycopg.Connection[Any]]:
    def connect() -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(dsn, application_name="quantum-trader-journal")

    return connect


def _run_bounds(
    consumer: Consumer, topics: Sequence[str]
) -> tuple[list[TopicPartition], dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """(partitions, start positions, end offsets) of ``topics`` for this consumer's group."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    metadata = consumer.list_topics(timeout=10).topics
    parts = [
        TopicPartition(t, p)
        for t in topics
        if t in metadata and metadata[t].error is None
        for p in sorted(metadata[t].partitions)
    ]
    ends: dict[tuple[str, int], int] = {}
    starts: dict[tuple[str, int], int] = {}
    committed = {(c.topic, c.partition): c.offset for c in consumer.committed(parts, timeout=10)}
    for tp in parts:
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        key = (tp.topic, tp.partition)
        ends[key] = high
        start = committed.get(key, -1)
        starts[key] = start if start >= 0 else low
        tp.offset = start if start >= 0 else OFFSET_BEGINNING
    return parts, starts, ends


def journal_run(
    bootstrap: str,
    prefix: str,
    dsn: str,
    *,
    group: str | None = None,
    options: JournalOptions | None = None,
    registry: SchemaRegistry | None = None,
    migrate_first: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> JournalStats:
    """Journal a finished run's topics (under ``prefix``) up to their current end, then stop.

    Resumes from the group's committed offsets (default group ``<prefix>journal``), so a rerun
    after a failure continues where the last committed batch ended. For tests and the demo.
    """
    opts = options or JournalOptions(max_attempts=5)
    if migrate_first:
        migrate_dsn(dsn, opts.schema)
    consumer = _consumer(bootstrap, group or default_group(prefix))
    sink = JournalSink(consumer, _connector(dsn), prefix, opts, registry=registry, sleep=sleep)
    try:
        parts, starts, ends = _run_bounds(consumer, journal_topics(prefix))
        sink.positions.update(starts)
        consumer.assign(parts)

        def reached_end() -> bool:
            return covers(sink.reached(), ends)

        while not reached_end():
            batch = sink.poll_batch(done=lambda b: covers(sink.reached(b), ends))
            sink.flush(batch)
        return sink.stats
    finally:
        sink.close()
        consumer.close()


def covers(positions: Mapping[tuple[str, int], int], ends: Mapping[tuple[str, int], int]) -> bool:
    """Whether ``positions`` reach ``ends`` on every partition (absent = 0)."""
    return all(positions.get(key, 0) >= end for key, end in ends.items())


def journal_forever(
    bootstrap: str,
    prefix: str,
    dsn: str,
    *,
    stop: Callable[[], bool],
    group: str | None = None,
    options: JournalOptions | None = None,
    registry: SchemaRegistry | None = None,
    on_batch: Callable[[JournalStats], None] | None = None,
) -> JournalStats:
    """The long-running sink: subscribe (in a group: instances share partitions) until ``stop()``.

    Retries a failing database forever by default (``max_attempts=None``): the consumer stays
    where the last committed batch ended, so nothing is lost while the database is away.
    """
    opts = options or JournalOptions()
    migrate_dsn(dsn, opts.schema)
    consumer = _consumer(bootstrap, group or default_group(prefix))
    sink = JournalSink(consumer, _connector(dsn), prefix, opts, registry=registry)
    try:
        consumer.subscribe(journal_topics(prefix))
        while not stop():
            batch = sink.poll_batch(done=lambda _b: stop())
            if sink.flush(batch) and batch and on_batch is not None:
                on_batch(sink.stats)
        return sink.stats
    finally:
        sink.close()
        consumer.close()
