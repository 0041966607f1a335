"""Stage state that survives a crash, a restart and a rebalance (docs/determinism.md).

A stage runs one **instance** per state partition: the input partition for a per-symbol stage,
0 for a portfolio-wide one. An instance is its handler plus three ledgers that make
at-least-once delivery harmless:

- ``applied``: the last input offset applied per input partition. Kafka redelivers from the
  committed offset, which may trail the state: a record at or below ``applied`` is skipped.
- ``seen``: the last ``qt-seq`` handled per input partition and upstream source. An upstream
  stage that crashed after sending re-sends the same records with the same sequence numbers
  (it restarts from the state it had, and everything it computes is deterministic): the copies
  are dropped.
- ``sent``: the last ``qt-seq`` this instance gave per output topic, so its own re-sends repeat
  their numbers.

The whole instance is one JSON document (zlib-compressed, stored in parts below the broker's
message limit) in the stage's Faust table, under the instance's partition, written at a
**flush**: after the outputs it covers are on the broker and before the offsets of the inputs it
covers may be committed (the agent holds those acks until then, see :mod:`streams.app`). So a
record a merge still buffers is in the table or its offset is not committed, and a restart
restores exactly the state that matches the committed offsets.

Reading it back, outside the worker (the dashboard, tests, tools): :func:`state_changelog_topic`
names a stage's changelog, :class:`StateChangelog` folds its records into each instance's latest
complete document, and :func:`read_stage_documents` reads a run's changelog to its end.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from opentelemetry.context import Context

from streams.agents.base import Decoder, Emitter, RawEvent, SourcePosition, StageHandler
from streams.agents.dispatch import dispatch
from streams.contracts.codec import topic_codec
from streams.observability import tracing
from streams.observability.metrics import metrics
from streams.ordering import SEQ_HEADER, SOURCE_HEADER, WATERMARK_HEADER, Redeliveries
from streams.topology import Partitioning, StageSpec

#: Version of the state document; a table written by another version is refused, not guessed.
STATE_FORMAT = 1


class StateFormatError(RuntimeError):
    """A stored state document this code cannot read (another format, or corrupt)."""


class StateStore(Protocol):
    """Where instances keep their state: a Faust table in the worker, a dict in tests."""

    def load(self, partition: int) -> bytes | None:
        """The stored document of ``partition`` (None: never written)."""

    def save(self, partition: int, blob: bytes) -> None:
        """Store ``blob`` as ``partition``'s document."""


# -- storage ----------------------------------------------------------------------------------
#: Largest part of a stored document: well below the brokers' default 1 MB message limit.
PART_BYTES = 512 * 1024


def state_head_key(partition: int) -> bytes:
    """Table key of instance ``partition``'s head: which slot holds its document, in how many
    parts."""
    return str(partition).encode()


def _part_key(partition: int, slot: int, index: int) -> bytes:
    return f"{partition}/{slot}/{index}".encode()


def state_parts(
    partition: int, blob: bytes, current_head: bytes | None, part_bytes: int = PART_BYTES
) -> list[tuple[bytes, bytes]]:
    """The table writes that store ``blob``: its parts, then the head that points at them.

    Two slots alternate: the parts go to the slot the current head does not name, and the head
    is written last, on the same changelog partition, so a crash in between leaves the old head
    over intact old parts. Keys are reused, so a compacted changelog stays bounded.
    """
    slot = 0
    if current_head is not None:
        slot = 1 - int(json.loads(current_head)["slot"])
    parts = [blob[i : i + part_bytes] for i in range(0, len(blob), part_bytes)] or [b""]
    digest = hashlib.sha256(blob).hexdigest()
    head = json.dumps({"slot": slot, "parts": len(parts), "sha256": digest}).encode()
    writes = [(_part_key(partition, slot, i), part) for i, part in enumerate(parts)]
    return [*writes, (state_head_key(partition), head)]


def assemble_state(partition: int, get: Callable[[bytes], bytes | None]) -> bytes | None:
    """The document :func:`state_parts` stored for ``partition`` (None: nothing stored)."""
    raw = get(state_head_key(partition))
    if raw is None:
        return None
    try:
        head = json.loads(raw)
        slot, count, digest = int(head["slot"]), int(head["parts"]), str(head["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StateFormatError(f"unreadable state head of partition {partition}: {exc}") from None
    parts = [get(_part_key(partition, slot, i)) for i in range(count)]
    if any(part is None for part in parts):
        raise StateFormatError(f"state of partition {partition} is missing parts of slot {slot}")
    blob = b"".join(p for p in parts if p is not None)
    if hashlib.sha256(blob).hexdigest() != digest:
        raise StateFormatError(f"state of partition {partition} does not match its sha256")
    return blob


class DictStore:
    """A :class:`StateStore` in a dict, with the table's part layout (tests, tools)."""

    def __init__(self, part_bytes: int = PART_BYTES) -> None:
        self.data: dict[bytes, bytes] = {}
        self.part_bytes = part_bytes

    def load(self, partition: int) -> bytes | None:
        """The stored document of ``partition``."""
        return assemble_state(partition, self.data.get)

    def save(self, partition: int, blob: bytes) -> None:
        """Store ``blob``."""
        current = self.data.get(state_head_key(partition))
        self.data.update(state_parts(partition, blob, current, self.part_bytes))


# -- what handlers store ---------------------------------------------------------------------
def context_to_state(ctx: Context | None) -> str | None:
    """A trace context as its ``traceparent`` (None: not traced)."""
    if ctx is None:
        return None
    header = tracing.traceparent_header(tracing.span_context_of(ctx))
    return None if header is None else header[1].decode()


def context_from_state(value: str | None) -> Context | None:
    """Inverse of :func:`context_to_state`."""
    if value is None:
        return None
    return tracing.extract_context({tracing.TRACEPARENT: value.encode()})


def record_to_state(topic: str, record: Any) -> str:
    """A contract record as its topic's wire bytes (base64): exact, and versioned by schema."""
    return bytes_to_state(topic_codec(topic).encode(record))


def bytes_to_state(raw: bytes) -> str:
    """A record's wire bytes as read, for :func:`record_from_state`."""
    return base64.b64encode(raw).decode()


def record_from_state(topic: str, value: str) -> Any:
    """Inverse of :func:`record_to_state`."""
    return topic_codec(topic).decode_record(base64.b64decode(value))


def position_to_state(position: SourcePosition | None) -> list[Any] | None:
    """Where a buffered record was read (for its dead letter at release)."""
    if position is None:
        return None
    key = None if position.key is None else base64.b64encode(position.key).decode()
    return [position.topic, position.partition, position.offset, key]


def position_from_state(value: list[Any] | None) -> SourcePosition | None:
    """Inverse of :func:`position_to_state`."""
    if value is None:
        return None
    topic, partition, offset, key = value
    return SourcePosition(topic, partition, offset, None if key is None else base64.b64decode(key))


def encode_state(document: Mapping[str, Any]) -> bytes:
    """The stored form of a state document: compact JSON (floats round-trip exactly), zlib."""
    text = json.dumps(document, separators=(",", ":"), allow_nan=True)
    return zlib.compress(text.encode(), 1)


def decode_state(blob: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_state`; :class:`StateFormatError` for anything else."""
    try:
        document = json.loads(zlib.decompress(blob))
    except (zlib.error, ValueError) as exc:
        raise StateFormatError(f"unreadable stage state ({len(blob)} bytes): {exc}") from None
    if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise StateFormatError(f"stage state format {found!r}, this code reads {STATE_FORMAT}")
    return document


# -- instances -------------------------------------------------------------------------------
@dataclass(slots=True)
class Instance:
    """One stage instance: its handler and the ledgers of what it applied, saw and sent."""

    handler: StageHandler
    applied: dict[str, int] = field(default_factory=dict)  # "topic/partition" -> offset
    seen: Redeliveries = field(default_factory=Redeliveries)
    sent: dict[str, int] = field(default_factory=dict)  # "topic|source" -> last seq

    def admit(self, event: RawEvent) -> bool:
        """Whether ``event`` is new to this instance: not applied before, not a re-sent copy."""
        key = f"{event.topic}/{event.partition}"
        if event.offset <= self.applied.get(key, -1):
            return False
        self.applied[key] = event.offset
        if WATERMARK_HEADER in event.headers:
            return True  # a repeated watermark is harmless (merges keep the highest)
        headers = event.headers
        return self.seen.fresh(
            event.topic, event.partition, headers.get(SOURCE_HEADER), headers.get(SEQ_HEADER)
        )

    def number(self, out: Emitter) -> None:
        """Give each data record of ``out`` the next sequence number of its topic and source."""
        items = out.items
        for i, item in enumerate(items):
            if item.value is None:
                continue
            key = f"{item.topic.value}|{item.source}"
            seq = self.sent[key] = self.sent.get(key, 0) + 1
            items[i] = replace(item, seq=seq)

    def to_document(self) -> dict[str, Any]:
        """The instance as one JSON document."""
        to_state = getattr(self.handler, "to_state", None)
        return {
            "format": STATE_FORMAT,
            "stage": self.handler.name,
            "applied": self.applied,
            "seen": self.seen.last,
            "sent": self.sent,
            "handler": None if to_state is None else to_state(),
        }

    @classmethod
    def from_document(cls, handler: StageHandler, document: Mapping[str, Any]) -> Instance:
        """Inverse of :meth:`to_document`, onto a freshly built ``handler``."""
        if document.get("stage") != handler.name:
            raise StateFormatError(
                f"state of stage {document.get('stage')!r} offered to {handler.name!r}"
            )
        state = document.get("handler")
        if state is not None:
            handler.load_state(state)  # type: ignore[attr-defined]
        return cls(
            handler,
            {k: int(v) for k, v in document["applied"].items()},
            Redeliveries({k: int(v) for k, v in document["seen"].items()}),
            {k: int(v) for k, v in document["sent"].items()},
        )


class StageRuntime:
    """The instances of one stage in a worker, their state in a :class:`StateStore`.

    Instances are built on the first record of their partition, from the stored state when
    there is one. :meth:`handle` is synchronous and deterministic; :meth:`flush` hands the
    changed instances' documents to the store; :meth:`forget` drops instances whose partitions
    went to another worker (their next owner restores them from the store).
    """

    def __init__(
        self,
        spec: StageSpec,
        build: Callable[[], StageHandler],
        store: StateStore,
        decoder: Decoder,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self._build = build
        self._store = store
        self._decoder = decoder
        self._single = spec.partitioning is Partitioning.SINGLE
        self.instances: dict[int, Instance] = {}
        self._dirty: set[int] = set()

    def instance_of(self, partition: int) -> int:
        """The state partition an input partition belongs to."""
        return 0 if self._single else partition

    def instance(self, partition: int) -> Instance:
        """Instance ``partition``, restored from the store on first use."""
        inst = self.instances.get(partition)
        if inst is None:
            handler = self._build()
            blob = self._store.load(partition)
            inst = (
                Instance(handler)
                if blob is None
                else Instance.from_document(handler, decode_state(blob))
            )
            self.instances[partition] = inst
        return inst

    def handle(self, events: Sequence[RawEvent]) -> list[Emitter]:
        """One batch through the instances it concerns, in order; their numbered outputs."""
        groups: dict[int, list[RawEvent]] = {}
        for event in events:
            groups.setdefault(self.instance_of(event.partition), []).append(event)
        outs: list[Emitter] = []
        for partition, group in groups.items():
            inst = self.instance(partition)
            fresh = [e for e in group if inst.admit(e)]
            if len(fresh) < len(group):
                metrics().redelivered(self.name, len(group) - len(fresh))
            out = Emitter(self.name, instance=partition)
            dispatch(inst.handler, self._decoder, fresh, out)
            inst.number(out)
            outs.append(out)
            self._dirty.add(partition)
        return outs

    def flush(self) -> int:
        """Store every instance changed since the last flush; how many were stored."""
        dirty, self._dirty = self._dirty, set()
        for partition in sorted(dirty):
            inst = self.instances.get(partition)
            if inst is not None:
                self._store.save(partition, encode_state(inst.to_document()))
        return len(dirty)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the instances of ``partitions`` (and their unflushed changes)."""
        for partition in partitions:
            self.instances.pop(partition, None)
            self._dirty.discard(partition)


# -- reading stored state back (tools: the dashboard, tests) --------------------------------
def app_name(app_id: str, prefix: str) -> str:
    """The Faust app's name for a run: ``app_id``, then ``-<prefix without its dot>``."""
    return f"{app_id}-{prefix.rstrip('.')}" if prefix else app_id


def state_table_name(stage: str) -> str:
    """The Faust table that holds ``stage``'s instances."""
    return f"state-{stage}"


def state_changelog_topic(app_id: str, prefix: str, stage: str) -> str:
    """The changelog topic of ``stage``'s table (Faust's ``<app>-<table>-changelog``)."""
    return f"{app_name(app_id, prefix)}-{state_table_name(stage)}-changelog"


def state_partitions(spec: StageSpec, partitions: int) -> int:
    """Partitions of ``spec``'s table (and changelog): one for a single-instance stage."""
    return 1 if spec.partitioning is Partitioning.SINGLE else partitions


def faust_topics(
    app_id: str, prefix: str, partitions: int, stages: Iterable[StageSpec]
) -> dict[str, int]:
    """The topics Faust creates itself at start -> partitions: the stages' state changelogs
    (compacted) and its assignor's leader topic (``<app>-__assignor-__leader``)."""
    out = {
        state_changelog_topic(app_id, prefix, s.name): state_partitions(s, partitions)
        for s in stages
    }
    out[f"{app_name(app_id, prefix)}-__assignor-__leader"] = 1
    return out


@dataclass(frozen=True, slots=True)
class StoredHead:
    """Where an instance's latest stored document is, as its head record says."""

    partition: int
    offset: int  # the head record's offset in the changelog
    written_ms: int | None  # the head record's timestamp: when the flush wrote it
    parts: int
    size_bytes: int | None  # the stored (compressed) document; None: parts not read yet


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """An instance's latest stored document, decoded, with its head."""

    head: StoredHead
    document: dict[str, Any]


class StateChangelog:
    """A state changelog's records folded into each instance's latest stored document.

    Feed it the records in changelog order (:meth:`add`); the latest value per key wins, as in
    the table. A head is written after its parts on the same partition, so any prefix of the
    log names complete documents. ``keep_documents=False`` keeps only the parts' sizes (enough
    for :meth:`heads`). Documents are decoded on demand, once per head.
    """

    def __init__(self, keep_documents: bool = True) -> None:
        self.keep_documents = keep_documents
        self._values: dict[bytes, bytes] = {}
        self._sizes: dict[bytes, int] = {}
        self._heads: dict[int, tuple[int, int | None, bytes]] = {}  # offset, timestamp, head
        self._decoded: dict[int, StoredDocument] = {}
        self.records = 0

    def add(
        self, offset: int, key: bytes | None, value: bytes | None, timestamp_ms: int | None = None
    ) -> None:
        """One changelog record (a tombstone, ``value`` None, removes its key)."""
        if key is None:
            return
        self.records += 1
        head_partition = None if b"/" in key else int(key)
        if head_partition is not None:
            if value is None:
                self._heads.pop(head_partition, None)
            else:
                self._heads[head_partition] = (offset, timestamp_ms, value)
            self._decoded.pop(head_partition, None)
            return
        if value is None:
            self._values.pop(key, None)
            self._sizes.pop(key, None)
            return
        self._sizes[key] = len(value)
        if self.keep_documents:
            self._values[key] = value

    def _head(self, partition: int) -> StoredHead:
        offset, written_ms, raw = self._heads[partition]
        try:
            head = json.loads(raw)
            slot, count = int(head["slot"]), int(head["parts"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StateFormatError(
                f"unreadable state head of partition {partition}: {exc}"
            ) from None
        sizes = [self._sizes.get(_part_key(partition, slot, i)) for i in range(count)]
        size = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
        return StoredHead(partition, offset, written_ms, count, size)

    def heads(self) -> dict[int, StoredHead]:
        """Each instance's latest head, by partition."""
        return {p: self._head(p) for p in sorted(self._heads)}

    def documents(self) -> dict[int, StoredDocument]:
        """Each instance's latest document, decoded (:class:`StateFormatError` if corrupt)."""
        if not self.keep_documents:
            raise StateFormatError("this changelog fold keeps sizes only, not documents")
        for partition, (_offset, _ts, raw) in self._heads.items():
            if partition in self._decoded:
                continue
            head_key = state_head_key(partition)

            def get(key: bytes, head_key: bytes = head_key, raw: bytes = raw) -> bytes | None:
                return raw if key == head_key else self._values.get(key)

            blob = assemble_state(partition, get)
            if blob is not None:
                self._decoded[partition] = StoredDocument(self._head(partition), decode_state(blob))
        return dict(sorted(self._decoded.items()))


def read_state_changelog(
    bootstrap: str, topic: str, *, keep_documents: bool = True, timeout_s: float = 30.0
) -> StateChangelog:
    """Every record of changelog ``topic`` up to its end now, folded (see :class:`StateChangelog`).

    A pure reader: assigned partitions, nothing committed. A missing topic reads as empty (the
    stage never flushed). Ends at each partition's end-of-partition event, not at ListOffsets'
    answer (short on the embedded Tansu broker; :func:`streams.demo.topic_messages`).
    """
    import time
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    from streams import kafka_io

    fold = StateChangelog(keep_documents)
    group = f"state-reader-{uuid.uuid4().hex[:8]}"
    consumer = kafka_io.consumer(kafka_io.ConsumerOptions(bootstrap, group, partition_eof=True))
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return fold
        partitions = sorted(meta.partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        pending = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout_s} s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise kafka_io.KafkaIOError(f"reading {topic}: {kafka_io.describe(error)}")
                if (msg.offset() or 0) >= ends[msg.partition() or 0]:
                    pending.discard(msg.partition() or 0)
                continue
            kind, ts = msg.timestamp()
            fold.add(msg.offset() or 0, msg.key(), msg.value(), ts if kind else None)
    finally:
        consumer.close()
    return fold


def read_stage_documents(
    bootstrap: str, app_id: str, prefix: str, stage: str, timeout_s: float = 30.0
) -> dict[int, StoredDocument]:
    """The latest stored document of each instance of ``stage`` in the run ``prefix``."""
    topic = state_changelog_topic(app_id, prefix, stage)
    return read_state_changelog(bootstrap, topic, timeout_s=timeout_s).documents()
