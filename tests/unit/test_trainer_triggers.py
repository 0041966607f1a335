"""The trainer's trigger rules (streams/trainer/triggers.py): the schedule in event time, the
drift cool-down, ready/superseded/already-trained triggers and ids derived from causes."""

from __future__ import annotations

import gzip
from pathlib import Path

from streams.contracts.records import ModelEventRecorded, TickReceived
from streams.ordering import END_OF_STREAM
from streams.trainer.loop import TrainerState
from streams.trainer.retrain import KlineBuffer
from streams.trainer.triggers import (
    TickClock,
    Trigger,
    TriggerState,
    choose,
    on_clock,
    on_model_event,
    recent_window,
    retrained_trigger,
)
from streams.vocabulary import ModelEventKind, TickKind

H = 3_600_000
DAY = 24 * H
T0 = 1_746_835_200_000  # 2025-05-10 00:00 UTC, a day boundary


def event(kind: ModelEventKind, t: int, instance: int = 0) -> ModelEventRecorded:
    return ModelEventRecorded(
        event_id=f"ensemble:x=v1:{kind.value}:{t}:{instance}", model="ensemble", version="x=v1",
        event_time_ms=t, kind=kind, detail="psi", metric_name="psi:vol_60", metric=0.4,
    )  # fmt: skip


def tick(symbol: str, t: int, close: float = 100.0) -> TickReceived:
    return TickReceived(
        symbol=symbol, event_time_ms=t, kind=TickKind.KLINE_1M, open=close, high=close + 1,
        low=close - 1, close=close, volume=2.5, interval_ms=60_000, source="test",
    )  # fmt: skip


def run_clock(times: list[int], schedule_ms: int = DAY) -> list[Trigger]:
    state, fired = TriggerState(), []
    for t in times:
        state, new = on_clock(state, t, schedule_ms)
        fired += new
    return fired


def test_the_schedule_fires_at_each_boundary_event_time_crosses_never_at_the_first_tick():
    minutes = [T0 + 6 * H + i * 60_000 for i in range(0, 2 * 24 * 60, 7)]  # 06:00 .. +2 days
    fired = run_clock(minutes)
    assert [t.at_ms for t in fired] == [T0 + DAY, T0 + 2 * DAY]
    assert [t.trigger_id for t in fired] == [f"schedule-{T0 + DAY}", f"schedule-{T0 + 2 * DAY}"]
    assert "2025-05-11 00:00:00" in fired[0].detail
    # the same ticks again give the same triggers (ids derived from the boundary, not a clock)
    assert run_clock(minutes) == fired


def test_a_gap_over_several_boundaries_retrains_once_and_the_schedule_can_be_off():
    assert [t.at_ms for t in run_clock([T0 + H, T0 + 3 * DAY + H])] == [T0 + 3 * DAY]
    assert run_clock([T0 + H, T0 + 3 * DAY + H], schedule_ms=0) == []
    assert run_clock([T0 + H, END_OF_STREAM]) == []  # the end of a replay is not a day


def test_a_burst_of_drift_records_trains_once_per_cooldown():
    state, fired = TriggerState(), []
    times = [T0 + H, T0 + H, T0 + 2 * H, T0 + 6 * H, T0 + 7 * H + 1, T0 + 8 * H]
    for i, t in enumerate(times):
        state, new = on_model_event(state, event(ModelEventKind.DRIFT_DETECTED, t, i % 2), 6 * H)
        fired += new
    # 01:00 fires; 01:00 (other instance), 02:00 and 06:00 are inside 6 h; 07:00+1 ms is not
    assert [t.at_ms for t in fired] == [T0 + H, T0 + 7 * H + 1]
    assert [t.trigger_id for t in fired] == [f"drift-{T0 + H}", f"drift-{T0 + 7 * H + 1}"]
    assert fired[0].detail.startswith(f"ensemble:x=v1:DRIFT_DETECTED:{T0 + H}:0")


def test_only_drift_detected_triggers():
    state = TriggerState()
    for kind in (ModelEventKind.DRIFT_RECOVERED, ModelEventKind.PROMOTED, ModelEventKind.LOADED):
        state, fired = on_model_event(state, event(kind, T0), 0)
        assert fired == []
    assert state == TriggerState()


def test_retrained_records_name_the_trigger_they_trained():
    retrained = ModelEventRecorded(
        event_id=f"xgboost:v3:RETRAINED:drift-{T0}", model="xgboost", version="v3",
        event_time_ms=T0, kind=ModelEventKind.RETRAINED, detail="",
    )  # fmt: skip
    assert retrained_trigger(retrained) == f"drift-{T0}"
    assert retrained_trigger(event(ModelEventKind.DRIFT_DETECTED, T0)) is None


def test_a_trigger_is_done_only_once_the_gate_decided_on_its_candidate():
    """A trainer that crashed between its RETRAINED record and the gate's decision left the
    trigger half done: after a restart it is still to do (and then finished, not retrained)."""
    state = TrainerState(TickClock(1))
    trigger = f"schedule-{T0}"

    def record(model: str, version: str, kind: ModelEventKind, suffix: str) -> None:
        state.on_event(ModelEventRecorded(
            event_id=f"{model}:{version}:{kind.value}:{suffix}", model=model, version=version,
            event_time_ms=T0, kind=kind, detail="",
        ), cooldown_ms=0)  # fmt: skip

    record("xgboost", "v3", ModelEventKind.RETRAINED, trigger)
    record("xgboost", "v3", ModelEventKind.SHADOW_SCORED, str(T0))
    assert state.handled == set()
    assert choose({Trigger("schedule", T0)}, T0, state.handled).train == Trigger("schedule", T0)
    # a decision about a version no retrain of this trainer made names no trigger
    record("lightgbm", "v9", ModelEventKind.PROMOTED, str(T0))
    assert state.handled == set()
    record("xgboost", "v3", ModelEventKind.PROMOTION_REFUSED, str(T0))
    assert state.handled == {trigger}
    assert choose({Trigger("schedule", T0)}, T0, state.handled).train is None
    assert len(state.seen) == 4


def test_choose_trains_the_newest_ready_trigger_skips_trained_ones_and_waits_for_ticks():
    a, b = Trigger("schedule", T0 + DAY), Trigger("drift", T0 + DAY + H)
    c = Trigger("drift", T0 + 2 * DAY)
    choice = choose({a, b, c}, T0 + DAY + 2 * H, handled=())
    assert choice.train == b and choice.superseded == (a,) and choice.waiting == (c,)
    # b was trained before a restart: it covers a (superseded then), nothing is left to train
    choice = choose({a, b, c}, T0 + DAY + 2 * H, handled={b.trigger_id})
    assert choice.train is None and choice.already == (a, b)
    # only a was trained before: b is newer and still trains
    choice = choose({a, b, c}, T0 + DAY + 2 * H, handled={a.trigger_id, "not-a-trigger"})
    assert choice.train == b and choice.already == (a,) and choice.superseded == ()
    assert choose({a}, T0 + DAY - 1, handled=()).train is None  # its ticks are not all read


def test_the_clock_is_the_slowest_partition_and_the_end_of_stream_releases_it():
    clock = TickClock(partitions=2)
    clock.tick(0, T0 + 10 * 60_000)
    assert clock.now_ms is None  # partition 1 has said nothing yet
    clock.watermark(1, T0 + 4 * 60_000)
    assert clock.now_ms == T0 + 4 * 60_000
    clock.tick(1, T0 + 12 * 60_000)
    assert clock.now_ms == T0 + 10 * 60_000
    clock.watermark(0, END_OF_STREAM)
    assert clock.now_ms == T0 + 12 * 60_000
    clock.watermark(1, END_OF_STREAM)
    assert clock.now_ms == T0 + 13 * 60_000  # every tick read: past the last one


def test_the_trainer_state_fires_the_schedule_from_ticks_and_drift_from_events():
    state = TrainerState(TickClock(partitions=1), keep_ms=H // 2)
    fired = []
    for i in range(0, 4 * 60, 5):  # 23:00 the day before .. 02:55, 5-minute steps
        fired += state.on_tick(0, tick("BTCUSDT", T0 - H + i * 60_000), schedule_ms=DAY)
    fired += state.on_event(event(ModelEventKind.DRIFT_DETECTED, T0 + 2 * H), 6 * H)
    assert [t.trigger_id for t in fired] == [f"schedule-{T0}", f"drift-{T0 + 2 * H}"]
    assert state.pending == set(fired)
    # bars older than the pending schedule trigger's lookback (30 min) are gone, later ones kept
    assert min(state.buffer.bars["BTCUSDT"]) == T0 - H // 2


def test_the_buffer_writes_the_window_in_the_kline_format_the_datasets_read(tmp_path: Path):
    from models.dataset import load_klines

    buffer = KlineBuffer()
    for i in range(10):
        buffer.add(tick("ETHUSDT", T0 + i * 60_000, close=2000.0 + i / 3))
    buffer.add(tick("ETHUSDT", T0, close=1.0))  # a second copy of a minute: the first is kept
    written = buffer.write(tmp_path, T0 + 2 * 60_000, T0 + 8 * 60_000)
    assert written == {"ETHUSDT": 6}
    with gzip.open(tmp_path / "ETHUSDT.csv.gz", "rt") as fh:
        assert fh.readline() == "open_time_ms,open,high,low,close,volume\n"
    k = load_klines(tmp_path)["ETHUSDT"]
    assert k.open_time_ms.tolist() == [T0 + i * 60_000 for i in range(2, 8)]
    assert k.close.tolist() == [2000.0 + i / 3 for i in range(2, 8)]  # the ticks' exact floats
    start, end = recent_window(T0 + DAY, 1.0, 60_000)
    assert (start, end) == (T0 - 60_000, T0 + DAY)


def test_the_buffer_keeps_a_joiners_warm_up_history_unless_the_tick_rule_refuses_it() -> None:
    import dataclasses

    from streams.contracts.records import HistoryBar

    def bar(minute: int, low: float = 1.0) -> HistoryBar:
        return HistoryBar(open_time_ms=T0 + minute * 60_000, open=2.0, high=3.0, low=low,
                          close=2.0, volume=1.0)  # fmt: skip

    buffer = KlineBuffer()
    buffer.add(dataclasses.replace(tick("ETHUSDT", T0 + 3 * 60_000), history=(bar(1), bar(2))))
    assert sorted(buffer.bars["ETHUSDT"]) == [T0 + m * 60_000 for m in (1, 2, 3)]
    broken = dataclasses.replace(tick("SOLUSDT", T0 + 3 * 60_000), history=(bar(2), bar(1)))
    buffer.add(broken)  # out of order: no history, the kline itself kept
    assert sorted(buffer.bars["SOLUSDT"]) == [T0 + 3 * 60_000]
