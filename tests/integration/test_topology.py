"""Golden replay: the whole topology on a real Kafka broker, twice, and the in-process runner.

The Kafka runs use a real Faust worker subprocess of ``streams.app`` (every stage as an agent),
the real bundled data and the registered ONNX models. Determinism across runs and across the two
execution paths is the contract of docs/determinism.md: all three must produce byte-identical
trades. The second Kafka run also gets malformed records injected into ``market.ticks`` while
the topology is busy; they must be dead-lettered with their reason and change no trade.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.config import Settings
from streams.demo import SAMPLE_DATA, DemoPlan, read_back, run_demo
from streams.topics import Topic, topic_name

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WINDOW = TimeWindow(parse_time_bound("2025-05-21T00:00"), parse_time_bound("2025-05-22T00:00"))
#: Lower gates than the seed's 65% so one day of data trades enough to make the test bite.
GATES = {"min_confidence": 0.5}
MALFORMED = (
    b"not avro at all",  # no wire header
    b"\x00\x00\x00\x00\x01",  # header of schema 1, empty body
    b"\x00\x00\x00\x27\x0f" + b"\x02" * 40,  # unknown schema id 9999
    b"\x00\x00\x00\x00\x01\x0eBTCUSDT\xff\xff",  # truncated body
)


def settings_for(bootstrap: str, runs_dir: Path) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        partitions=2,
        feedback_lag_ms=300_000,
        supervisor=GATES,
        runs_dir=runs_dir,
    )


def inject_malformed(bootstrap: str, prefix: str) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    for i, value in enumerate(MALFORMED):
        producer.produce(topic_name(Topic.MARKET_TICKS, prefix), value, b"BTCUSDT", partition=i % 2)
    assert producer.flush(30) == 0


@pytest.fixture(scope="module")
def runner_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from models.scorer import EnsembleScorer
    from streams.report import ReportBuilder
    from streams.runner import run

    settings = settings_for("unused:9092", tmp_path_factory.mktemp("runs"))
    builder = ReportBuilder(settings.risk.starting_equity_usd)
    stats = run(SAMPLE_DATA, EnsembleScorer.from_registry(settings.registry_dir), builder, settings,
                window=WINDOW)  # fmt: skip
    return builder.build(model_versions=stats.model_versions)


def test_kafka_runs_match_each_other_and_the_in_process_runner(
    kafka_bootstrap: str, tmp_path: Path, runner_report: dict
) -> None:
    settings = settings_for(kafka_bootstrap, tmp_path)
    clean = run_demo(settings, DemoPlan(window=WINDOW, timeout_s=900)).report
    dirty = run_demo(
        settings, DemoPlan(window=WINDOW, timeout_s=900, before_end=inject_malformed)
    ).report

    assert runner_report["counts"]["closed_trades"] >= 5, "the window must trade to be a test"
    assert clean["counts"]["closed_trades"] == runner_report["counts"]["closed_trades"]
    assert clean["trades_sha256"] == runner_report["trades_sha256"]
    assert dirty["trades_sha256"] == clean["trades_sha256"]
    # Same decisions, approvals and rejections all the way through, not just the same trades.
    for key in ("signals_by_action", "vetoes_by_reason", "decisions", "rejections_by_rule"):
        assert clean["counts"][key] == runner_report["counts"][key], key
    assert clean["counts"]["dead_letters"] == 0
    assert dirty["counts"]["dead_letters"] == len(MALFORMED)
    assert dirty["counts"]["dead_letters_by_reason"] == {"contract_violation": len(MALFORMED)}


def test_dead_letters_keep_the_raw_bytes_and_source_position(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, tmp_path)
    short = TimeWindow(WINDOW.start_ms, parse_time_bound("2025-05-21T03:00"))
    prefixes: list[str] = []

    def inject(bootstrap: str, prefix: str) -> None:
        prefixes.append(prefix)
        inject_malformed(bootstrap, prefix)

    run_demo(settings, DemoPlan(window=short, timeout_s=600, before_end=inject))
    letters = [
        r
        for r in read_back(kafka_bootstrap, prefixes[0], settings.partitions)
        if type(r).__name__ == "DeadLettered"
    ]
    assert sorted(r.raw for r in letters) == sorted(MALFORMED)
    for letter in letters:
        assert letter.stage == "features"  # the first stage reading market.ticks
        assert letter.source_topic == topic_name(Topic.MARKET_TICKS, prefixes[0])
        assert letter.source_offset is not None and letter.source_partition in (0, 1)
        assert letter.raw_key == b"BTCUSDT"
        assert letter.detail
