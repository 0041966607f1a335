"""A rollback hot-swaps every partition of a running topology at its event time, on real Kafka.

The demo's harness runs the topology (2 partitions) on 7 hours of the bundled sample in which
the confidence gate trades. Once the worker serves the promoted set, ``quantum-trader models
rollback xgboost --to v1 --at 17:25`` runs (the CLI itself, on a copy of the registry): it marks
v1 promoted and produces ``ROLLED_BACK`` to the run's ``models.events``. The swaps relay copies
it to each partition of ``models.swaps``; each partition's ensemble instance loads v1 and serves
it from 17:25 in event time. Read back from the run's topics: on both partitions every signal
before 17:25 carries xgboost v2 and every signal from 17:25 on v1, and each instance says
``LOADED`` at 17:25. The run is made twice, with one worker and with two (each owns one
partition, and one of them the relay): the trades are the same, and they are the in-process
runner's with the same record (which differ from the runner's without it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.config import Settings, SupervisorPolicy, get_settings
from streams.contracts.codec import topic_codec
from streams.contracts.records import ModelEventRecorded, SignalScored
from streams.demo import SAMPLE_DATA, DemoPlan, LiveRun, run_demo, topic_messages
from streams.topics import Topic, topic_name
from streams.vocabulary import ModelEventKind
from tests.shared_data import registry_copy

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WINDOW = TimeWindow(parse_time_bound("2025-05-21T12:30"), parse_time_bound("2025-05-21T19:30"))
SWAP_AT = parse_time_bound("2025-05-21T17:25")
PARTITIONS = 2


def settings_for(bootstrap: str, runs_dir: Path, registry: Path) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        partitions=PARTITIONS,
        supervisor=SupervisorPolicy(gate="confidence", min_confidence=0.5),  # it must trade
        runs_dir=runs_dir,
        registry_dir=registry,
    )


def rollback_once_serving(registry: Path, said: list[str]):  # type: ignore[no-untyped-def]
    """``DemoPlan.on_live``: once the worker serves the promoted set, roll xgboost back."""
    from streams.cli import app
    from streams.workers import worker_health

    def on_live(live: LiveRun) -> None:
        deadline = time.monotonic() + 180
        while True:  # the index must still name v2 when the worker loads its models
            health = worker_health(live.worker_port)
            if health is not None and health[1].get("models"):
                break
            assert time.monotonic() < deadline, "the worker never loaded its models"
            time.sleep(0.5)
        assert health[1]["models"]["xgboost"] == "v2"
        args = ["models", "rollback", "xgboost", "--to", "v1", "--at", str(SWAP_AT),
                "--reason", "test", "--registry", str(registry)]  # fmt: skip
        env = {"QT_KAFKA_BOOTSTRAP": live.bootstrap, "QT_TOPIC_PREFIX": live.prefix}
        get_settings.cache_clear()  # the command reads the broker and prefix from the settings
        try:
            result = CliRunner().invoke(app, args, env=env)
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 0, result.output
        said.append(result.output)

    return on_live


def read(bootstrap: str, prefix: str, topic: Topic, partitions: int) -> list[tuple[int, Any]]:
    codec = topic_codec(topic)
    return [
        (m.partition(), codec.decode_record(m.value()))
        for m in topic_messages(bootstrap, topic_name(topic, prefix), partitions)
    ]


def runner_trades(settings: Settings, events: list[ModelEventRecorded]) -> str:
    from models.scorer import EnsembleScorer
    from streams.report import ReportBuilder, trades_sha256
    from streams.runner import run

    builder = ReportBuilder(settings.risk.starting_equity_usd)
    run(SAMPLE_DATA, EnsembleScorer.from_registry(Settings().registry_dir), builder, settings,
        window=WINDOW, model_events=events)  # fmt: skip
    return trades_sha256(builder.trades)


def test_a_rollback_mid_run_swaps_every_partition_at_its_event_time_with_one_or_two_workers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:

    reports = []
    for workers in (1, 2):
        registry = registry_copy(tmp_path / f"registry-{workers}")
        settings = settings_for(kafka_bootstrap, tmp_path, registry)
        said: list[str] = []
        plan = DemoPlan(window=WINDOW, timeout_s=900, workers=workers,
                        run_dir=tmp_path / f"run-{workers}",
                        on_live=rollback_once_serving(registry, said))  # fmt: skip
        report = run_demo(settings, plan).report
        assert said and "v2 -> v1" in said[0], said
        prefix = report["topic_prefix"]

        served: dict[tuple[int, bool], set[str]] = {}
        for partition, signal in read(kafka_bootstrap, prefix, Topic.SIGNALS_ENSEMBLE, PARTITIONS):
            assert isinstance(signal, SignalScored)
            key = (partition, signal.event_time_ms >= SWAP_AT)
            served.setdefault(key, set()).update(
                v.version for v in signal.votes if v.model == "xgboost"
            )
        assert served == {
            (0, False): {"v2"}, (0, True): {"v1"},
            (1, False): {"v2"}, (1, True): {"v1"},
        }, f"{workers} worker(s)"  # fmt: skip
        events = [e for _, e in read(kafka_bootstrap, prefix, Topic.MODELS_EVENTS, 1)]
        rolled = [e for e in events if e.kind is ModelEventKind.ROLLED_BACK]
        loaded = [e for e in events if e.kind is ModelEventKind.LOADED]
        assert [(e.model, e.version, e.event_time_ms) for e in rolled] == [
            ("xgboost", "v1", SWAP_AT)
        ]
        assert sorted((e.event_id.rsplit(":", 1)[1], e.version, e.event_time_ms)
                      for e in loaded) == [("0", "v1", SWAP_AT), ("1", "v1", SWAP_AT)]  # fmt: skip
        reports.append(report)

    one, two = reports
    assert one["counts"]["closed_trades"] > 0, "the window must trade to be a test"
    assert two["workers"] == 2
    assert one["trades_sha256"] == two["trades_sha256"]
    swapped = runner_trades(settings, rolled)
    assert one["trades_sha256"] == swapped
    assert swapped != runner_trades(settings, []), "the swap must change the trades"
    for key in ("signals_by_action", "vetoes_by_reason", "decisions", "fills"):
        assert one["counts"].get(key) == two["counts"].get(key), key
