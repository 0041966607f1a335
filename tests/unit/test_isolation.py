"""No record can crash a stage: dispatch isolates every record, on arrival and at release.

Real handlers (features, risk, execution), real codecs and real records; the failures are
provoked by making one stage call raise after it has done its real work, the worst case for
half-applied state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from streams.agents.base import Decoder, Emitter, RawEvent
from streams.agents.dispatch import dispatch
from streams.agents.execution import ExecutionHandler
from streams.agents.features import FeaturesHandler
from streams.agents.merging import MergeHandler
from streams.agents.risk import RiskHandler
from streams.config import RiskLimits
from streams.contracts.codec import topic_codec
from streams.contracts.records import DeadLettered, FeaturesComputed, TickReceived
from streams.observability.metrics import Metrics, install_metrics
from streams.ordering import SOURCE_HEADER, WATERMARK_HEADER
from streams.stages import ExecutionStage, RiskStage
from streams.topics import Topic
from tests.unit.stages.factories import T0, decision, kline
from tests.unit.stages.sample import SAMPLE

TICKS = Topic.MARKET_TICKS.value
REPLAY = {SOURCE_HEADER: b"replay"}


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[Metrics]:
    m = Metrics()
    old = install_metrics(m)
    yield m
    install_metrics(old)


def sample_klines(symbol: str = "ETHUSDT", n: int = 200) -> list[TickReceived]:
    import gzip

    out = []
    with gzip.open(SAMPLE / f"{symbol}.csv.gz", "rt") as fh:
        next(fh)
        for _, line in zip(range(n), fh, strict=False):
            t, o, h, low, c, v = line.strip().split(",")
            out.append(kline(symbol, int(t), float(o), float(h), float(low), float(c), float(v)))
    return out


def tick_events(ticks: list[TickReceived], first_offset: int = 0) -> list[RawEvent]:
    codec = topic_codec(Topic.MARKET_TICKS)
    return [
        RawEvent(TICKS, 0, first_offset + i, t.symbol.encode(), codec.encode(t), REPLAY)
        for i, t in enumerate(ticks)
    ]


def letters(out: Emitter) -> list[DeadLettered]:
    return [i.value for i in out.items if isinstance(i.value, DeadLettered)]


def rows(out: Emitter) -> list[FeaturesComputed]:
    return [i.value for i in out.items if isinstance(i.value, FeaturesComputed)]


def test_a_stage_bug_on_one_tick_dead_letters_it_and_restores_the_window(
    fresh_metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = sample_klines()
    poisoned = ticks[150]
    reference = FeaturesHandler()
    expected = Emitter("features")
    dispatch(reference, Decoder(""), tick_events(ticks[:150] + ticks[151:]), expected)

    handler = FeaturesHandler()
    real_on_tick = handler.stage.on_tick

    def on_tick_with_a_bug(state: Any, tick: TickReceived) -> Any:
        result = real_on_tick(state, tick)  # the window has moved already
        if tick is not None and tick.event_time_ms == poisoned.event_time_ms:
            raise ZeroDivisionError("a bug after the state changed")
        return result

    monkeypatch.setattr(handler.stage, "on_tick", on_tick_with_a_bug)
    out = Emitter("features")
    assert dispatch(handler, Decoder(""), tick_events(ticks), out) == 1

    (letter,) = letters(out)
    assert (letter.stage, letter.reason, letter.error_type) == (
        "features", "stage_error", "ZeroDivisionError",
    )  # fmt: skip
    assert letter.detail == "a bug after the state changed"
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (TICKS, 0, 150)
    assert letter.raw == topic_codec(Topic.MARKET_TICKS).encode(poisoned)
    assert letter.symbol == "ETHUSDT" and letter.event_time_ms == poisoned.event_time_ms
    # The other ticks went through, and the window behaves as if the bad tick never came.
    assert rows(out) == rows(expected) and len(rows(out)) > 0
    assert handler.states["ETHUSDT"].to_dict() == reference.states["ETHUSDT"].to_dict()
    sample = {"stage": "features", "error_type": "ZeroDivisionError"}
    assert fresh_metrics.value("qt_stage_errors_total", sample) == 1.0
    dead = {"stage": "features", "reason": "stage_error"}
    assert fresh_metrics.value("qt_deadletters_total", dead) == 1.0


def test_a_record_our_stage_makes_invalid_is_its_inputs_fault_not_the_senders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ticks = sample_klines(n=140)
    handler = FeaturesHandler()
    real_on_tick = handler.stage.on_tick

    def nan_feature(state: Any, tick: TickReceived) -> Any:
        state, row = real_on_tick(state, tick)
        if row is not None and tick.event_time_ms == ticks[135].event_time_ms:
            row = dataclasses.replace(row, atr_pct=float("nan"))  # breaks the contract
        return state, row

    monkeypatch.setattr(handler.stage, "on_tick", nan_feature)
    out = Emitter("features")
    assert dispatch(handler, Decoder(""), tick_events(ticks), out) == 1
    (letter,) = letters(out)
    assert letter.reason == "stage_error" and letter.error_type == "ContractError"
    assert "atr_pct" in letter.detail and letter.source_offset == 135
    assert ticks[135].event_time_ms not in {r.event_time_ms for r in rows(out)}
    # Everything that goes out is already encoded: the sender cannot fail on it.
    assert all(i.encoded is not None for i in out.items if i.value is not None
               and not isinstance(i.value, DeadLettered))  # fmt: skip


def test_bad_ticks_are_dead_lettered_by_features_and_skipped_by_the_other_readers() -> None:
    good = sample_klines(n=3)
    bad = [
        dataclasses.replace(good[2], event_time_ms=good[2].event_time_ms + 60_000, low=-1.0),
        dataclasses.replace(good[2], event_time_ms=good[2].event_time_ms + 30 * 86_400_000),
    ]
    events = tick_events(good + bad)
    garbage = RawEvent(TICKS, 0, 5, b"ETHUSDT", b"\x00\x00\x00\x00\x01garbage", {})
    bad_mark = RawEvent(TICKS, 0, 6, None, b"", {WATERMARK_HEADER: b"soon", **REPLAY})
    batch = [*events, garbage, bad_mark]

    features_out = Emitter("features")
    assert dispatch(FeaturesHandler(), Decoder(""), batch, features_out) == 4
    reasons = sorted(letter.reason for letter in letters(features_out))
    assert reasons == sorted(
        ["non_positive_price", "event_time_skew", "contract_violation", "invalid_watermark"]
    )
    # Nothing refused moved the stage's progress: its watermark is the last good tick's time.
    marks = [i.watermark for i in features_out.items if i.watermark is not None]
    assert max(marks, default=good[2].event_time_ms) == good[2].event_time_ms
    # Only the good klines reach the portfolio stages, as bars on market.bars' one partition.
    bars = [i.value for i in features_out.items if i.topic is Topic.MARKET_BARS and i.value]
    assert [(b.symbol, b.event_time_ms, b.close) for b in bars] == [
        (t.symbol, t.event_time_ms, t.close) for t in good
    ]

    execution = ExecutionHandler(ExecutionStage(), partitions=1)
    execution_out = Emitter("execution")
    assert dispatch(execution, Decoder(""), batch, execution_out) == 4
    assert letters(execution_out) == []  # the first reader wrote them; execution only skips
    buffered = sorted(t for (t, *_rest) in _buffered_times(execution))
    assert buffered == [t.event_time_ms for t in good], "only the good ticks reach the merge"


def _buffered_times(handler: MergeHandler) -> list[tuple[int]]:
    return [(entry["time"],) for entry in _entries(handler)]


def _entries(handler: MergeHandler) -> list[dict[str, int]]:
    out = []
    for merge in handler.merges.values():
        for time, *_ in merge.to_dict()["buffer"]:
            out.append({"time": time})
    return out


def test_a_released_decision_that_fails_midway_leaves_the_portfolio_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    risk = RiskHandler(RiskStage(RiskLimits()), partitions=1, feedback_lag_ms=0)
    codec = topic_codec(Topic.DECISIONS_SIZED)
    first, second = decision("ETHUSDT", T0), decision("BTCUSDT", T0, price=100_000.0)
    strategy = {SOURCE_HEADER: b"strategy/0"}
    events = [
        RawEvent("decisions.sized", 0, 7, b"ETHUSDT", codec.encode(first), strategy),
        RawEvent("decisions.sized", 0, 8, b"BTCUSDT", codec.encode(second), strategy),
    ]
    later = str(T0 + 60_000).encode()
    marks = [
        RawEvent("decisions.sized", 0, 9, None, b"", {**strategy, WATERMARK_HEADER: later}),
        RawEvent("market.bars", 0, 3, None, b"",
                 {SOURCE_HEADER: b"features/0", WATERMARK_HEADER: later}),
        RawEvent("trades.closed", 0, 1, None, b"",
                 {SOURCE_HEADER: b"execution/0", WATERMARK_HEADER: later}),
    ]  # fmt: skip
    real = risk.stage.on_decision

    def approve_then_fail(state: Any, d: Any) -> Any:
        verdict = real(state, d)  # margin reserved, decision id recorded
        if d.symbol == "BTCUSDT":
            raise RuntimeError("a bug after the reservation")
        return verdict

    monkeypatch.setattr(risk.stage, "on_decision", approve_then_fail)
    out = Emitter("risk")
    assert dispatch(risk, Decoder(""), events + marks, out) == 0  # fails at release, not arrival

    (letter,) = letters(out)
    assert (letter.stage, letter.reason, letter.error_type) == ("risk", "stage_error",
                                                                  "RuntimeError")  # fmt: skip
    assert (letter.source_topic, letter.source_offset, letter.raw_key) == (
        "decisions.sized", 8, b"BTCUSDT",
    )  # fmt: skip
    assert codec.decode_record(letter.raw) == second  # re-encoded: the same record
    approved = [i.value for i in out.items if i.topic is Topic.ORDERS_APPROVED and i.value]
    assert [a.symbol for a in approved] == ["ETHUSDT"]

    alone = RiskHandler(RiskStage(RiskLimits()), partitions=1, feedback_lag_ms=0)
    dispatch(alone, Decoder(""), events[:1] + marks, Emitter("risk"))
    assert risk.state is not None and alone.state is not None
    assert risk.state.to_dict() == alone.state.to_dict()  # no reservation, no id left behind


def test_the_demo_watch_names_the_crashed_stage_and_the_dead_worker(tmp_path: Any) -> None:
    import http.server
    import json
    import subprocess
    import sys
    import threading

    from streams.workers import WorkerError, WorkerWatch

    body = {"status": "fail", "stages": {"risk": {"crashed": "ValueError: math domain error"},
                                         "features": {"crashed": None}}}  # fmt: skip

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = tmp_path / "worker.log"
    log.write_text("Traceback ...\nValueError: math domain error\n")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        watch = WorkerWatch(alive, server.server_address[1], log)
        with pytest.raises(WorkerError) as crashed:
            watch.check()
        assert "stage risk crashed: ValueError: math domain error" in str(crashed.value)
        assert str(log) in str(crashed.value) and "features" not in str(crashed.value)
    finally:
        alive.kill()
        alive.wait()
        server.shutdown()
    with pytest.raises(WorkerError, match="exited with code -9") as died:
        WorkerWatch(alive, 1, log).check()  # the process is gone: no need to ask /health
    assert str(log) in str(died.value)


def test_a_venue_bug_on_one_bar_leaves_the_open_position_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streams.agents.execution import ExecutionHandler
    from streams.config import ExitPolicy
    from streams.contracts.records import OrderApproved
    from streams.ordering import END_OF_STREAM
    from streams.stages import ExecutionStage, ExitPlannerStage

    ticks = sample_klines(n=16)  # the position is still open at the end
    at = ticks[5]
    limits = RiskLimits()
    risk = RiskStage(limits)
    approved = risk.on_decision(risk.new_state(at.event_time_ms),
                                decision("ETHUSDT", at.event_time_ms, price=at.close))  # fmt: skip
    assert isinstance(approved, OrderApproved)
    order = ExitPlannerStage(ExitPolicy(), limits).on_approved(approved)
    exits = {SOURCE_HEADER: b"exits/0"}
    order_event = RawEvent("orders.intents", 0, 0, b"ETHUSDT",
                           topic_codec(Topic.ORDERS_INTENTS).encode(order), exits)  # fmt: skip
    end = str(END_OF_STREAM).encode()
    ends = [
        RawEvent("orders.intents", 0, 1, None, b"", {**exits, WATERMARK_HEADER: end}),
        RawEvent(TICKS, 0, 99, None, b"", {**REPLAY, WATERMARK_HEADER: end}),
    ]

    def run(handler: ExecutionHandler, bars: list[TickReceived]) -> Emitter:
        out = Emitter("execution")
        dispatch(handler, Decoder(""), [*tick_events(bars[:6]), order_event,
                                        *tick_events(bars[6:], 6), *ends], out)  # fmt: skip
        return out

    def state_without(bar: TickReceived | None) -> tuple[ExecutionHandler, Emitter]:
        handler = ExecutionHandler(ExecutionStage(), partitions=1)
        return handler, run(handler, [t for t in ticks if t is not bar])

    whole, _ = state_without(None)
    # A bar after the entry that moves the open position (its trailing mark, a partial exit):
    # a failure there is the one that would leave a half-moved position behind.
    poisoned = next(
        t
        for t in ticks[7:]
        if state_without(t)[0].states["ETHUSDT"].to_dict() != whole.states["ETHUSDT"].to_dict()
    )
    reference, expected = state_without(poisoned)
    handler = ExecutionHandler(ExecutionStage(), partitions=1)
    real = handler.stage.on_tick

    def fill_then_fail(state: Any, tick: TickReceived) -> Any:
        produced = real(state, tick)
        if tick.event_time_ms == poisoned.event_time_ms:
            raise KeyError("a bug after the venue moved")
        return produced

    monkeypatch.setattr(handler.stage, "on_tick", fill_then_fail)
    out = run(handler, ticks)
    (letter,) = letters(out)
    assert letter.reason == "stage_error" and letter.error_type == "KeyError"
    assert topic_codec(Topic.MARKET_TICKS).decode_record(letter.raw) == poisoned

    def business(e: Emitter) -> list[Any]:
        return [i.value for i in e.items if i.value is not None
                and not isinstance(i.value, DeadLettered)]  # fmt: skip

    assert business(out) == business(expected) and business(out), "same fills and closes"
    assert handler.states["ETHUSDT"].to_dict() == reference.states["ETHUSDT"].to_dict()


def test_batch_progress_ignores_a_broken_watermark_header() -> None:
    # A foreign watermark is dead-lettered by dispatch; the agent's progress bookkeeping must
    # not then crash on it (it did: the stage died after the batch, outside its isolation).
    from streams.app import batch_progress

    batch = [
        RawEvent(TICKS, 0, 5, None, b"", {**REPLAY, WATERMARK_HEADER: b"soon"}),
        RawEvent(TICKS, 0, 6, None, b"", {**REPLAY, WATERMARK_HEADER: str(T0).encode()}),
    ]
    positions, watermark = batch_progress(batch)
    assert positions == {(TICKS, 0): 6} and watermark == T0
