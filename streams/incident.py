"""Incident replay: a recorded stretch of a run, replayed with every stage as warm as it was.

``quantum-trader incident replay --from PREFIX --start T --end T`` (docs/incident-replay.md):

1. **Warm state.** For each stage, every recorded input record *before the start* (a data record
   whose event time is before it, a watermark at or below it; every operator command) is read
   from the recorded run's topics. The stage's latest stored document (its state changelog)
   whose ``applied`` offsets cover only such records is loaded, the recorded inputs after those
   offsets are handled in-process by the same handler (their outputs dropped: the stages
   downstream read them from the recorded topics too), and the result is the state the stage
   had when the range started. No stored document: the stage starts empty and handles its
   recorded inputs from their first offset.
2. **Rebase.** The warm documents are written to the state changelogs of a fresh prefix with
   ``applied`` cleared (the new topics start at offset 0) and ``seen`` renamed to the new
   topics; ``sent`` is kept, so an upstream stage that releases a buffered record from before
   the start sends it under its recorded ``qt-seq``, which the stage downstream already saw:
   the copy is dropped.
3. **Run.** ``market.ticks`` of ``[start, end)`` is copied into the prefix with watermarks of its
   own and the end-of-stream marker, a worker of the topology (with ``--set`` settings and
   ``--model-version`` versions) restores the seeded tables, processes the range and drains,
   and the run folder is written as the demo writes it.

Each stage is warmed from its own recorded inputs, so the stages need no common cut: what a
stage handled before the start is exactly what its upstream had sent with event time before it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from streams import kafka_io
from streams.adapters.market_files import TimeWindow
from streams.agents.base import Decoder, RawEvent, StageHandler
from streams.agents.durable import (
    DictStore,
    StageRuntime,
    assemble_state,
    decode_state,
    encode_state,
    state_changelog_topic,
    state_partitions,
    state_parts,
)
from streams.config import Settings
from streams.ordering import WATERMARK_HEADER, header_value
from streams.topics import Topic, topic_name
from streams.topology import STAGES, StageSpec

#: Events a warming stage handles per batch (the worker's batch size).
WARM_BATCH = 500


class IncidentError(RuntimeError):
    """An incident replay cannot be made; the message says what is missing."""


# -- the cut at the range's start (pure) ---------------------------------------------------
def before_start(event_time_ms: int, is_watermark: bool, start_ms: int) -> bool:
    """Whether a recorded input record precedes the range: a data record of an earlier event
    time, or a watermark (an exclusive bound) that promises nothing past the start."""
    return event_time_ms <= start_ms if is_watermark else event_time_ms < start_ms


@dataclass
class InputCut:
    """One recorded input partition up to the range's start."""

    key: str  # "topic/partition", as a stage's ``applied`` ledger names it
    events: list[RawEvent] = field(default_factory=list)  # before the start, in offset order
    #: every record at or below this offset is before the start (-1: not even the first)
    clean_through: int = -1
    _dirty: bool = False

    def add(self, event: RawEvent, before: bool) -> None:
        """The partition's next record (in offset order) and whether it precedes the start."""
        if before:
            self.events.append(event)
            if not self._dirty:
                self.clean_through = event.offset
        else:
            self._dirty = True


def covers_only_the_past(document: Mapping[str, Any], cuts: Mapping[str, InputCut]) -> bool:
    """Whether a stored document applied nothing at or after the range's start."""
    for key, offset in document["applied"].items():
        cut = cuts.get(key)
        if cut is None or int(offset) > cut.clean_through:
            return False
    return True


def rebase_document(
    document: Mapping[str, Any], old_prefix: str, new_prefix: str
) -> dict[str, Any]:
    """A warm document for the same stage under ``new_prefix``: nothing applied from its new
    (empty) topics, upstream sequence numbers seen renamed to them, its own numbering kept."""

    def renamed(key: str) -> str:
        return new_prefix + key.removeprefix(old_prefix) if key.startswith(old_prefix) else key

    return {
        **document,
        "applied": {},
        "seen": {renamed(k): v for k, v in document["seen"].items()},
    }


def in_arrival_order(cuts: Iterable[InputCut]) -> Iterator[RawEvent]:
    """The events of several partitions interleaved by event time, each partition's in offset
    order (merges release by event time whatever the interleaving; this keeps buffers small)."""

    def timed(cut: InputCut) -> Iterator[tuple[int, RawEvent]]:
        for event in cut.events:
            yield _event_time(event), event

    for _t, event in heapq.merge(*(timed(c) for c in cuts), key=lambda item: item[0]):
        yield event


def _event_time(event: RawEvent) -> int:
    """A watermark's value, else the record's timestamp (event time: every stage stamps its
    records so); a broken watermark counts as a record, which the stage dead-letters."""
    wm = event.headers.get(WATERMARK_HEADER)
    try:
        return int(wm) if wm is not None else int(event.headers.get(_TIMESTAMP, b"0"))
    except ValueError:
        return int(event.headers.get(_TIMESTAMP, b"0"))


#: Pseudo header carrying a read record's timestamp into the cut (never sent anywhere).
_TIMESTAMP = "qt-incident-timestamp"


def warm_stage(
    spec: StageSpec,
    build: Callable[[], StageHandler],
    decoder: Decoder,
    stored: Mapping[int, Mapping[str, Any]],
    cuts: Sequence[InputCut],
) -> dict[int, dict[str, Any]]:
    """Each instance's document at the range's start: ``stored`` (documents that cover only
    the past) with the recorded inputs after their offsets handled; outputs are dropped."""
    store = DictStore()
    for partition, document in stored.items():
        store.save(partition, encode_state(document))
    runtime = StageRuntime(spec, build, store, decoder)
    for partition in stored:
        runtime.instance(partition)
    batch: list[RawEvent] = []
    for event in in_arrival_order(cuts):
        batch.append(event)  # ``admit`` skips what a stored document applied already
        if len(batch) >= WARM_BATCH:
            runtime.handle(batch)
            batch = []
    runtime.handle(batch)
    return {p: inst.to_document() for p, inst in sorted(runtime.instances.items())}


# -- reading the recorded run ---------------------------------------------------------------
def _raw(msg: Any) -> RawEvent:
    headers = {k: (v if isinstance(v, bytes) else str(v).encode()) for k, v in msg.headers() or ()}
    headers[_TIMESTAMP] = str(msg.timestamp()[1]).encode()
    return RawEvent(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value() or b"",
                    headers)  # fmt: skip


def _partition_count(bootstrap: str, topic: str) -> int:
    """Partitions of ``topic`` on the broker (0: it does not exist). All topics are listed:
    asking for one by name lets a broker that auto-creates topics create it."""
    admin = kafka_io.admin_client(bootstrap, quiet=True)
    return kafka_io.partition_counts(admin, 30.0).get(topic, 0)


def read_cuts(bootstrap: str, topic: str, start_ms: int, gates: bool) -> dict[str, InputCut]:
    """Every partition of recorded input ``topic`` up to the start. A non-gating input (operator
    commands) is taken whole: each record applies at its own event time, whenever it was sent."""
    from streams.demo import topic_messages

    partitions = _partition_count(bootstrap, topic)
    cuts = {f"{topic}/{p}": InputCut(f"{topic}/{p}") for p in range(partitions)}
    if not partitions:
        return cuts
    for msg in topic_messages(bootstrap, topic, partitions, copies=True, watermarks=True):
        event = _raw(msg)
        is_wm = header_value(msg.headers(), WATERMARK_HEADER) is not None
        before = not gates or before_start(_event_time(event), is_wm, start_ms)
        cuts[f"{topic}/{event.partition}"].add(event, before)
    return cuts


def stored_documents(
    bootstrap: str, changelog: str, cuts: Mapping[str, InputCut]
) -> dict[int, dict[str, Any]]:
    """Per instance, the latest document of ``changelog`` that covers only the past.

    A changelog keeps every version it wrote until the broker compacts it; versions are read in
    order, and an instance's versions after the first that applied a later record are skipped.
    """
    from streams.demo import topic_messages

    partitions = _partition_count(bootstrap, changelog)
    found: dict[int, dict[str, Any]] = {}
    values: dict[int, dict[bytes, bytes]] = {}
    passed: set[int] = set()
    if not partitions:
        return found
    for msg in topic_messages(bootstrap, changelog, partitions, copies=True):
        key, value = msg.key(), msg.value()
        if key is None or value is None:
            continue
        part = int(key.split(b"/", 1)[0])
        kept = values.setdefault(part, {})
        kept[key] = value
        if b"/" in key or part in passed:
            continue
        blob = assemble_state(part, kept.get)
        document = None if blob is None else decode_state(blob)
        if document is not None and covers_only_the_past(document, cuts):
            found[part] = document
        else:
            passed.add(part)
    return found


def seed_changelog(
    bootstrap: str, topic: str, partitions: int, documents: Mapping[int, Mapping[str, Any]],
    replication: int,
) -> None:  # fmt: skip
    """Write ``documents`` into a fresh state changelog, as the worker's table would."""
    kafka_io.ensure_topics(bootstrap, {topic: partitions}, replication_factor=replication,
                           keep_forever=True)  # fmt: skip
    producer = kafka_io.producer(kafka_io.ProducerOptions(bootstrap, idempotence=False))
    tracker = kafka_io.DeliveryTracker()
    for partition, document in sorted(documents.items()):
        for key, value in state_parts(partition, encode_state(document), None):
            kafka_io.produce(producer, topic, key, value, partition=partition,
                             on_delivery=tracker)  # fmt: skip
    kafka_io.flush(producer, tracker, timeout_s=60.0)


# -- the whole warm-up ----------------------------------------------------------------------
@dataclass(frozen=True)
class StageWarmth:
    """How one stage was warmed: documents loaded, recorded inputs handled."""

    stage: str
    stored: int  # instances loaded from a stored document
    instances: int  # instances seeded
    read: int  # recorded input records (and watermarks) before the start


def warm_state(
    settings: Settings, bootstrap: str, source_prefix: str, target_prefix: str, start_ms: int,
    stages: Sequence[StageSpec] = STAGES,
) -> list[StageWarmth]:  # fmt: skip
    """Seed every stage's state changelog under ``target_prefix`` with its state at
    ``start_ms`` in the run recorded under ``source_prefix`` (see the module doc)."""
    from streams.agents.registry import stage_builders

    builders = stage_builders(settings, stages)
    decoder = Decoder(source_prefix)
    read: dict[str, dict[str, InputCut]] = {}
    summary: list[StageWarmth] = []
    for spec in stages:
        cuts: dict[str, InputCut] = {}
        for inp in spec.inputs:
            name = topic_name(inp.topic, source_prefix)
            if name not in read:
                read[name] = read_cuts(bootstrap, name, start_ms, inp.gates)
            cuts.update(read[name])
        if not any(c.events for c in cuts.values()) and spec.inputs[0].topic is Topic.MARKET_TICKS:
            raise IncidentError(
                f"no recorded {topic_name(Topic.MARKET_TICKS, source_prefix)} before the start: "
                "check --from (the recorded run's topic prefix, with its dot) and --start"
            )
        changelog = state_changelog_topic(settings.app_id, source_prefix, spec.name)
        stored = stored_documents(bootstrap, changelog, cuts)
        warm = warm_stage(spec, builders[spec.name], decoder, stored, list(cuts.values()))
        rebased = {p: rebase_document(d, source_prefix, target_prefix) for p, d in warm.items()}
        partitions = state_partitions(spec, settings.partitions)
        target = state_changelog_topic(settings.app_id, target_prefix, spec.name)
        seed_changelog(bootstrap, target, partitions, rebased, settings.replication_factor)
        read_count = sum(len(c.events) for c in cuts.values())
        summary.append(StageWarmth(spec.name, len(stored), len(rebased), read_count))
    return summary


@dataclass(frozen=True)
class IncidentPlan:
    """What to replay: the recorded run's prefix, the range, where the replay goes."""

    source_prefix: str
    window: TimeWindow
    into: str
    run_dir: Path
    timeout_s: float = 1800.0


def run_incident(
    recorded: Settings, replay: Settings, plan: IncidentPlan, console: Console | None = None
) -> Any:
    """Warm the stages (``recorded``: the settings the run was recorded with), then run the
    range on a worker with ``replay``'s settings; the :class:`~streams.demo.DemoResult`."""
    from streams.demo import DemoPlan, RecordedTicks, run_demo

    console = console or Console()
    start_ms = plan.window.start_ms
    if start_ms is None or plan.window.end_ms is None or plan.window.end_ms <= start_ms:
        raise IncidentError("an incident replay needs --start before --end")
    if plan.into == plan.source_prefix:
        raise IncidentError(f"--into {plan.into!r} is the recorded run's prefix")
    bootstrap = recorded.kafka_bootstrap
    if not bootstrap:
        raise IncidentError(
            "an incident replay reads a recorded run's topics: pass --bootstrap HOST:PORT or "
            "set QT_KAFKA_BOOTSTRAP (the broker the run was recorded on)"
        )
    ticks = topic_name(Topic.MARKET_TICKS, plan.into)
    if _partition_count(bootstrap, ticks):
        raise IncidentError(f"{ticks} exists already: --into must name a fresh prefix")

    def seed(bootstrap: str, prefix: str) -> None:
        for s in warm_state(recorded, bootstrap, plan.source_prefix, prefix, start_ms):
            console.print(
                f"[bold]warm[/] {s.stage}: {s.instances} instance(s), {s.stored} from stored "
                f"state, {s.read:,} recorded input record(s) read"
            )

    source = RecordedTicks(topic_name(Topic.MARKET_TICKS, plan.source_prefix), plan.window)
    demo = DemoPlan(recorded=source, prefix=plan.into, run_dir=plan.run_dir,
                    timeout_s=plan.timeout_s, before_workers=seed)  # fmt: skip
    settings = replay.model_copy(update={"kafka_bootstrap": bootstrap})
    return run_demo(settings, demo, console)
