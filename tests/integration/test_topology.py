"""Golden replay: the whole topology on a real Kafka broker, twice, and the in-process runner.

The Kafka runs use a real Faust worker subprocess of ``streams.app`` (every stage as an agent),
the real bundled data and the registered ONNX models. Determinism across runs and across the two
execution paths is the contract of docs/determinism.md: all three must produce byte-identical
trades. The second Kafka run also gets bad records of every kind a foreign producer can write
injected into ``market.ticks`` while the topology is busy (garbage, broken wire format, valid
Avro with impossible values, a bad clock, a wrong key, another topic's record, a record over
1 MB, a broken watermark): each must be dead-lettered once, by the first stage that reads
ticks, with its reason, and change no trade.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from pathlib import Path

import pytest

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.config import Settings
from streams.contracts.codec import topic_codec
from streams.contracts.deadletters import RAW_LIMIT
from streams.contracts.examples import load_example
from streams.contracts.records import DeadLettered, TickKind, TickReceived
from streams.demo import SAMPLE_DATA, DemoPlan, read_back, run_demo
from streams.stages import partition_for
from streams.topics import Topic, topic_name
from tests.run_diffs import assert_same_decisions

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WINDOW = TimeWindow(parse_time_bound("2025-05-21T00:00"), parse_time_bound("2025-05-22T00:00"))
#: Lower gates than the seed's 65% so one day of data trades enough to make the test bite.
GATES = {"gate": "confidence", "min_confidence": 0.5}
MALFORMED = (
    b"not avro at all",  # no wire header
    b"\x00\x00\x00\x00\x01",  # header of schema 1, empty body
    b"\x00\x00\x00\x27\x0f" + b"\x02" * 40,  # unknown schema id 9999
    b"\x00\x00\x00\x00\x01\x0eBTCUSDT\xff\xff",  # truncated body
)


LAST_MINUTE = WINDOW.end_ms - 60_000  # type: ignore[operator]
#: Over the broker's default 1 MB limit (the injector raises the topic's limit for it).
HUGE_BYTES = 1_500_000


def _tick(**changes: object) -> TickReceived:
    base = TickReceived(
        symbol="BTCUSDT", event_time_ms=LAST_MINUTE, kind=TickKind.KLINE_1M, open=100_000.0,
        high=100_100.0, low=99_900.0, close=100_050.0, volume=12.5, interval_ms=60_000,
        source="another-client",
    )  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _unvalidated(tick: TickReceived) -> bytes:
    """Valid Avro the project's codec would refuse to write (NaN): a foreign producer's."""
    import io

    from fastavro import schemaless_writer

    from streams.contracts.codec import wire_header

    codec = topic_codec(Topic.MARKET_TICKS)
    body = io.BytesIO()
    schemaless_writer(body, codec.reader_schema, tick.to_avro())
    return wire_header(codec.schema_id) + body.getvalue()


def poison() -> list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]:
    """(expected reason, key, value, headers) of every bad record the dirty run gets."""
    ticks = topic_codec(Topic.MARKET_TICKS)
    btc = b"BTCUSDT"
    command = topic_codec(Topic.CONTROL_COMMANDS).encode(load_example(Topic.CONTROL_COMMANDS))
    bad_ticks = [
        ("non_positive_price", btc, _tick(low=-5.0, open=-5.0)),
        ("non_positive_price", btc, _tick(open=0.0, low=0.0)),
        ("high_below_low", btc, _tick(high=99_000.0)),
        ("open_close_outside_range", btc, _tick(close=101_000.0)),
        ("negative_volume", btc, _tick(volume=-1.0)),
        ("misaligned_time", btc, _tick(event_time_ms=LAST_MINUTE + 30_000)),
        ("implausible_time", btc, _tick(event_time_ms=7_258_118_400_000)),  # year 2200
        ("event_time_skew", btc, _tick(event_time_ms=LAST_MINUTE + 30 * 86_400_000)),
        ("out_of_order_time", btc, _tick(event_time_ms=WINDOW.start_ms + 600_000)),
        ("duplicate_time", btc, _tick()),  # BTCUSDT's last minute, again
        ("key_mismatch", None, _tick()),
        ("key_mismatch", b"ETHUSDT", _tick()),
        ("bad_symbol", b"btcusdt", _tick(symbol="btcusdt")),
        ("bad_kind_fields", btc, _tick(kind=TickKind.TRADE, trade_id=7)),
        ("bad_symbol", btc, _tick(symbol="X" * HUGE_BYTES)),
    ]
    out: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = [
        ("contract_violation", btc, value, []) for value in MALFORMED
    ]
    out += [(reason, key, ticks.encode(t), []) for reason, key, t in bad_ticks]
    out += [
        ("contract_violation", btc, b"\x01" + ticks.encode(_tick())[1:], []),  # wrong magic byte
        ("contract_violation", btc, _unvalidated(_tick(close=float("nan"))), []),
        ("contract_violation", btc, command, []),  # another topic's record
        ("invalid_watermark", None, b"", [("qt-watermark", b"soon"), ("qt-source", b"replay")]),
    ]
    return out


def inject_poison(bootstrap: str, prefix: str) -> None:
    """A plain confluent-kafka producer writes every :func:`poison` record mid-run."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    topic = topic_name(Topic.MARKET_TICKS, prefix)
    big = ConfigEntry("max.message.bytes", str(4 * HUGE_BYTES),
                      incremental_operation=AlterConfigOpType.SET)  # fmt: skip
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[big])
    admin = AdminClient({"bootstrap.servers": bootstrap})  # alive until the futures resolve
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4 * HUGE_BYTES})
    for _reason, key, value, headers in poison():
        # The symbol's own partition where the key is one (the first reader sees its history).
        partition = partition_for(key.decode(), 2) if key else 0
        producer.produce(topic, value, key, partition=partition, headers=headers)
    assert producer.flush(60) == 0


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


def runner_run(settings: Settings, window: TimeWindow, run_dir: Path) -> dict:
    """The in-process runner over ``window``, written as a run folder like a backtest's."""
    from models.scorer import EnsembleScorer
    from streams.report import ReportBuilder, write_run
    from streams.runner import run

    builder = ReportBuilder(settings.risk.starting_equity_usd)
    stats = run(SAMPLE_DATA, EnsembleScorer.from_registry(settings.registry_dir), builder, settings,
                window=window)  # fmt: skip
    report = builder.build(model_versions=stats.model_versions)
    write_run(run_dir, report, builder.trades, builder.decisions)
    return report


@pytest.fixture(scope="module")
def runner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    settings = settings_for("unused:9092", tmp_path_factory.mktemp("runs"))
    run_dir = settings.runs_dir / "runner"
    runner_run(settings, WINDOW, run_dir)
    return run_dir


def test_kafka_runs_match_each_other_and_the_in_process_runner(
    kafka_bootstrap: str, tmp_path: Path, runner_dir: Path
) -> None:
    from streams.report import load_report

    runner_report = load_report(runner_dir)
    settings = settings_for(kafka_bootstrap, tmp_path)
    clean_run = run_demo(settings, DemoPlan(window=WINDOW, timeout_s=900))
    prefixes: list[str] = []

    def inject(bootstrap: str, prefix: str) -> None:
        prefixes.append(prefix)
        inject_poison(bootstrap, prefix)

    dirty_run = run_demo(settings, DemoPlan(window=WINDOW, timeout_s=900, before_end=inject))
    clean, dirty = clean_run.report, dirty_run.report

    assert runner_report["counts"]["closed_trades"] >= 5, "the window must trade to be a test"
    # Decision by decision first: a failure names the first step where the runs parted.
    assert_same_decisions(runner_dir, clean_run.run_dir)
    assert_same_decisions(clean_run.run_dir, dirty_run.run_dir)
    assert clean["decisions_sha256"] == runner_report["decisions_sha256"]
    assert clean["counts"]["closed_trades"] == runner_report["counts"]["closed_trades"]
    assert clean["trades_sha256"] == runner_report["trades_sha256"]
    assert dirty["trades_sha256"] == clean["trades_sha256"]
    # Same decisions, approvals and rejections all the way through, not just the same trades.
    for key in ("signals_by_action", "vetoes_by_reason", "decisions", "rejections_by_rule"):
        assert clean["counts"][key] == runner_report["counts"][key], key
    assert clean["counts"]["dead_letters"] == 0
    expected = Counter(reason for reason, *_ in poison())
    assert dirty["counts"]["dead_letters_by_reason"] == dict(sorted(expected.items()))
    assert dirty["counts"]["dead_letters"] == len(poison())
    assert dirty["counts"]["ticks"] == clean["counts"]["ticks"]  # no bad tick counts as data

    letters = [
        r for r in read_back(kafka_bootstrap, prefixes[0], settings.partitions)
        if isinstance(r, DeadLettered)
    ]  # fmt: skip
    assert {r.stage for r in letters} == {"features"}  # once, by the first reader of ticks
    (huge,) = [r for r in letters if r.raw_length is not None]
    assert huge.reason == "bad_symbol" and len(huge.raw) == RAW_LIMIT
    assert huge.raw_length is not None and huge.raw_length > HUGE_BYTES
    assert huge.raw_sha256 is not None and len(huge.raw_sha256) == 64


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


def test_a_topic_replay_of_recorded_ticks_drives_the_topology(
    kafka_bootstrap: str, tmp_path: Path, unique_prefix: str
) -> None:
    """A recorded ``market.ticks`` range, copied by the topic replay (its own watermarks and
    end of stream), drains the topology and decides exactly as the runner over that range."""
    from streams.adapters.replay.files import replay_files
    from streams.demo import RecordedTicks

    settings = settings_for(kafka_bootstrap, tmp_path)
    recorded = f"{unique_prefix}rec."
    replay_files(
        SAMPLE_DATA, bootstrap=kafka_bootstrap, prefix=recorded, window=WINDOW,
        partitions=settings.partitions, show_progress=False,
    )  # fmt: skip
    # 8 hours from the middle of the day (features warm up in its first two), cold on both paths
    middle = TimeWindow(parse_time_bound("2025-05-21T12:00"), parse_time_bound("2025-05-21T20:00"))
    source = RecordedTicks(topic_name(Topic.MARKET_TICKS, recorded), middle)
    replayed = run_demo(settings, DemoPlan(recorded=source, timeout_s=600))
    runner = runner_run(settings, middle, tmp_path / "runner")

    assert runner["counts"]["decisions"] >= 3, "the range must decide to be a test"
    assert replayed.report["counts"]["ticks"] == runner["counts"]["ticks"] == 5 * 8 * 60
    assert_same_decisions(tmp_path / "runner", replayed.run_dir)
    # The same, read from the run's topics on the broker (what an operator would diff).
    topics = f"kafka:{replayed.report['topic_prefix']}"
    assert_same_decisions(tmp_path / "runner", topics, "--bootstrap", kafka_bootstrap)
    assert replayed.report["trades_sha256"] == runner["trades_sha256"]
    assert replayed.report["source_topic"] == source.topic


def test_a_clean_stop_stores_what_every_stage_handled_last(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A HALT stamped at the last tick (as the dashboard stamps one) is applied at the end of
    stream, after which the demo stops its worker (SIGTERM) as soon as the topology drained.
    With the timer's flushes an hour apart, only the stop can have stored that: the risk
    stage's stored portfolio is halted and its stored progress is the end of stream (before, the
    last second of every stage's state was lost at a clean stop, and handled again at the next
    start)."""
    from streams.commands.control import send_command
    from streams.dashboard.model import ReadModel
    from streams.dashboard.sources import read_stored_states
    from streams.ordering import END_OF_STREAM

    settings = settings_for(kafka_bootstrap, tmp_path).model_copy(
        update={"state_flush_ms": 3_600_000}
    )
    short = TimeWindow(WINDOW.start_ms, parse_time_bound("2025-05-21T02:00"))
    last_tick = short.end_ms - 60_000  # type: ignore[operator]
    prefix = f"stop-flush-{uuid.uuid4().hex[:8]}."

    def halt(bootstrap: str, run_prefix: str) -> None:
        send_command("HALT", "stored at the stop", last_tick, None, bootstrap, run_prefix)

    run_demo(settings, DemoPlan(window=short, timeout_s=600, prefix=prefix, before_end=halt))
    model = ReadModel.from_settings(settings)
    read_stored_states(model, kafka_bootstrap, settings.app_id, prefix, "after the stop")
    risk = model.risk_state()
    assert risk is not None and risk["halted"], risk
    assert risk["halt_reason"] == "stored at the stop"
    assert risk["progress_ms"] == END_OF_STREAM
