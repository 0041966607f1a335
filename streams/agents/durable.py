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
            out = Emitter(self.name)
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
