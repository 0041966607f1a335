"""Metrics, tracing and health without a broker: the pieces the worker wires together."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

from streams.agents.base import Decoder, Emitter, RawEvent
from streams.agents.dispatch import dispatch
from streams.agents.merging import MergeHandler
from streams.agents.supervisor import SupervisorHandler
from streams.config import SupervisorPolicy
from streams.contracts.codec import topic_codec
from streams.observability import tracing
from streams.observability.health import HealthRegistry, is_stalled, pending_records
from streams.observability.metrics import (
    Metrics,
    SideWindow,
    TimedScorer,
    agreed_metric_names,
    exported_metric_names,
    install_metrics,
)
from streams.ordering import SOURCE_HEADER, WATERMARK_HEADER, SortKey
from streams.stages import SupervisorStage
from streams.topics import Topic
from tests.unit.stages.factories import T0, scored

# -- metrics -----------------------------------------------------------------------------------


#: The names agreed with infra/ (dashboards and alert rules), as the issue lists them.
AGREED_IN_THE_ISSUE = (
    "qt_stage_records_total",
    "qt_stage_latency_seconds",
    "qt_stage_last_event_timestamp_seconds",
    "qt_stage_watermark_ms",
    "qt_stage_stalled",
    "qt_consumer_lag",
    "qt_deadletters_total",
    "qt_stage_errors_total",  # issue 9: a stage's own failures, dead-lettered as stage_error
    "qt_redelivered_total",  # issue 9: records skipped after a restart as already applied
    "qt_state_flush_seconds",  # issue 9: storing a stage's state in its table
    "qt_signals_total",
    "qt_signal_side_share",
    "qt_vetoes_total",
    "qt_risk_rejections_total",
    "qt_open_positions",
    "qt_equity_usd",
    "qt_drawdown_ratio",
    "qt_realized_pnl_usd",
    "qt_kill_switch",
    "qt_trading_mode",  # issue 12: the policy layer's mode
    "qt_model_info",
    "qt_model_scoring_seconds",
    "qt_model_drift_psi",  # issue 12: drift against the training reference
    "qt_model_drift_level",
    "qt_model_health_veto_share",  # issue 12: the supervisor's veto rate as model health
    "qt_orders_total",
    "qt_trades_closed_total",
    "qt_venue_reconcile_findings_total",  # issue 11: the testnet venue's reconciliation
)


def test_the_registry_exports_exactly_the_agreed_names() -> None:
    assert agreed_metric_names() == set(AGREED_IN_THE_ISSUE)
    assert exported_metric_names(Metrics()) == set(AGREED_IN_THE_ISSUE)


def test_side_window_forgets_the_oldest_signal() -> None:
    w = SideWindow(size=3)
    assert w.shares() == (0.0, 0.0)
    for buy in (True, True, False):
        w.add(buy)
    assert w.shares() == pytest.approx((2 / 3, 1 / 3))
    w.add(False)  # the first BUY leaves the window
    assert w.shares() == pytest.approx((1 / 3, 2 / 3))


def test_signal_balance_per_symbol_and_overall() -> None:
    m = Metrics(side_window=4)
    for symbol, action in [("BTCUSDT", "BUY"), ("BTCUSDT", "HOLD"), ("ETHUSDT", "SELL"),
                           ("ETHUSDT", "SELL"), ("BTCUSDT", "SELL")]:  # fmt: skip
        m.signal(symbol, action)
    share = "qt_signal_side_share"
    assert m.value(share, {"scope": "BTCUSDT", "side": "BUY"}) == 0.5
    assert m.value(share, {"scope": "ETHUSDT", "side": "SELL"}) == 1.0
    assert m.value(share, {"scope": "overall", "side": "SELL"}) == 0.75  # HOLD not counted
    assert m.value("qt_signals_total", {"symbol": "BTCUSDT", "action": "HOLD"}) == 1


def test_portfolio_drawdown_is_from_the_equity_peak() -> None:
    m = Metrics(starting_equity_usd=10_000.0)
    m.portfolio(equity_usd=11_000.0, open_positions=2, halted=False)
    m.portfolio(equity_usd=9_900.0, open_positions=1, halted=True)
    assert m.value("qt_drawdown_ratio") == pytest.approx(0.1)
    assert m.value("qt_realized_pnl_usd") == pytest.approx(-100.0)
    assert m.value("qt_open_positions") == 1
    assert m.value("qt_kill_switch") == 1
    assert b"qt_equity_usd 9900.0" in m.exposition()


def test_stage_latency_observes_every_record_of_a_batch() -> None:
    m = Metrics()
    m.stage_latency("features", 2e-5, 7)
    assert m.value("qt_stage_latency_seconds_count", {"stage": "features"}) == 7
    assert m.value("qt_stage_latency_seconds_bucket", {"stage": "features", "le": "2.5e-05"}) == 7


def test_timed_scorer_scores_exactly_like_the_ensemble_and_times_each_model() -> None:
    from models.dataset import build_dataset
    from models.scorer import EnsembleScorer, promoted_versions
    from streams.config import Settings
    from streams.demo import SAMPLE_DATA

    registry = Settings().registry_dir
    versions = promoted_versions(registry)
    whole = EnsembleScorer.from_registry(registry)
    timings: list[tuple[str, float]] = []
    timed = TimedScorer(
        {n: EnsembleScorer.from_registry(registry, {n: v}) for n, v in sorted(versions.items())},
        sink=lambda model, s: timings.append((model, s)),
    )
    ds = build_dataset(SAMPLE_DATA, ["SOLUSDT"], "2025-05-21T03:00", "2025-05-21T04:00")
    expected, got = whole.score(ds.tabular, ds.window), timed.score(ds.tabular, ds.window)
    assert timed.names == whole.names and timed.versions == whole.versions
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])  # bit for bit
    assert [m for m, _ in timings] == sorted(versions)
    assert all(s > 0 for _, s in timings)


# -- tracing -----------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span ended while the test runs (no sampling), through the topology's tracer."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = tracing.install_tracer(provider.get_tracer(tracing.SCOPE))
    old_metrics = install_metrics(Metrics())
    yield exporter
    tracing.install_tracer(previous)
    install_metrics(old_metrics)


def test_traceparent_round_trip() -> None:
    ctx = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False,
                      TraceFlags(TraceFlags.SAMPLED))  # fmt: skip
    header = tracing.traceparent_header(ctx)
    assert header == ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    parent = tracing.extract_context(dict([header]))
    assert parent is not None
    from opentelemetry import trace

    got = trace.get_current_span(parent).get_span_context()
    assert (got.trace_id, got.span_id, got.is_remote) == (ctx.trace_id, ctx.span_id, True)
    assert tracing.extract_context({}) is None
    assert tracing.extract_context({"traceparent": b"garbage"}) is None
    invalid = SpanContext(0, 0, False)
    assert tracing.traceparent_header(invalid) is None


def _event(topic: str, offset: int, value: bytes, headers: dict[str, bytes]) -> RawEvent:
    return RawEvent(topic, 0, offset, b"ETHUSDT", value, headers)


def test_dispatch_opens_a_child_span_per_record_and_stamps_what_it_emits(
    spans: InMemorySpanExporter,
) -> None:
    stage = SupervisorStage(
        SupervisorPolicy(gate="confidence", min_confidence=0.5), ["xgboost", "lightgbm"]
    )
    handler = SupervisorHandler(stage)
    codec = topic_codec(Topic.SIGNALS_ENSEMBLE)
    upstream = SpanContext(0x1234, 0x5678, False, TraceFlags(TraceFlags.SAMPLED))
    headers = dict([tracing.traceparent_header(upstream), (SOURCE_HEADER, b"ensemble/0")])  # type: ignore[list-item]
    buy = codec.encode(scored(probs=(0.1, 0.2, 0.7)))
    events = [
        _event("signals.ensemble", 10, buy, headers),
        _event("signals.ensemble", 11, b"\x00\x00\x00\x00\x01", {}),  # broken: dead-lettered
        _event("signals.ensemble", 12, b"", {WATERMARK_HEADER: str(T0 + 60_000).encode()}),
    ]
    out = Emitter("supervisor")
    assert dispatch(handler, Decoder(""), events, out) == 1

    finished = spans.get_finished_spans()
    assert [s.name for s in finished] == ["supervisor signals.ensemble"] * 2  # no watermark span
    ok, dead = finished
    assert ok.parent is not None and (ok.parent.trace_id, ok.parent.span_id) == (0x1234, 0x5678)
    assert ok.attributes is not None and ok.attributes["qt.vetoed"] is False
    assert ok.attributes["messaging.kafka.offset"] == 10
    assert dead.parent is None and dead.status.status_code.name == "ERROR"
    signal, letter = [i for i in out.items if i.watermark is None]
    assert signal.span_context is not None
    assert (signal.span_context.trace_id, signal.span_context.span_id) == (
        0x1234, ok.context.span_id if ok.context else None,
    )  # fmt: skip
    assert letter.topic is Topic.DEADLETTER


class _Echo(MergeHandler):
    """A one-source merge that forwards what it releases (tests the base machinery)."""

    name = "echo"
    inputs = (Topic.SIGNALS_ENSEMBLE,)

    def sources(self, merge: int) -> dict[str, tuple[int, bool]]:
        return {"signals.ensemble/0:ensemble/0": (0, False)}

    def sort_key(self, topic: str, record: Any) -> SortKey:
        return SortKey(record.event_time_ms, 0, record.symbol)

    def process(self, merge: int, topic: str, partition: int, record: Any, out: Emitter) -> None:
        out.record(Topic.SIGNALS_ENSEMBLE, record.symbol, record, record.event_time_ms, 0)

    def emit_progress(self, merge: int, watermark: int, out: Emitter) -> None:
        pass


def test_a_buffered_record_stays_the_parent_of_what_it_causes(
    spans: InMemorySpanExporter,
) -> None:
    codec = topic_codec(Topic.SIGNALS_ENSEMBLE)
    handler, decoder = _Echo(), Decoder("")
    upstream = SpanContext(0xAAAA, 0xBBBB, False, TraceFlags(TraceFlags.SAMPLED))
    headers = dict([tracing.traceparent_header(upstream), (SOURCE_HEADER, b"ensemble/0")])  # type: ignore[list-item]
    record = _event("signals.ensemble", 0, codec.encode(scored(t=T0)), headers)
    first = Emitter("echo")
    dispatch(handler, decoder, [record], first)
    assert first.items == [] and spans.get_finished_spans() == ()  # buffered: no span yet

    wm = {SOURCE_HEADER: b"ensemble/0", WATERMARK_HEADER: str(T0 + 1).encode()}
    second = Emitter("echo")
    dispatch(handler, decoder, [_event("signals.ensemble", 1, b"", wm)], second)
    (span,) = spans.get_finished_spans()
    assert span.name == "echo signals.ensemble"
    assert span.parent is not None and (span.parent.trace_id, span.parent.span_id) == (
        0xAAAA, 0xBBBB,
    )  # fmt: skip
    (released,) = second.items
    assert released.span_context is not None and span.context is not None
    assert released.span_context.span_id == span.context.span_id


def test_no_tracer_means_no_spans_and_no_headers() -> None:
    assert not tracing.enabled()
    out = Emitter("features")
    out.record(Topic.MARKET_FEATURES, "ETHUSDT", scored(), T0, 0)
    assert out.items[0].span_context is None


def _one_trace_spans(marks: list[str | None]) -> list[ReadableSpan]:
    """Spans ``s0..`` under one ``root``, each with its sample mark, in the order they end."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root"):
        for i, mark in enumerate(marks):
            attrs = {tracing.SAMPLE_ATTRIBUTE: mark} if mark else {}
            with tracer.start_as_current_span(f"s{i}", attributes=attrs):
                pass
    return list(exporter.get_finished_spans())


def _sampled(spans_in: list[ReadableSpan], **kwargs: Any) -> list[str]:
    out = InMemorySpanExporter()
    sampler = tracing.DecisionSampler(SimpleSpanProcessor(out), **kwargs)
    for s in spans_in:
        sampler.on_end(s)
    return [s.name for s in out.get_finished_spans()]


def test_sampler_exports_kept_traces_whole_and_drops_the_rest() -> None:
    assert _sampled(_one_trace_spans([None, "keep", None])) == ["s0", "s1", "s2", "root"]
    assert _sampled(_one_trace_spans([None, "drop", None])) == []
    assert _sampled(_one_trace_spans([None, None])) == []  # undecided: held, never exported
    assert _sampled(_one_trace_spans([None, "drop"]), keep_all=True) == ["s0", "s1", "root"]


def test_sampler_keeps_error_traces_and_bounds_its_buffer() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with pytest.raises(ValueError), tracer.start_as_current_span("broken"):
        raise ValueError("bad record")
    assert _sampled(list(exporter.get_finished_spans())) == ["broken"]

    undecided = [s for _ in range(5) for s in _one_trace_spans([None])]
    out = InMemorySpanExporter()
    sampler = tracing.DecisionSampler(SimpleSpanProcessor(out), max_traces=3)
    for s in undecided:
        sampler.on_end(s)
    assert sampler.evicted == 2


def test_json_lines_file_and_the_tree_it_gives(tmp_path: Path) -> None:
    path = tmp_path / "t" / "traces.jsonl"
    exporter = tracing.JsonLinesSpanExporter(path)
    exporter.export(_one_trace_spans(["keep", None]))
    exporter.shutdown()
    with path.open("a") as handle:
        handle.write('{"torn":')  # a worker killed mid-line
    rows = list(tracing.read_spans(path))
    assert [r["name"] for r in rows] == ["s0", "s1", "root"]
    roots = tracing.build_tree(rows)
    assert [r.span["name"] for r in roots] == ["root"]
    assert [c.span["name"] for c in roots[0].children] == ["s0", "s1"]
    assert json.loads(path.read_text().splitlines()[0])["attributes"] == {"qt.sample": "keep"}
    with pytest.raises(tracing.TraceNotFoundError):
        tracing.decision_trace(path, "nope")


def test_exporter_choice_follows_the_otel_environment(tmp_path: Path) -> None:
    file_exporter = tracing.make_exporter(tmp_path / "x.jsonl", {})
    assert isinstance(file_exporter, tracing.JsonLinesSpanExporter)
    otlp = tracing.make_exporter(
        tmp_path / "x.jsonl", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    )
    assert type(otlp).__name__ == "OTLPSpanExporter"


# -- health ------------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_is_stalled_counts_from_when_input_became_pending() -> None:
    assert not is_stalled(None, None, 100.0, 30.0)  # nothing pending
    assert not is_stalled(90.0, 10.0, 100.0, 30.0)  # long idle before input came: fresh start
    assert is_stalled(60.0, 10.0, 100.0, 30.0)
    assert not is_stalled(60.0, 95.0, 100.0, 30.0)  # progressed recently


def test_a_stage_with_pending_input_and_no_progress_becomes_unready() -> None:
    clock, m = _Clock(), Metrics()
    health = HealthRegistry(5.0, clock=clock, sink=m)
    health.expect_models()
    health.register("features", ["p.market.ticks"])
    health.register("ensemble", ["p.market.features"])
    assert health.readiness().reasons == ("models not loaded yet", "consumer holds no partitions")
    health.models_loaded({"xgboost": "v1"})

    ticks, feats = ("p.market.ticks", 0), ("p.market.features", 0)
    health.refresh({ticks: 100, feats: 40})  # baselines: what was there before we started
    assert health.readiness().ok
    health.processed("features", {ticks: 109}, watermark_ms=T0)
    health.refresh({ticks: 110, feats: 50})  # ensemble: 10 new records, none processed
    assert health.stages["ensemble"].pending == 10 and health.readiness().ok
    clock.now += 6.0
    health.processed("features", {ticks: 119})
    health.refresh({ticks: 120, feats: 60})
    verdict = health.readiness()
    assert verdict.status == 503 and verdict.reasons[0].startswith("ensemble stalled")
    assert m.value("qt_stage_stalled", {"stage": "ensemble"}) == 1
    assert m.value("qt_stage_stalled", {"stage": "features"}) == 0
    assert m.value("qt_consumer_lag", {"topic": "p.market.features", "partition": "0"}) == 20
    assert m.value("qt_stage_watermark_ms", {"stage": "features"}) == T0
    assert health.liveness().ok  # stalled is not dead

    health.processed("ensemble", {feats: 59})
    health.refresh({ticks: 120, feats: 60})
    assert health.readiness().ok
    assert m.value("qt_stage_stalled", {"stage": "ensemble"}) == 0


def test_pending_ignores_other_topics_and_unknown_highwaters() -> None:
    health = HealthRegistry(5.0, clock=_Clock(), sink=Metrics())
    health.register("risk", ["p.decisions.sized"])
    stage = health.stages["risk"]
    assert pending_records(stage, {("p.market.ticks", 0): 10, ("p.decisions.sized", 0): None}) == 0


def test_a_silent_gateway_makes_the_worker_not_ready_with_the_reason() -> None:
    clock = _Clock()
    health = HealthRegistry(5.0, clock=clock, sink=Metrics())
    health.register("execution", ["p.orders.intents", "p.venue.events"])
    health.watch_feed("p.venue.events", "gateway", 60.0, "QT_BINANCE__GATEWAY_SILENT_AFTER_S")
    intents, events, idle = ("p.orders.intents", 0), ("p.venue.events", 0), ("p.venue.events", 1)
    health.refresh({intents: 0, events: 3, idle: 0})
    health.processed("execution", {events: 2})  # the gateway's snapshots
    clock.now += 59.0
    assert health.readiness().ok
    clock.now += 2.0  # 61 s without a record
    verdict = health.readiness()
    assert verdict.status == 503
    assert verdict.reasons == (
        "gateway silent: no p.venue.events record for 61 s "
        "(more than QT_BINANCE__GATEWAY_SILENT_AFTER_S=60)",
    )
    assert verdict.body["feeds"]["p.venue.events"]["last_record_s_ago"] == 61.0
    health.processed("execution", {events: 3})  # the next snapshot
    assert health.readiness().ok
    clock.now += 120.0
    assert not health.readiness().ok
    # Other stages' progress is no sign of the gateway.
    health.processed("execution", {intents: 0})
    assert not health.readiness().ok
    # A worker whose venue.events partitions were never written (no symbol maps to them)
    # waits for nothing.
    health.refresh({intents: 1, idle: 0})
    assert health.readiness().ok


def test_a_gateway_that_never_wrote_is_caught_on_the_partitions_its_symbols_map_to() -> None:
    clock = _Clock()
    health = HealthRegistry(5.0, clock=clock, sink=Metrics())
    health.register("execution", ["p.venue.events"])
    setting = "QT_BINANCE__GATEWAY_SILENT_AFTER_S"
    health.watch_feed("p.venue.events", "gateway", 60.0, setting, expected={0})
    expected, unused = ("p.venue.events", 0), ("p.venue.events", 1)
    health.refresh({expected: 0, unused: 0})  # a fresh deployment: nothing written yet
    clock.now += 59.0
    assert health.readiness().ok
    clock.now += 2.0
    verdict = health.readiness()
    assert verdict.reasons == (
        f"gateway silent: no p.venue.events record for 61 s (more than {setting}=60)",
    )
    # A worker holding only a partition no symbol maps to waits for nothing.
    health.refresh({unused: 0})
    assert health.readiness().ok


def test_a_worker_without_a_watched_feed_ignores_venue_events_age() -> None:
    clock = _Clock()  # paper: nothing watched
    health = HealthRegistry(5.0, clock=clock, sink=Metrics())
    health.register("execution", ["p.venue.events"])
    health.refresh({("p.venue.events", 0): 3})
    clock.now += 10_000.0
    assert health.readiness().ok and health.readiness().body["feeds"] == {}


def test_only_a_testnet_worker_with_the_execution_stage_watches_the_gateway() -> None:
    from streams.app import watch_gateway
    from streams.config import Settings
    from streams.kafka_io import partition_for
    from streams.topology import STAGES, partitions_of, stage_spec

    def watched(mode: str, stages: list[str]) -> list[str]:
        health = HealthRegistry(5.0, clock=_Clock(), sink=Metrics())
        keys = {"binance_api_key": "test-key", "binance_api_secret": "test-secret"}
        binance = {"gateway_silent_after_s": 42}
        settings = Settings(mode=mode, topic_prefix="t.", binance=binance, **keys)
        watch_gateway(health, settings, [stage_spec(n) for n in stages])
        return [f"{t} {f.max_age_s:g} {sorted(f.expected)}" for t, f in health.feeds.items()]

    everything = [s.name for s in STAGES]
    symbols = Settings().symbols
    partitions = partitions_of(Topic.VENUE_EVENTS, Settings().partitions)
    expected = sorted({partition_for(s, partitions) for s in symbols})
    assert watched("testnet", everything) == [f"t.venue.events 42 {expected}"]
    assert watched("testnet", ["features", "risk"]) == []
    assert watched("paper", everything) == []


def test_a_crashed_agent_fails_liveness() -> None:
    health = HealthRegistry(5.0, clock=_Clock(), sink=Metrics())
    health.register("risk", ["p.decisions.sized"])
    health.crashed("risk", KeyError("BTCUSDT"))
    verdict = health.liveness()
    assert verdict.status == 503
    assert verdict.body["stages"]["risk"]["crashed"] == "KeyError: 'BTCUSDT'"
    assert not health.readiness().ok


async def test_the_agent_wrapper_reports_a_crash_and_reraises() -> None:
    from streams.agents.durable import DictStore, StageRuntime
    from streams.app import DurableAgent
    from streams.topology import InputSpec, Partitioning, StageSpec

    class Boom:
        name = "boom"
        inputs = (Topic.MARKET_TICKS,)

        def on_record(self, *args: Any) -> None:
            raise KeyError("unexpected")

        def on_watermark(self, *args: Any) -> None:
            pass

        def end_batch(self, out: Emitter) -> None:
            raise KeyError("unexpected")

    class Message:
        topic, partition, offset, key, value, headers = "market.ticks", 0, 5, None, b"", []

    class Event:
        message = Message()

    class Stream:
        async def take_events(self, n: int, within: float) -> Any:
            yield [Event()]

    spec = StageSpec("boom", (InputSpec(Topic.MARKET_TICKS),), (), Partitioning.PER_SYMBOL,
                     "none", "a stage that fails", "unused:build")  # fmt: skip
    runtime = StageRuntime(spec, Boom, DictStore(), Decoder(""))
    health = HealthRegistry(5.0, clock=_Clock(), sink=Metrics())
    health.register("boom", ["market.ticks"])
    agent = DurableAgent(None, runtime, None, health, 1.0, "")  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        await agent.run(Stream())
    assert health.stages["boom"].crashed == "KeyError: 'unexpected'"


def test_a_kept_trace_is_exported_by_a_worker_that_never_saw_the_mark() -> None:
    from opentelemetry import trace

    # worker A: the ensemble marks its row "keep" and emits under that span
    provider_a = TracerProvider()
    with provider_a.get_tracer("a").start_as_current_span("ensemble") as span:
        tracing.mark(tracing.KEEP)
        out = Emitter("ensemble")
        out.record(Topic.SIGNALS_ENSEMBLE, "ETHUSDT", scored(), T0, 0)
    ctx = out.items[0].span_context
    assert ctx is not None and ctx.span_id == span.get_span_context().span_id
    headers = dict(tracing.trace_headers(ctx))
    assert headers["tracestate"] == b"qt=keep"

    # worker B: a fresh sampler exports the child at once, without a mark of its own
    exported = InMemorySpanExporter()
    provider_b = TracerProvider()
    provider_b.add_span_processor(tracing.DecisionSampler(SimpleSpanProcessor(exported)))
    with provider_b.get_tracer("b").start_as_current_span(
        "risk decisions.sized", context=tracing.extract_context(headers)
    ):
        pass
    (child,) = exported.get_finished_spans()
    assert child.context is not None and child.context.trace_id == ctx.trace_id
    assert trace.get_current_span().get_span_context().is_valid is False  # nothing leaked


def test_a_dropped_trace_stays_dropped_after_the_sampler_forgot_its_mark() -> None:
    # the ensemble marks a HOLD row "drop"; its children run after many other decisions
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    sampler = tracing.DecisionSampler(SimpleSpanProcessor(exported), max_decided=1)
    provider.add_span_processor(sampler)
    tracer = provider.get_tracer("w")
    with tracer.start_as_current_span("ensemble", attributes={tracing.SAMPLE_ATTRIBUTE: "drop"}):
        out = Emitter("ensemble")
        out.record(Topic.SIGNALS_ENSEMBLE, "ETHUSDT", scored(), T0, 0)
    with tracer.start_as_current_span("other", attributes={tracing.SAMPLE_ATTRIBUTE: "drop"}):
        pass  # a later decision: the first trace's id is forgotten (max_decided=1)
    ctx = out.items[0].span_context
    assert ctx is not None
    headers = dict(tracing.trace_headers(ctx))
    assert headers["tracestate"] == b"qt=drop"
    with tracer.start_as_current_span("supervisor", context=tracing.extract_context(headers)):
        pass
    assert exported.get_finished_spans() == ()
    assert not sampler._buffer  # discarded, not held as undecided until evicted


def test_unmarked_spans_carry_no_tracestate() -> None:
    provider = TracerProvider()
    with provider.get_tracer("a").start_as_current_span("features"):
        ctx = tracing.current_span_context()
    assert ctx is not None
    assert [k for k, _ in tracing.trace_headers(ctx)] == ["traceparent"]
