"""The whole topology on a real Kafka, fed by the live ingest from a local Binance with faults.

``quantum-trader live --until`` in-process (:func:`streams.adapters.live.run.run_live`): a Faust
worker of the whole topology, the ingest against the local Binance (tests/fakes/binance.py)
replaying the real klines of ``data/sample`` (the demo's data) with disconnects, a stall,
duplicates, a swap, klines left off the stream and a 429, then the drain and the run report a
replay writes. Its trades must be byte-identical (``trades_sha256``) to the in-process runner
on the same klines, and so must every count on the way (signals, vetoes, decisions,
rejections). tests/integration/test_topology.py shows the runner equals the file replay through
Kafka, so the live feed gives the trades the file replay gives.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from streams.adapters.live.run import LivePlan, run_live
from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.config import Settings
from streams.demo import SAMPLE_DATA
from tests.fakes.binance import FakeBinance, Faults, load_klines
from tests.fakes.live_support import live_config, serving_in_thread

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SYMBOLS = ("BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
START = parse_time_bound("2025-05-21T12:00")
END = parse_time_bound("2025-05-22T00:00")
MINUTE = 60_000
#: The local Binance's clock starts this long before the end: the rest comes over REST.
STREAMED_MINUTES = 40


def base_settings(bootstrap: str, runs_dir: Path) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap, partitions=2, feedback_lag_ms=300_000,
        supervisor={"gate": "confidence", "min_confidence": 0.5}, runs_dir=runs_dir,
    )  # fmt: skip


def runner_report(settings: Settings) -> dict:
    from models.scorer import EnsembleScorer
    from streams.report import ReportBuilder
    from streams.runner import run

    builder = ReportBuilder(settings.risk.starting_equity_usd)
    stats = run(SAMPLE_DATA, EnsembleScorer.from_registry(settings.registry_dir), builder,
                settings, SYMBOLS, TimeWindow(START, END))  # fmt: skip
    return builder.build(model_versions=stats.model_versions)


@pytest.mark.timeout(1800)  # 3,600 bars through every stage; the 2-core machine is shared
def test_live_feed_through_the_topology_trades_like_the_replay(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    settings = base_settings(kafka_bootstrap, tmp_path)
    expected = runner_report(settings)
    assert expected["counts"]["closed_trades"] >= 5, "the window must trade to be a test"

    data = {s: load_klines(SAMPLE_DATA / f"{s}.csv.gz", START, END + 5 * MINUTE) for s in SYMBOLS}
    first = END - STREAMED_MINUTES * MINUTE
    m = lambda n: first + n * MINUTE  # noqa: E731
    faults = Faults(
        drop_before={m(3), m(12), m(25)}, abort_before={m(7), m(30)}, stall_before={m(18)},
        duplicate={m(5), m(21)}, swap={m(15)}, skip_ws={("SOLUSDT", m(9)), ("BTCUSDT", m(27))},
        rate_limit_requests={2},
    )  # fmt: skip
    server = FakeBinance(data, first, 300.0, faults)
    with serving_in_thread(server):
        # No planned rotation here (test_live_faults covers it): a fault that lands on the
        # session being replaced ends nothing that needs a reconnect, and the count below
        # would depend on timing.
        live = live_config(server, max_streams_per_connection=3, rotate_after_s=3600.0)
        run_settings = settings.model_copy(update={"live": live, "topic_prefix": unique_prefix})
        plan = LivePlan(SYMBOLS, since_ms=START, until_ms=END, run_dir=tmp_path / "live",
                        timeout_s=1500)  # fmt: skip
        summary, report = run_live(run_settings, plan, Console(stderr=True))
    assert not (faults.drop_before | faults.abort_before | faults.stall_before | faults.swap)
    assert summary.reconnects >= 6 and summary.backfilled > 0 and summary.rest.rate_limited >= 1
    assert summary.sequencer.duplicates > 0 and summary.sequencer.missing_total == 0
    assert summary.ticks == 720 * len(SYMBOLS)

    assert report is not None
    assert report["counts"]["ticks"] == expected["counts"]["ticks"]
    assert report["counts"]["closed_trades"] == expected["counts"]["closed_trades"]
    assert report["trades_sha256"] == expected["trades_sha256"]
    for key in ("signals_by_action", "vetoes_by_reason", "decisions", "rejections_by_rule"):
        assert report["counts"][key] == expected["counts"][key], key
    assert report["counts"]["dead_letters"] == 0
    assert report["live"]["backfilled"] == summary.backfilled
    assert (tmp_path / "live" / "report.json").exists()
