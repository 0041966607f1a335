"""Latency: a paced replay through the whole topology on a real Kafka, tick to signal and to intent.

``python -m tests.benchmarks latency [--realtime-min M] [--x10-min M] [--x60-min M]`` replays
many symbols of the development data (``../shared/data/binance/spot_1m``, 29 spot symbols at
once by default) through one worker of the whole topology (``streams.app``; ``--workers N``
splits its partitions over N) on a loopback Apache
Kafka (``QT_KAFKA_BOOTSTRAP``, else the development broker on 127.0.0.1:19092, else started with
``infra/kafka/kafka.sh`` and stopped afterwards: ``bench_topology.kafka_broker``).
The demo's settings (50% confidence gate, so decisions and orders happen; 5-minute feedback lag).

The replay (:class:`~streams.adapters.replay.files.Pacer`, the replay's own pacing) runs in one
stream of event time: a warm-up of ``--warmup-min`` event minutes unpaced (the feature window
fills), a wait until the topology has caught up, then segments paced at 1x (real time), 10x and
60x, each lasting the given wall-clock minutes (defaults: 6, 3 and 2; the whole suite takes
about 13 minutes).

What is measured, per tick (symbol, event time), in wall-clock time on the one host:

* **sent**: when the tick was handed to the replay's producer (``time.time_ns()`` just before
  ``produce``; the producer's own ``linger.ms`` is part of the latency, as at the live edge);
* **seen**: when a consumer of the benchmark (assigned to every partition of the observed
  topics, ``poll`` per message) received a downstream record: a record keyed by the symbol with
  the tick's event time as its timestamp (every stage stamps its outputs with the event time of
  their cause), or a partition's progress passing the tick (the lowest ``qt-watermark`` /
  record time of every writer of that partition above the tick's event time: the moment the
  stage has decided that minute, whether it emitted something or not).

Record timestamps carry event time, not wall time, and headers carry only the writer, the
sequence number, watermarks and the W3C trace context (span start times are when a stage began
handling a record, not when its output reached the broker, and HOLD traces are not exported),
so a consumer's receive time is the most direct honest measure: it is what any downstream
reader sees, and includes both producers' linger and one fetch.

Figures: tick -> ``market.features``, ``signals.ensemble`` (**tick-to-signal**: one per tick),
``signals.supervised`` (BUY/SELL that passed or were vetoed), ``decisions.sized``,
``orders.approved`` and ``orders.intents`` (**tick-to-order-intent**: the intents that were
issued, and the progress of every tick through ``orders.intents``), p50/p99/max with the sample
count of each; per stage, the increment between consecutive topics. The last minute of each
segment is left out (the next segment's faster pacing would release it early).

Writes ``tests/benchmarks/results/latency.json`` and ``latency.md``; reported, never asserted.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.adapters.replay.files import KafkaTickSink

if TYPE_CHECKING:
    from streams.config import Settings
    from streams.contracts.records import TickReceived
    from tests.benchmarks.bench_topology import Broker

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
DATA = ROOT.parent / "shared" / "data" / "binance" / "spot_1m"
MINUTE_MS = 60_000
#: Goal of the issue: tick-to-order-intent p99 at real time (stretch 10 ms).
GOAL_P99_MS = 50.0
STRETCH_P99_MS = 10.0
#: Observed topics, in the order a tick's effects travel, with the stage that writes each.
CHAIN: tuple[tuple[str, str], ...] = (
    ("market.features", "features"),
    ("signals.ensemble", "ensemble"),
    ("signals.supervised", "supervisor"),
    ("decisions.sized", "strategy"),
    ("orders.approved", "risk"),
    ("orders.intents", "exits"),
)
SINGLE_PARTITION = frozenset({"decisions.sized"})


# --------------------------------------------------------------------------- pure helpers


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float | int | None]:
    """Sample count, p50, p99 (nearest rank) and max of latencies in ms (``None`` when empty)."""
    ordered = sorted(samples_ms)
    n = len(ordered)
    if n == 0:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))]

    return {"n": n, "p50_ms": rank(0.50), "p99_ms": rank(0.99), "max_ms": ordered[-1]}


@dataclass(frozen=True, slots=True)
class Seen:
    """One record the benchmark's consumer received."""

    at_ns: int
    topic: str  # without the run's prefix
    partition: int
    source: str  # qt-source header: the writer
    key: str
    timestamp_ms: int
    watermark: int | None  # qt-watermark header; None for a data record


def progress_curve(seen: Iterable[Seen], sources: Iterable[str]) -> tuple[list[int], list[int]]:
    """When one partition's progress rose, and to what: (wall ns, event time) in step.

    Progress = the lowest, over ``sources`` (every writer of the partition), of what each
    promised so far: a watermark W says nothing before W follows, a record at time t says
    nothing before t follows (writers send in event-time order). A tick at t is passed once
    progress > t. ``seen`` in receive order.
    """
    promised = dict.fromkeys(sources, -(2**62))
    times: list[int] = []
    levels: list[int] = []
    low = min(promised.values(), default=-(2**62))
    for s in seen:
        if s.source not in promised:
            continue
        mark = s.watermark if s.watermark is not None else s.timestamp_ms
        if mark > promised[s.source]:
            promised[s.source] = mark
            now = min(promised.values())
            if now > low:
                low = now
                times.append(s.at_ns)
                levels.append(low)
    return times, levels


def passed_at(curve: tuple[list[int], list[int]], event_time_ms: int) -> int | None:
    """Wall ns at which a progress curve first went above ``event_time_ms`` (None: never)."""
    times, levels = curve
    i = bisect.bisect_right(levels, event_time_ms)
    return times[i] if i < len(times) else None


def stage_increments(
    chain_ns: Mapping[str, Mapping[tuple[str, int], int]],
    order: Sequence[str],
    ticks_ns: Mapping[tuple[str, int], int],
) -> dict[str, list[float]]:
    """Per topic of ``order``: ms from the previous topic's time (the tick's for the first)."""
    out: dict[str, list[float]] = {}
    previous: Mapping[tuple[str, int], int] = ticks_ns
    for topic in order:
        here = chain_ns.get(topic, {})
        out[topic] = [(here[k] - previous[k]) / 1e6 for k in here if k in previous]
        previous = here
    return out


def span_figures(
    spans: Iterable[Mapping[str, Any]], ticks_ns: Mapping[tuple[str, int], int]
) -> dict[str, dict[str, Any]]:
    """Per span name: when stages began handling a tick's records (ms after the tick was sent)
    and how long they took, over the spans whose symbol and event time name a tick of
    ``ticks_ns`` (the stages' spans carry ``qt.symbol`` and ``qt.event_time_ms``)."""
    starts: dict[str, list[float]] = {}
    durations: dict[str, list[float]] = {}
    for span in spans:
        attrs = span.get("attributes") or {}
        sent = ticks_ns.get((attrs.get("qt.symbol"), attrs.get("qt.event_time_ms")))
        if sent is None or span.get("start_ns") is None or span.get("end_ns") is None:
            continue
        name = str(span.get("name"))
        starts.setdefault(name, []).append((span["start_ns"] - sent) / 1e6)
        durations.setdefault(name, []).append((span["end_ns"] - span["start_ns"]) / 1e6)
    order = sorted(starts, key=lambda n: latency_summary(starts[n])["p50_ms"] or 0.0)
    return {
        n: {"start": latency_summary(starts[n]), "duration": latency_summary(durations[n])}
        for n in order
    }


# --------------------------------------------------------------------------- replay


class TimedTickSink(KafkaTickSink):
    """The replay's sink, noting the wall clock at which each tick went to the producer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent_ns: dict[tuple[str, int], int] = {}

    def send_tick(self, tick: TickReceived) -> None:
        """Note the time, then send as the replay does."""
        self.sent_ns[(tick.symbol, tick.event_time_ms)] = time.time_ns()
        super().send_tick(tick)


@dataclass(frozen=True)
class Segment:
    """Event-time range ``[start_ms, end_ms)`` replayed at ``speed`` (None: unpaced)."""

    name: str
    speed: float | None
    start_ms: int
    end_ms: int


def plan_segments(
    start_ms: int, warmup_min: int, paced: Sequence[tuple[str, float, float]]
) -> list[Segment]:
    """Warm-up, then one segment per (name, speed, wall minutes), back to back in event time."""
    out = [Segment("warmup", None, start_ms, start_ms + warmup_min * MINUTE_MS)]
    for name, speed, wall_min in paced:
        minutes = max(2, round(wall_min * speed))
        begin = out[-1].end_ms
        out.append(Segment(name, speed, begin, begin + minutes * MINUTE_MS))
    return out


# --------------------------------------------------------------------------- the consumer


@dataclass
class Monitor:
    """Receives every record of the observed topics (its own thread) with its receive time."""

    bootstrap: str
    prefix: str
    partitions: int
    seen: list[Seen] = field(default_factory=list)
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start consuming from the beginning of every observed topic."""
        self._thread = threading.Thread(target=self._run, daemon=True, name="latency-monitor")
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the consumer thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from streams.ordering import SOURCE_HEADER, WATERMARK_HEADER, header_value

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-latency-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
        assigned = [
            TopicPartition(f"{self.prefix}{topic}", p, OFFSET_BEGINNING)
            for topic, _ in CHAIN
            for p in range(1 if topic in SINGLE_PARTITION else self.partitions)
        ]
        consumer.assign(assigned)
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                at = time.time_ns()
                if msg.error() is not None:
                    self.error = str(msg.error())
                    continue
                headers = msg.headers()
                wm = header_value(headers, WATERMARK_HEADER)
                key = msg.key()
                self.seen.append(
                    Seen(
                        at,
                        (msg.topic() or "").removeprefix(self.prefix),
                        msg.partition() or 0,
                        (header_value(headers, SOURCE_HEADER) or b"").decode(),
                        key.decode() if key else "",
                        msg.timestamp()[1],
                        None if wm is None else int(wm),
                    )
                )
        finally:
            consumer.close()

    def low(self, topic: str) -> int:
        """The lowest progress over the topic's partitions now (sources seen so far)."""
        seen = list(self.seen)
        parts = 1 if topic in SINGLE_PARTITION else self.partitions
        lows = []
        for p in range(parts):
            rows = [s for s in seen if s.topic == topic and s.partition == p]
            _, levels = progress_curve(rows, {s.source for s in rows})
            lows.append(levels[-1] if levels else -(2**62))
        return min(lows)


def wait_until(cond: Callable[[], bool], timeout_s: float, check: Callable[[], None]) -> bool:
    """Poll ``cond`` every second until true (True) or ``timeout_s`` passed (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check()
        if cond():
            return True
        time.sleep(1.0)
    return False


# --------------------------------------------------------------------------- the run


def replay(
    sink: TimedTickSink,
    items: Iterable[Any],
    segments: Sequence[Segment],
    on_segment: Callable[[Segment, Segment | None], None],
) -> dict[str, dict[str, float]]:
    """Send every tick at its segment's pace; ``on_segment(new, old)`` at each boundary.

    Returns each segment's wall start and end (monotonic seconds).
    """
    from streams.adapters.replay.files import Pacer
    from streams.contracts.records import TickReceived

    walls: dict[str, dict[str, float]] = {}
    current: Segment | None = None
    pacer = Pacer(None)
    for item in items:
        if not isinstance(item, TickReceived):
            sink.send_rejected(item)
            continue
        seg = next(s for s in segments if s.start_ms <= item.event_time_ms < s.end_ms)
        if seg is not current:
            sink.flush()
            if current is not None:
                walls[current.name]["end"] = time.monotonic()
            on_segment(seg, current)
            current, pacer = seg, Pacer(seg.speed)
            walls[seg.name] = {"start": time.monotonic()}
        pacer.wait_for(item.event_time_ms, sink.announce)  # as the replay's pump does
        sink.send_tick(item)
    sink.flush()
    if current is not None:
        walls[current.name]["end"] = time.monotonic()
    return walls


def measure(
    broker: Broker,
    settings: Settings,
    data: Path,
    symbols: Sequence[str],
    segments: Sequence[Segment],
    work_dir: Path,
    catch_up_s: float,
    workers: int = 1,
) -> dict[str, Any]:
    """``workers`` workers, one replay through every segment; the raw observations as figures."""
    from streams.adapters.market_files import TimeWindow, open_data_set
    from streams.adapters.replay.files import kafka_tick_sink
    from streams.app import ensure_topics
    from streams.kafka_io import ProducerOptions
    from streams.observability.tracing import read_spans
    from streams.topics import Topic, topic_name
    from streams.workers import input_partitions, running_fleet, worker_env
    from tests.benchmarks.bench_topology import cpu_seconds, wait_until_ready

    prefix = f"bench-lat-{uuid.uuid4().hex[:8]}."
    partitions = settings.partitions
    run_settings = settings.model_copy(update={"topic_prefix": prefix})
    ensure_topics(broker.bootstrap, run_settings, keep_forever=True)
    trace_paths: list[Path] = []

    def env() -> dict[str, str]:  # each worker its own web port and trace file
        trace_paths.append(work_dir / f"traces-{len(trace_paths) + 1}.jsonl")
        return worker_env(settings, broker.bootstrap, prefix, False, trace_paths[-1])

    window = TimeWindow(segments[0].start_ms, segments[-1].end_ms)
    _, items = open_data_set(data, symbols, window)
    sink = kafka_tick_sink(
        broker.bootstrap, prefix, ProducerOptions(broker.bootstrap), partitions, 1, None,
        TimedTickSink,
    )  # fmt: skip
    monitor = Monitor(broker.bootstrap, prefix, partitions)
    notes: list[str] = []
    loads: dict[str, list[float]] = {}
    with running_fleet(env, work_dir, workers) as fleet:
        if workers > 1:  # they split the partitions before any input arrives
            fleet.wait_until_assigned(input_partitions(prefix, partitions), 120.0)
        proc, log_path = fleet.watches[0].worker, fleet.log_path
        probe = (
            topic_name(Topic.MARKET_TICKS, prefix),
            topic_name(Topic.MARKET_FEATURES, prefix),
            partitions,
        )
        ready_s = wait_until_ready(broker.bootstrap, probe, proc, log_path)
        monitor.start()

        def check() -> None:
            fleet.check()

        def on_segment(new: Segment, old: Segment | None) -> None:
            if old is not None:
                loads.setdefault(old.name, []).append(os.getloadavg()[0])
            if old is not None and old.speed is None:
                # Everything but the warm-up's last minute through orders.intents (the merges
                # release a minute once the next one is seen), so the paced part starts level.
                target = old.end_ms - MINUTE_MS
                caught = wait_until(
                    lambda: monitor.low("orders.intents") >= target, catch_up_s, check
                )
                if not caught:
                    notes.append(
                        f"the topology had not caught up with the warm-up after {catch_up_s:.0f} s "
                        f"(orders.intents progress {monitor.low('orders.intents')}, wanted "
                        f"{target}); the paced segments start behind"
                    )
            loads.setdefault(new.name, []).append(os.getloadavg()[0])
            print(f"latency bench: segment {new.name} (speed {new.speed})", flush=True)

        pids = [w.worker.pid for w in fleet.watches]
        cpu0 = [cpu_seconds(pid) for pid in pids]
        walls = replay(sink, items, segments, on_segment)
        loads.setdefault(segments[-1].name, []).append(os.getloadavg()[0])
        sink.end_stream()
        sink.flush()
        drained = wait_until(lambda: monitor.low("orders.intents") >= 2**62, 300.0, check)
        if not drained:
            notes.append("orders.intents did not reach the end of stream within 300 s")
        cpu1 = [cpu_seconds(pid) for pid in pids]
        worker_cpu = (
            None if None in cpu0 or None in cpu1
            else sum(b - a for a, b in zip(cpu0, cpu1, strict=True))  # type: ignore[operator]
        )  # fmt: skip
        monitor.stop()
    if monitor.error:
        notes.append(f"consumer error: {monitor.error}")
    spans = [s for path in trace_paths if path.exists() for s in read_spans(path)]
    out = figures(sink.sent_ns, monitor.seen, segments, partitions, walls, loads, notes, spans)
    return out | {
        "ready_s": ready_s, "worker_cpu_s": worker_cpu, "prefix": prefix, "workers": workers
    }  # fmt: skip


def figures(
    sent_ns: Mapping[tuple[str, int], int],
    seen: Sequence[Seen],
    segments: Sequence[Segment],
    partitions: int,
    walls: Mapping[str, Mapping[str, float]],
    loads: Mapping[str, list[float]],
    notes: list[str],
    spans: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Per paced segment: latency summaries per topic (records, progress), per stage, and the
    stages' spans (exported for the traces the ensemble kept: BUY/SELL signals)."""
    from streams.kafka_io import partition_for

    by_tp: dict[tuple[str, int], list[Seen]] = {}
    for s in seen:
        by_tp.setdefault((s.topic, s.partition), []).append(s)
    curves = {
        tp: progress_curve(rows, {r.source for r in rows}) for tp, rows in sorted(by_tp.items())
    }
    first_record: dict[str, dict[tuple[str, int], int]] = {}
    for s in seen:
        if s.watermark is None:
            first_record.setdefault(s.topic, {}).setdefault((s.key, s.timestamp_ms), s.at_ns)
    out: dict[str, Any] = {"segments": {}, "notes": notes}
    for seg in segments:
        if seg.speed is None:
            continue
        # The last minute is released by the next segment's first ticks: left out.
        ticks = {k: v for k, v in sent_ns.items() if seg.start_ms <= k[1] < seg.end_ms - MINUTE_MS}
        records = {
            topic: {k: t for k, t in first_record.get(topic, {}).items() if k in ticks}
            for topic, _ in CHAIN
        }
        passed: dict[str, dict[tuple[str, int], int]] = {}
        for topic, _ in CHAIN:
            marks = passed[topic] = {}
            for key in ticks:
                p = 0 if topic in SINGLE_PARTITION else partition_for(key[0], partitions)
                at = passed_at(curves.get((topic, p), ([], [])), key[1])
                if at is not None:
                    marks[key] = at

        def lat(
            times: Mapping[tuple[str, int], int], sent: Mapping[Any, int] = ticks
        ) -> list[float]:
            return [(t - sent[k]) / 1e6 for k, t in times.items()]

        # Per stage: a tick's time at each topic = its record there if any, else its progress.
        reached = {topic: {**passed[topic], **records[topic]} for topic, _ in CHAIN}
        order = [t for t, _ in CHAIN]
        increments = stage_increments(reached, order, ticks)
        wall = walls.get(seg.name, {})
        out["segments"][seg.name] = {
            "speed": seg.speed,
            "event_minutes": (seg.end_ms - seg.start_ms) // MINUTE_MS,
            "wall_s": wall.get("end", 0.0) - wall.get("start", 0.0),
            "ticks": len(ticks),
            "load_1m": loads.get(seg.name, []),
            "records": {t: latency_summary(lat(records[t])) for t in order},
            "progress": {t: latency_summary(lat(passed[t])) for t in order},
            "stages": {stage: latency_summary(increments[t]) for t, stage in CHAIN},
            "spans": span_figures(spans, ticks),
        }
    return out


def goals(res: Mapping[str, Any]) -> dict[str, Any]:
    """The issue's goal (tick-to-order-intent p99 at real time) against the figures."""
    real = res["segments"].get("1x")
    if real is None:
        return {}
    intents = real["records"]["orders.intents"]
    progress = real["progress"]["orders.intents"]
    signal = real["records"]["signals.ensemble"]

    def met(summary: Mapping[str, Any]) -> bool | None:
        return None if summary["p99_ms"] is None else summary["p99_ms"] <= GOAL_P99_MS

    return {
        "goal_p99_ms": GOAL_P99_MS,
        "stretch_p99_ms": STRETCH_P99_MS,
        "tick_to_intent_issued_met": met(intents),
        "tick_to_intent_progress_met": met(progress),
        "tick_to_signal_met": met(signal),
    }


# --------------------------------------------------------------------------- report


def _workers(n: int) -> str:
    return "one worker" if n == 1 else f"{n} workers"


def _ms(v: Any) -> str:
    return "n/a" if v is None else f"{v:,.1f}"


def markdown(res: Mapping[str, Any]) -> str:
    """``latency.md``: the figures of ``latency.json`` as tables."""
    lines = [
        "# Latency benchmark",
        "",
        f"{res['symbols']} symbols of `{res['data']}` at once, from {res['start']}; "
        f"{res['partitions']} partitions, confidence gate {res['min_confidence']:.0%}, "
        f"feedback lag {res['feedback_lag_ms'] / 60000:.0f} min, "
        f"{_workers(res.get('workers', 1))} on "
        f"{res['broker']}; warm-up {res['warmup_min']} event minutes unpaced. "
        f"{res['machine']['cpus']} CPUs shared with other work (1-minute load per segment below). "
        "Latency = wall clock at which the benchmark's consumer received the downstream record "
        "(or saw the partition's progress pass the tick) minus the wall clock at which the tick "
        "was handed to the replay's producer. Generated by `python -m tests.benchmarks latency`; "
        "method in the suite's docstring, findings in `docs/performance.md`.",
        "",
    ]
    for name, seg in res["segments"].items():
        loads = ", ".join(f"{x:.1f}" for x in seg["load_1m"])
        lines += [
            f"## {name} ({seg['event_minutes']} event minutes in {seg['wall_s']:.0f} s, "
            f"{seg['ticks']:,} ticks measured, load {loads})",
            "",
            "| topic (stage) | records n | records p50 ms | p99 ms | max ms | progress n | "
            "progress p50 ms | p99 ms | max ms | stage n | stage p50 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for topic, stage in CHAIN:
            r, p, s = seg["records"][topic], seg["progress"][topic], seg["stages"][stage]
            lines.append(
                f"| `{topic}` ({stage}) | {r['n']:,} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | "
                f"{_ms(r['max_ms'])} | {p['n']:,} | {_ms(p['p50_ms'])} | {_ms(p['p99_ms'])} | "
                f"{_ms(p['max_ms'])} | {s['n']:,} | {_ms(s['p50_ms'])} | {_ms(s['p99_ms'])} | "
                f"{_ms(s['max_ms'])} |"
            )
        lines += [
            "",
            "Spans of the kept (BUY/SELL) traces: when a stage began handling the tick's record, "
            "and for how long.",
            "",
            "| span | n | start p50 ms | start p99 ms | duration p50 ms | duration p99 ms |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for span, f in seg.get("spans", {}).items():
            st, du = f["start"], f["duration"]
            lines.append(
                f"| `{span}` | {st['n']:,} | {_ms(st['p50_ms'])} | {_ms(st['p99_ms'])} | "
                f"{_ms(du['p50_ms'])} | {_ms(du['p99_ms'])} |"
            )
        lines.append("")
    lines += ["## Goal", "", f"- {json.dumps(res['goals'])}", ""]
    if res["notes"]:
        lines += ["## Notes", "", *(f"- {n}" for n in res["notes"]), ""]
    return "\n".join(lines)


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of the suite (module doc)."""
    from streams.adapters.market_files import discover_files, format_epoch_ms
    from tests.benchmarks.bench_topology import bench_settings, kafka_broker

    settings = bench_settings(args.min_confidence).model_copy(
        update={"partitions": args.partitions}
    )
    files = discover_files(args.data, ())
    chosen = files[: args.symbols]
    symbols = [f.symbol for f in chosen]
    # Every chosen symbol has data from the start: the latest first kline of them all.
    start_ms = max(first_open_ms(f.path) for f in chosen) + args.offset_min * MINUTE_MS
    paced = [("1x", 1.0, args.realtime_min), ("10x", 10.0, args.x10_min)]
    paced.append(("60x", 60.0, args.x60_min))
    segments = plan_segments(start_ms, args.warmup_min, [p for p in paced if p[2] > 0])
    with kafka_broker() as broker, tempfile.TemporaryDirectory(prefix="qt-bench-lat-") as tmp:
        if broker is None:
            raise RuntimeError("no Kafka: set QT_KAFKA_BOOTSTRAP or install Java")
        print(f"latency bench: kafka at {broker.bootstrap}, {len(symbols)} symbols", flush=True)
        measured = measure(
            broker, settings, args.data, symbols, segments, Path(tmp), args.catch_up_s,
            args.workers,
        )  # fmt: skip
        bootstrap = broker.bootstrap
    res: dict[str, Any] = {
        "suite": "latency",
        "data": str(args.data.relative_to(ROOT.parent))
        if args.data.is_relative_to(ROOT.parent)
        else str(args.data),
        "symbols": len(symbols),
        "start": format_epoch_ms(start_ms),
        "warmup_min": args.warmup_min,
        "partitions": settings.partitions,
        "min_confidence": settings.supervisor.min_confidence,
        "feedback_lag_ms": settings.feedback_lag_ms,
        "broker": f"Apache Kafka at {bootstrap}",
        **measured,
    }
    res["goals"] = goals(res)
    res["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "load_avg_1m_at_end": os.getloadavg()[0],
    }
    return res


def first_open_ms(path: Path) -> int:
    """Open time of the first kline of a (gzipped) CSV of the data set."""
    import gzip

    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        next(handle)  # header
        return int(next(handle).split(",", 1)[0])


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write ``results/latency.json`` and ``latency.md``."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks latency")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--symbols", type=int, default=29, help="how many symbols, at once")
    parser.add_argument("--offset-min", type=int, default=0, help="start this far into the data")
    parser.add_argument("--warmup-min", type=int, default=160, help="event minutes, unpaced")
    parser.add_argument("--realtime-min", type=float, default=6.0, help="wall minutes at 1x")
    parser.add_argument("--x10-min", type=float, default=3.0, help="wall minutes at 10x")
    parser.add_argument("--x60-min", type=float, default=2.0, help="wall minutes at 60x")
    parser.add_argument("--catch-up-s", type=float, default=240.0, help="wait after the warm-up")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--workers", type=int, default=1, help="Faust workers of the topology (they split the "
        "partitions; at most --partitions)",
    )  # fmt: skip
    parser.add_argument("--min-confidence", type=float, default=0.5, help="the demo's gate")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= args.partitions:
        parser.error(f"--workers must be 1 to --partitions ({args.partitions}), not {args.workers}")
    try:
        res = bench(args)
    except RuntimeError as exc:
        print(f"latency bench failed: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    (args.out / "latency.md").write_text(markdown(res), encoding="utf-8")
    print(markdown(res))
    return 0
