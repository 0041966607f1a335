"""Shadow scoring on the stream, on real Kafka: trainer -> SHADOW_STARTED -> the topology's shadow
and promotion stages -> the gate's decision on ``models.events``.

1. ``trainer --once --models xgboost`` with ``QT_PROMOTION__SHADOW=stream`` retrains on 2 days of
   recorded futures ticks before a drift record: it registers the candidate, writes the gate table
   it measured on the candidate's folds into the candidate's manifest and records
   ``RETRAINED`` and ``SHADOW_STARTED``; it decides nothing and the index keeps the champion.
2. Those records on a second prefix's ``models.events``, the topology (two partitions, so two
   shadow instances feed the one promotion instance) replays the 12 hours from the drift on:
   every partition's shadow instance scores the candidate beside the champion from the
   shadow's event time, ``signals.shadow`` carries each row settled one label horizon later,
   and the promotion stage records ``SHADOW_SCORED`` and its verdict, with the numbers, on
   ``models.events`` at the row that completes the candidate's 200th would-be decision: the
   same row, and the same figures, as the rule gives on the topic's rows in event-time order.
   (The measured table has no tradeable bucket, so for this step the candidate gets one that
   lets every vote through: otherwise it stands aside and is refused when its time is up.)
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from models.edge import attach_gate
from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.config import PromotionRule, Settings, get_settings
from streams.contracts.codec import topic_codec
from streams.contracts.records import ModelEventRecorded
from streams.demo import DemoPlan, run_demo, topic_messages
from streams.kafka_io import ProducerOptions
from streams.stages.edge import EdgeGate
from streams.stages.promotion import PromotionStage
from streams.topics import Topic, topic_name
from streams.trainer.publish import publish_model_events
from streams.vocabulary import Action, ModelEventKind
from tests.shared_data import BINANCE, registry_copy

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

FUTURES = BINANCE / "um_futures_1m_2025"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
DRIFT_AT = parse_time_bound("2025-05-17T06:00")
SHADOW_MS = 6 * 3_600_000


def _events(bootstrap: str, prefix: str) -> list[ModelEventRecorded]:
    codec = topic_codec(Topic.MODELS_EVENTS)
    topic = topic_name(Topic.MODELS_EVENTS, prefix)
    return [codec.decode_record(m.value()) for m in topic_messages(bootstrap, topic, 1)]


def test_a_candidate_is_shadow_scored_on_the_stream_and_the_promotion_stage_decides(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    from streams.adapters.replay.files import replay_files
    from streams.cli import app

    registry = registry_copy(tmp_path / "registry")
    champion = json.loads((registry / "index.json").read_text())["promoted"]
    train = TimeWindow(parse_time_bound("2025-05-15T00:00"), DRIFT_AT)
    replay_files(
        FUTURES, bootstrap=kafka_bootstrap, prefix=unique_prefix, symbols=SYMBOLS, window=train,
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
        "QT_TRAINER__LOOKBACK_DAYS": "2", "QT_PROMOTION__SHADOW": "stream",
    }  # fmt: skip
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app, ["trainer", "--once", "--models", "xgboost", "--registry", str(registry)],
            env=env,
        )  # fmt: skip
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "shadow-scored on the stream" in result.output

    # 1. the trainer hands the candidate to the stream: its gate in its manifest, no decision
    started = [e for e in _events(kafka_bootstrap, unique_prefix) if e.event_id != drift.event_id]
    assert [(e.kind, e.model, e.version) for e in started] == [
        (ModelEventKind.RETRAINED, "xgboost", "v3"),
        (ModelEventKind.SHADOW_STARTED, "xgboost", "v3"),
    ]
    shadow = started[1]
    assert shadow.event_id == f"xgboost:v3:SHADOW_STARTED:{DRIFT_AT}"
    assert shadow.event_time_ms == DRIFT_AT and "candidate xgboost@v3" in shadow.detail
    manifest = json.loads((registry / "xgboost" / "v3" / "manifest.json").read_text())
    gate = manifest["edge_gate"]
    assert gate["members"] == {"xgboost": "v3"}
    assert json.loads((registry / "index.json").read_text())["promoted"] == champion

    # 2. the topology shadow-scores it beside the champion and the promotion stage decides.
    # The measured table lets no bucket through (0 would-be decisions: refused when the time
    # is up, the shadow's only outcome); one that lets every vote through makes the candidate
    # trade, so the decision must fall on the row that completes its 200th decision.
    measured = EdgeGate.from_dict(gate)
    if not measured.tradeable():
        attach_gate(registry, replace(measured, buckets=tuple(
            replace(b, tradeable=True) for b in measured.buckets)))  # fmt: skip
    prefix = f"{unique_prefix}s."
    publish_model_events(kafka_bootstrap, prefix, [shadow])
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, runs_dir=tmp_path / "runs", partitions=2,
        registry_dir=registry,
        promotion=PromotionRule(shadow="stream", min_decisions=200, max_shadow_ms=SHADOW_MS),
    )  # fmt: skip
    window = TimeWindow(DRIFT_AT - 3 * 3_600_000, DRIFT_AT + SHADOW_MS + 3_600_000)
    run_demo(settings, DemoPlan(data=FUTURES, symbols=SYMBOLS, window=window, prefix=prefix,
                                run_dir=tmp_path / "run", timeout_s=900),
             Console(file=io.StringIO()))  # fmt: skip

    codec = topic_codec(Topic.SIGNALS_SHADOW)
    rows = [
        codec.decode_record(m.value())
        for m in topic_messages(kafka_bootstrap, topic_name(Topic.SIGNALS_SHADOW, prefix), 1)
        if m.value()
    ]
    assert {r.symbol for r in rows} == set(SYMBOLS)
    horizon = measured.horizon_bars * 60_000
    for r in rows:
        assert r.shadow_id == f"shadow:{DRIFT_AT}" and r.candidate == {"xgboost": "v3"}
        assert r.champion == champion and r.decided_ms >= DRIFT_AT
        assert r.event_time_ms == r.decided_ms + horizon
        assert [v.version for v in r.votes] == ["v3"]
        assert r.candidate_action is r.votes[0].action  # every bucket is tradeable now
        assert (r.candidate_pnl == 0.0) == (r.candidate_action is Action.HOLD)
    keys = [(r.symbol, r.decided_ms) for r in rows]
    assert len(keys) == len(set(keys))  # each row settled once
    verdicts = [
        e
        for e in _events(kafka_bootstrap, prefix)
        if e.kind
        in (ModelEventKind.SHADOW_SCORED, ModelEventKind.PROMOTED, ModelEventKind.PROMOTION_REFUSED)
    ]
    assert [e.kind for e in verdicts][:1] == [ModelEventKind.SHADOW_SCORED]
    assert len(verdicts) == 2, [e.event_id for e in verdicts]
    verdict = verdicts[1]
    assert (verdict.model, verdict.version) == ("xgboost", "v3")

    # the same decision, at the same row, from the topic's rows in the merge's order
    expected = PromotionStage.from_settings(settings)
    made: list[ModelEventRecorded] = []
    for r in sorted(rows, key=lambda r: (r.event_time_ms, r.symbol, r.decided_ms)):
        made = expected.on_shadow(r)
        if made:
            break
    assert made == verdicts
    assert verdict.event_id == f"xgboost:v3:{verdict.kind.value}:{verdict.event_time_ms}"
    assert "| candidate xgboost@v3: 200 decisions on " in verdict.detail
    assert "| champion " in verdict.detail and "candidate - champion CI [" in verdict.detail
