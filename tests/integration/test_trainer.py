"""The retraining worker on real Kafka: drift on ``models.events`` -> a candidate trained on the
recorded ``market.ticks`` -> the shadow gate's decision with its numbers on ``models.events``.
These tests run the trainer's held-back gate (``QT_PROMOTION__SHADOW=held_back``: it decides at
once); the stream shadow, the default, is tested in ``test_shadow_stream.py``.

2.5 days of two real futures symbols are replayed into a prefix's ``market.ticks`` (the file
replay, watermarks and end of stream included); a ``DRIFT_DETECTED`` record at 06:00 of the
last day goes on ``models.events``. ``quantum-trader trainer --once --models xgboost`` (the
CLI, on a copy of the registry) reads both topics, retrains xgboost on the last 2 days of the
ticks before the drift, registers it as a candidate and records what the gate decided. The
day boundaries the ticks crossed were due too and are superseded by the newer drift trigger;
a restarted trainer does not train any of them again. Without any drift, the day boundary the
ticks crossed is what a trainer on a fresh prefix trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.config import get_settings
from streams.contracts.codec import topic_codec
from streams.contracts.records import ModelEventRecorded
from streams.demo import topic_messages
from streams.kafka_io import ProducerOptions
from streams.topics import Topic, topic_name
from streams.trainer.publish import publish_model_events
from streams.vocabulary import ModelEventKind
from tests.shared_data import BINANCE, registry_copy

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FUTURES = BINANCE / "um_futures_1m_2025"
WINDOW = TimeWindow(parse_time_bound("2025-05-15T00:00"), parse_time_bound("2025-05-17T12:00"))
DRIFT_AT = parse_time_bound("2025-05-17T06:00")
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def test_drift_retrains_a_candidate_on_the_recorded_ticks_and_records_the_gate_decision(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    from streams.adapters.replay.files import replay_files
    from streams.cli import app

    registry = registry_copy(tmp_path / "registry")
    champion = json.loads((registry / "index.json").read_text())["promoted"]
    replay_files(
        FUTURES, bootstrap=kafka_bootstrap, prefix=unique_prefix, symbols=SYMBOLS, window=WINDOW,
        options=ProducerOptions(kafka_bootstrap), partitions=2, show_progress=False,
        end_of_stream=True,
    )  # fmt: skip
    drift = ModelEventRecorded(
        event_id=f"ensemble:test:DRIFT_DETECTED:{DRIFT_AT}:0", model="ensemble", version="test",
        event_time_ms=DRIFT_AT, kind=ModelEventKind.DRIFT_DETECTED,
        detail="ensemble instance 0: significant (test)", metric_name="psi:vol_60", metric=0.43,
    )  # fmt: skip
    publish_model_events(kafka_bootstrap, unique_prefix, [drift])

    env = {
        "QT_KAFKA_BOOTSTRAP": kafka_bootstrap, "QT_TOPIC_PREFIX": unique_prefix,
        "QT_PARTITIONS": "2", "QT_RUNS_DIR": str(tmp_path / "runs"),
        "QT_TRAINER__LOOKBACK_DAYS": "2", "QT_PROMOTION__SHADOW": "held_back",
    }  # fmt: skip
    args = ["trainer", "--once", "--models", "xgboost", "--registry", str(registry)]
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, args, env=env)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    trigger = f"drift-{DRIFT_AT}"
    assert f"schedule-{parse_time_bound('2025-05-17T00:00')} superseded by {trigger}" in (
        result.output
    )

    # the candidate: registered, trained on the 2 days of recorded ticks before the drift
    manifest = json.loads((registry / "xgboost" / "v3" / "manifest.json").read_text())
    data_dir = Path(manifest["data_source"]["data_dir"])
    assert data_dir == (tmp_path / "runs" / "trainer" / trigger / "data").resolve()
    assert sorted(p.name for p in data_dir.iterdir()) == [f"{s}.csv.gz" for s in SYMBOLS]
    assert manifest["data_source"]["requested_start"] == "2025-05-15T06:00:00Z"
    assert manifest["data_source"]["requested_end_exclusive"] == "2025-05-17T06:00:00Z"
    assert manifest["train_range"]["first_ms"] >= parse_time_bound("2025-05-15T06:00")
    assert manifest["validation_range"]["last_ms"] < DRIFT_AT

    codec = topic_codec(Topic.MODELS_EVENTS)
    records = [
        codec.decode_record(m.value())
        for m in topic_messages(kafka_bootstrap, topic_name(Topic.MODELS_EVENTS, unique_prefix), 1)
    ]
    ours = [r for r in records if r.event_id != drift.event_id]
    kinds = [r.kind for r in ours]
    assert kinds[:2] == [ModelEventKind.RETRAINED, ModelEventKind.SHADOW_SCORED]
    assert kinds[2] in (ModelEventKind.PROMOTED, ModelEventKind.PROMOTION_REFUSED)
    assert len(ours) == 3 and {(r.model, r.version) for r in ours} == {("xgboost", "v3")}
    retrained, scored, verdict = ours
    assert retrained.event_id == f"xgboost:v3:RETRAINED:{trigger}"
    assert scored.event_id == f"xgboost:v3:SHADOW_SCORED:{DRIFT_AT}"
    assert verdict.event_id == f"xgboost:v3:{verdict.kind.value}:{DRIFT_AT}"
    assert all(r.event_time_ms == DRIFT_AT for r in ours)
    # the gate's numbers: both sets' decisions and PnL, the paired difference's interval
    assert verdict.metric_name == "shadow_pnl_diff_lower" and verdict.metric is not None
    assert "| candidate xgboost@v3: " in verdict.detail and "| champion " in verdict.detail
    assert "candidate - champion CI [" in verdict.detail
    index = json.loads((registry / "index.json").read_text())["promoted"]
    if verdict.kind == ModelEventKind.PROMOTED:
        assert index == {**champion, "xgboost": "v3"}
    else:  # a candidate is never served: the champion stays
        assert verdict.detail.startswith("refuse: ") and index == champion
    history = [
        json.loads(line)["event_id"]
        for line in (registry / "events.jsonl").read_text().splitlines()
    ]
    assert history == [r.event_id for r in ours]

    # A restarted trainer reads its RETRAINED record back: the drift trigger (and the day
    # boundaries it superseded) are not trained again; --once then retrains at the ticks' end.
    get_settings.cache_clear()
    try:
        again = CliRunner().invoke(app, args, env=env)
    finally:
        get_settings.cache_clear()
    assert again.exit_code == 0, again.output
    assert "1 trigger(s) trained before" in again.output
    end = f"operator-{WINDOW.end_ms}"
    later = [
        codec.decode_record(m.value())
        for m in topic_messages(kafka_bootstrap, topic_name(Topic.MODELS_EVENTS, unique_prefix), 1)
    ][len(records) :]
    assert [r.event_id for r in later][:1] == [f"xgboost:v4:RETRAINED:{end}"]
    assert not [r for r in later if r.event_id.endswith(trigger)]


def _open_day_of_sol(bootstrap: str, prefix: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """SOLUSDT 2025-05-12 00:00 .. 05-13 18:00 replayed into ``prefix`` without an end of stream
    (the ticks crossed midnight); a registry copy, the settings and an xgboost retrain plan."""
    from streams.adapters.replay.files import replay_files
    from streams.config import PromotionRule, Settings
    from streams.trainer.retrain import RetrainPlan

    registry = registry_copy(tmp_path / "registry")
    window = TimeWindow(parse_time_bound("2025-05-12T00:00"), parse_time_bound("2025-05-13T18:00"))
    replay_files(
        FUTURES, bootstrap=bootstrap, prefix=prefix, symbols=("SOLUSDT",), window=window,
        options=ProducerOptions(bootstrap), partitions=2, show_progress=False,
    )  # fmt: skip
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix,
                        promotion=PromotionRule(shadow="held_back"))  # fmt: skip
    plan = RetrainPlan(registry, tmp_path / "trainer", ("xgboost",), lookback_days=1.0, folds=2,
                       seed=7)  # fmt: skip
    return registry, settings, plan


def test_a_trainer_on_a_prefix_without_model_events_retrains_at_the_day_its_ticks_crossed(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """No ``models.events`` yet (nothing drifted): the trainer creates it; the ticks' event time
    crossed midnight, so ``once`` trains that schedule trigger, on the ticks before it only (the
    replay is still open: no end of stream)."""
    from streams.trainer.loop import Trainer

    registry, settings, plan = _open_day_of_sol(kafka_bootstrap, unique_prefix, tmp_path)
    midnight = parse_time_bound("2025-05-13T00:00")
    [outcome] = Trainer(kafka_bootstrap, unique_prefix, settings, plan, log=lambda _: None).run(
        once=True
    )
    assert outcome.trigger.trigger_id == f"schedule-{midnight}"
    manifest = json.loads((registry / "xgboost" / "v3" / "manifest.json").read_text())
    assert manifest["data_source"]["requested_start"] == "2025-05-12T00:00:00Z"
    assert manifest["validation_range"]["last_ms"] < midnight
    codec = topic_codec(Topic.MODELS_EVENTS)
    records = [
        codec.decode_record(m.value())
        for m in topic_messages(kafka_bootstrap, topic_name(Topic.MODELS_EVENTS, unique_prefix), 1)
    ]
    assert [r.event_id for r in records] == [e.event_id for e in outcome.events]
    assert records[0].event_id == f"xgboost:v3:RETRAINED:schedule-{midnight}"
    assert records[-1].kind in (ModelEventKind.PROMOTED, ModelEventKind.PROMOTION_REFUSED)


class Killed(Exception):
    """A trainer process dying at this point (raised through ``Trainer.run``)."""


def test_a_trainer_killed_mid_retrain_finishes_that_retrain_without_a_second_version(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """Killed after registering its candidate (before any record reached the topic), then
    again after the gate decided (before the decision reached the topic): each restart
    finishes the same retrain. One version is trained, never an orphan ``v4``; every record is
    on ``models.events`` and in the registry's history exactly once."""
    from streams.trainer.loop import Trainer

    registry, settings, plan = _open_day_of_sol(kafka_bootstrap, unique_prefix, tmp_path)
    trigger = f"schedule-{parse_time_bound('2025-05-13T00:00')}"
    logs: list[str] = []

    def dies_at_publish(n: int):  # type: ignore[no-untyped-def]
        """Publishes for real until the ``n``-th call, which kills the trainer instead."""
        calls = []

        def publish(events: list[ModelEventRecorded]) -> None:
            calls.append(events)
            if len(calls) == n:
                raise Killed(f"killed before publishing {[e.kind.value for e in events]}")
            publish_model_events(kafka_bootstrap, unique_prefix, events)

        return publish

    def trainer(publish):  # type: ignore[no-untyped-def]
        return Trainer(kafka_bootstrap, unique_prefix, settings, plan, log=logs.append,
                       publish=publish)  # fmt: skip

    def on_topic() -> list[ModelEventRecorded]:
        codec = topic_codec(Topic.MODELS_EVENTS)
        topic = topic_name(Topic.MODELS_EVENTS, unique_prefix)
        return [codec.decode_record(m.value()) for m in topic_messages(kafka_bootstrap, topic, 1)]

    with pytest.raises(Killed):  # registered v3 and wrote RETRAINED to the registry's history
        trainer(dies_at_publish(1)).run(once=True)
    assert (registry / "xgboost" / "v3").is_dir() and on_topic() == []
    with pytest.raises(Killed):  # published RETRAINED, decided, died before publishing that
        trainer(dies_at_publish(2)).run(once=True)
    assert f"retrain {trigger}: xgboost v3 registered before a restart" in logs
    assert [r.event_id for r in on_topic()] == [f"xgboost:v3:RETRAINED:{trigger}"]
    logs.clear()
    [outcome] = trainer(None).run(once=True)

    assert outcome.trigger.trigger_id == trigger and outcome.candidates == {"xgboost": "v3"}
    assert f"{trigger}: the gate's decision was recorded before a restart; publishing it" in logs
    assert not (registry / "xgboost" / "v4").exists()
    records = on_topic()
    at = parse_time_bound("2025-05-13T00:00")
    assert [r.event_id for r in records][:2] == [
        f"xgboost:v3:RETRAINED:{trigger}",
        f"xgboost:v3:SHADOW_SCORED:{at}",
    ]
    assert len(records) == 3 and records[2].kind in (
        ModelEventKind.PROMOTED, ModelEventKind.PROMOTION_REFUSED
    )  # fmt: skip
    history = [
        json.loads(line)["event_id"]
        for line in (registry / "events.jsonl").read_text().splitlines()
    ]
    assert history == [r.event_id for r in records]
    manifest = json.loads((registry / "xgboost" / "v3" / "manifest.json").read_text())
    assert manifest["data_source"]["trained_for"] == trigger


def test_drift_the_topology_raises_on_the_2021_spot_market_retrains_a_candidate(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    """The whole chain on real Kafka, nothing put on the topic by hand: the topology's ensemble
    measures 12 hours of the 2021 spot market (another year and market than the training's
    futures) against the models' training reference and raises ``DRIFT_DETECTED`` on
    ``models.events``; the trainer reads it as a drift trigger and retrains on the kline files
    of the two days before it (``--data``); the gate's decision follows on the topic."""
    import io

    from rich.console import Console

    from streams.config import DriftConfig, PromotionRule, Settings
    from streams.demo import DemoPlan, run_demo
    from streams.trainer.loop import Trainer
    from streams.trainer.retrain import RetrainPlan

    spot = BINANCE / "spot_1m"
    registry = registry_copy(tmp_path / "registry")
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, runs_dir=tmp_path / "runs", partitions=1,
        registry_dir=registry, promotion=PromotionRule(shadow="held_back"),
        drift=DriftConfig(window_ms=4 * 3_600_000, slot_ms=3_600_000, min_samples=300),
    )  # fmt: skip
    window = TimeWindow(parse_time_bound("2021-04-12T00:00"), parse_time_bound("2021-04-12T12:00"))
    run_demo(settings, DemoPlan(data=spot, symbols=SYMBOLS, window=window, prefix=unique_prefix,
                                run_dir=tmp_path / "run", timeout_s=900),
             Console(file=io.StringIO()))  # fmt: skip

    codec = topic_codec(Topic.MODELS_EVENTS)
    topic = topic_name(Topic.MODELS_EVENTS, unique_prefix)
    raised = [codec.decode_record(m.value()) for m in topic_messages(kafka_bootstrap, topic, 1)]
    drifts = [e for e in raised if e.kind is ModelEventKind.DRIFT_DETECTED]
    assert drifts, f"the topology raised no drift: {[e.event_id for e in raised]}"
    first = drifts[0]
    assert first.model == "ensemble" and "significant drift" in first.detail
    assert window.start_ms + 4 * 3_600_000 <= first.event_time_ms < window.end_ms

    plan = RetrainPlan(registry, tmp_path / "trainer", ("xgboost",), lookback_days=2.0, folds=2,
                       seed=7)  # fmt: skip
    logs: list[str] = []
    [outcome] = Trainer(kafka_bootstrap, unique_prefix, settings, plan, files=spot,
                        log=logs.append).run(once=True)  # fmt: skip
    assert outcome.trigger.cause == "drift" and outcome.trigger.at_ms == first.event_time_ms
    manifest = json.loads((registry / "xgboost" / "v3" / "manifest.json").read_text())
    assert manifest["data_source"]["trained_for"] == outcome.trigger.trigger_id
    assert manifest["validation_range"]["last_ms"] < first.event_time_ms
    after = [codec.decode_record(m.value()) for m in topic_messages(kafka_bootstrap, topic, 1)]
    ours = [e for e in after if e.event_id.startswith("xgboost:v3:")]
    assert [e.kind for e in ours][:2] == [ModelEventKind.RETRAINED, ModelEventKind.SHADOW_SCORED]
    assert ours[-1].kind in (ModelEventKind.PROMOTED, ModelEventKind.PROMOTION_REFUSED)
