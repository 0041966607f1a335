"""An in-memory Kafka for the durable-state tests: the whole topology, crashes included.

Every declared stage runs through its real :class:`~streams.agents.durable.StageRuntime` (real
handlers, codecs and models) over an append-only log of partitions, with Kafka's delivery rules:
a consumer resumes from its committed offset, offsets are committed only at a flush (after the
flush stored the state), and what a stage sent before a crash stays in the log (at-least-once).
A "crash" throws away a worker's runtimes, positions and everything it had not flushed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.adapters.market_files import TimeWindow, open_data_set
from streams.adapters.replay.files import KafkaTickSink
from streams.agents.base import Decoder, Emitter, RawEvent
from streams.agents.durable import DictStore, StageRuntime
from streams.agents.registry import stage_builders
from streams.config import Settings
from streams.contracts.codec import topic_codec
from streams.contracts.records import TickReceived
from streams.kafka_io import partition_for
from streams.ordering import SEQ_HEADER, SOURCE_HEADER, WATERMARK_HEADER, Redeliveries
from streams.topics import Topic
from streams.topology import STAGES, partitions_of

TP = tuple[str, int]


class MemoryLog:
    """Topic partitions as lists of :class:`RawEvent`; a duck-typed confluent producer too."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.log: dict[TP, list[RawEvent]] = {}

    def partitions_of(self, topic: str) -> int:
        return partitions_of(Topic(topic), self.partitions)

    def append(
        self, topic: str, partition: int | None, key: bytes | None, value: bytes, headers: dict
    ) -> None:
        if partition is None:
            partition = partition_for((key or b"").decode(), self.partitions_of(topic))
        events = self.log.setdefault((topic, partition), [])
        events.append(RawEvent(topic, partition, len(events), key, value, headers))

    # -- what kafka_io.produce calls on a confluent Producer ------------------------------------
    def produce(self, topic: str, value: bytes | None, key: bytes | None, **kw: Any) -> None:
        headers = {k: v for k, v in kw.get("headers") or ()}
        self.append(topic, kw.get("partition"), key, value or b"", headers)
        on_delivery = kw.get("on_delivery")
        if on_delivery is not None:
            on_delivery(None, _Delivered(topic))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def send(self, out: Emitter) -> None:
        """What :class:`streams.app.Sender` sends for a handler's output."""
        for item in out.items:
            headers = {SOURCE_HEADER: item.source.encode()}
            if item.watermark is not None:
                headers[WATERMARK_HEADER] = str(item.watermark).encode()
                value = b""
            else:
                value = item.encoded or topic_codec(item.topic).encode(item.value)
            if item.seq is not None:
                headers[SEQ_HEADER] = str(item.seq).encode()
            self.append(
                item.topic.value, item.partition, item.key.encode() if item.key else None, value,
                headers,
            )  # fmt: skip

    def records(self, topic: Topic) -> Iterator[Any]:
        """Every data record of ``topic``, one copy of each (what a report reader sees)."""
        codec = topic_codec(topic)
        copies = Redeliveries()
        for p in range(self.partitions_of(topic.value)):
            for e in self.log.get((topic.value, p), []):
                if WATERMARK_HEADER in e.headers:
                    continue
                if copies.fresh(
                    e.topic, p, e.headers.get(SOURCE_HEADER), e.headers.get(SEQ_HEADER)
                ):
                    yield codec.decode_record(e.value)

    def count(self, topic: Topic) -> int:
        """Data records in ``topic``, copies included."""
        return sum(
            1
            for p in range(self.partitions_of(topic.value))
            for e in self.log.get((topic.value, p), [])
            if WATERMARK_HEADER not in e.headers
        )


@dataclass
class _Delivered:
    _topic: str

    def topic(self) -> str:
        return self._topic


def replay(log: MemoryLog, data: Path, window: TimeWindow, symbols: Sequence[str] = ()) -> None:
    """The file replay into ``market.ticks``, watermarks and end of stream included."""
    from streams.contracts.codec import topic_codec as codec_of

    ticks, dead = codec_of(Topic.MARKET_TICKS), codec_of(Topic.DEADLETTER)
    sink = KafkaTickSink(
        log,
        "market.ticks",
        "deadletter",
        ticks.encode,
        dead.encode,
        log.partitions,  # type: ignore[arg-type]
    )
    _, items = open_data_set(data, symbols, window)
    last = 0
    for item in items:
        if isinstance(item, TickReceived):
            sink.send_tick(item)
            last = item.event_time_ms
    sink.watermarks.send(last)
    sink.end_stream()


@dataclass
class Worker:
    """One worker's stages over the log; ``committed`` and the stores outlive it."""

    log: MemoryLog
    settings: Settings
    stores: dict[str, DictStore]
    committed: dict[tuple[str, TP], int]
    rng: random.Random = field(default_factory=random.Random)
    batch: int = 50
    flush_chance: float = 1 / 3
    builders: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        decoder = Decoder("")
        self.runtimes = {
            s.name: StageRuntime(s, self.builders[s.name], self.stores[s.name], decoder)
            for s in STAGES
        }
        self.position = dict(self.committed)

    def _inputs(self, stage: str) -> list[TP]:
        spec = self.runtimes[stage].spec
        return [
            (t.value, p) for t in spec.input_topics for p in range(self.log.partitions_of(t.value))
        ]

    def step(self, stage: str) -> int:
        """One batch of ``stage``: up to ``batch`` events taken across its input partitions."""
        rng = self.rng
        events: list[RawEvent] = []
        tps = self._inputs(stage)
        rng.shuffle(tps)
        for tp in tps:
            at = self.position.get((stage, tp), 0)
            taken = self.log.log.get(tp, [])[at : at + rng.randint(1, self.batch)]
            events.extend(taken)
            self.position[(stage, tp)] = at + len(taken)
        if not events:
            return 0
        for out in self.runtimes[stage].handle(events):
            self.log.send(out)
        if rng.random() < self.flush_chance:
            self.flush(stage)
        return len(events)

    def flush(self, stage: str) -> None:
        """Store the stage's state, then commit what it covers."""
        self.runtimes[stage].flush()
        for key, offset in self.position.items():
            if key[0] == stage:
                self.committed[key] = offset


def run_topology(
    settings: Settings,
    data: Path,
    window: TimeWindow,
    *,
    symbols: Sequence[str] = (),
    seed: int = 1,
    crash_chance: float = 0.0,
    commands: Sequence[Any] = (),
    universe: Sequence[Any] = (),
    model_events: Sequence[Any] = (),
) -> tuple[MemoryLog, int]:
    """The whole topology over the replayed data; after any batch, a crash with this chance.

    ``commands`` (operator HALT/RESUME) are in ``control.commands`` and ``model_events``
    (PROMOTED / ROLLED_BACK) in ``models.events`` before any tick, as when an operator
    schedules them ahead; ``universe`` (live universe changes) in ``universe.events``
    likewise, as the live ingest writes a change before the ticks it applies to. Returns the
    log and how many crashes happened.
    """
    rng = random.Random(seed)
    log = MemoryLog(settings.partitions)
    codec = topic_codec(Topic.CONTROL_COMMANDS)
    for command in commands:
        log.append(Topic.CONTROL_COMMANDS.value, 0, b"ops", codec.encode(command), {})
    for change in universe:
        encoded = topic_codec(Topic.UNIVERSE_EVENTS).encode(change)
        log.append(Topic.UNIVERSE_EVENTS.value, 0, change.symbol.encode(), encoded, {})
    events = topic_codec(Topic.MODELS_EVENTS)
    for event in model_events:
        log.append(Topic.MODELS_EVENTS.value, 0, event.model.encode(), events.encode(event), {})
    replay(log, data, window, symbols)
    stores = {s.name: DictStore(part_bytes=4096) for s in STAGES}  # many parts each
    committed: dict[tuple[str, TP], int] = {}
    builders = stage_builders(settings)  # the models load once; instances are built per worker

    def start() -> Worker:
        return Worker(log, settings, stores, committed, rng=rng, builders=builders)

    worker, crashes = start(), 0
    while True:
        moved = 0
        for stage in [s.name for s in STAGES]:
            moved += worker.step(stage)
            if rng.random() < crash_chance:
                worker, crashes = start(), crashes + 1
                moved += 1  # what the dead worker had not committed is to do again
        if not moved:
            return log, crashes
