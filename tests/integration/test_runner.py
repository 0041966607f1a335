"""The in-process runner on the bundled real data: determinism, dead letters, count invariants.

Uses the promoted models of ``models/registry`` (real ONNX sessions). Runs are limited to three
symbols over two days to keep the shared machine free; the invariants do not depend on size.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.contracts.records import DecisionSized, FillExecuted, LegKind
from streams.report import ReportBuilder, canonical_trades
from streams.runner import RunStats, run

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "um_futures_1m_2025"
REGISTRY = ROOT / "models" / "registry"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
WINDOW = TimeWindow(parse_time_bound("2025-05-21"), parse_time_bound("2025-05-23"))

pytestmark = pytest.mark.skipif(
    not (REGISTRY / "index.json").is_file() or not SAMPLE.is_dir(),
    reason="needs the bundled sample data and a promoted model registry",
)


@pytest.fixture(scope="module")
def scorer():  # type: ignore[no-untyped-def]
    from models.scorer import EnsembleScorer

    return EnsembleScorer.from_registry(REGISTRY)


class Recorder(ReportBuilder):
    """A report builder that also keeps decisions and fills for the invariants."""

    def __init__(self) -> None:
        super().__init__(10_000.0)
        self.sized: list[DecisionSized] = []
        self.fills: list[FillExecuted] = []

    def add(self, record):  # type: ignore[no-untyped-def]
        super().add(record)
        if isinstance(record, DecisionSized):
            self.sized.append(record)
        elif isinstance(record, FillExecuted):
            self.fills.append(record)


def _run(data: Path, scorer, **cfg) -> tuple[Recorder, RunStats]:  # type: ignore[no-untyped-def]
    from streams.config import Settings, SupervisorPolicy

    # Lower confidence gates than the seed's 65%, so two days trade whatever the models' version.
    cfg.setdefault("supervisor", SupervisorPolicy(gate="confidence", min_confidence=0.5))
    rec = Recorder()
    stats = run(data, scorer, rec, Settings(**cfg), SYMBOLS, WINDOW)
    return rec, stats


@pytest.fixture(scope="module")
def clean(scorer) -> tuple[Recorder, RunStats]:  # type: ignore[no-untyped-def]
    return _run(SAMPLE, scorer)


def test_two_runs_give_identical_trades(clean, scorer) -> None:  # type: ignore[no-untyped-def]
    again, _ = _run(SAMPLE, scorer)
    first = clean[0].build(model_versions={})["trades_sha256"]
    assert again.build(model_versions={})["trades_sha256"] == first
    assert canonical_trades(again.trades) == canonical_trades(clean[0].trades)
    assert again.counts == clean[0].counts


def test_counts_are_consistent(clean) -> None:  # type: ignore[no-untyped-def]
    rec, stats = clean
    c = rec.record_counts()
    assert stats.bars == c["ticks"] == 3 * 2 * 1440
    assert c["signals"] == c["features"] > 0
    assert c["supervised"] == c["signals_by_action"].get("BUY", 0) + c["signals_by_action"].get(
        "SELL", 0
    )
    assert c["decisions"] == c["approvals"] + c["rejections"]
    assert c["orders"] == c["approvals"]
    assert c["closed_trades"] + stats.open_positions_at_end == c["approvals"]
    filled = [t for t in rec.trades if t.qty > 0]
    assert c["rewards"] == 2 * len(filled)
    assert c["dead_letters"] == 0


def test_no_order_fills_before_its_decision_bar_has_closed(clean) -> None:  # type: ignore[no-untyped-def]
    rec, _ = clean
    decided = {d.decision_id: d.event_time_ms for d in rec.sized}
    entries = [f for f in rec.fills if f.leg_kind is LegKind.ENTRY]
    assert entries, "the run should trade at least once on two days of three symbols"
    for f in entries:
        assert f.event_time_ms >= decided[f.decision_id] + 60_000
    for t in rec.trades:
        assert t.event_time_ms > t.opened_ms >= decided[t.decision_id] + 60_000
        assert set(t.model_versions) == set(rec.sized[0].model_versions)


def _corrupt_copy(src: Path, dst: Path) -> int:
    """Copy the data set, inserting rejectable rows into ETHUSDT; returns how many."""
    dst.mkdir()
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    path = dst / "ETHUSDT.csv.gz"
    with gzip.open(path, "rt") as fh:
        lines = fh.read().splitlines()
    t = int(lines[500].split(",")[0])  # a bar inside the window
    bad = [
        "this,is,not,a,kline,row",
        f"{t},nan,2500,2490,2495,10",  # same time as a valid bar, after it: NaN
        f"{t + 1},2500,2501,2499,2500,10",  # misaligned minute
        f"{t},-1,2501,2499,2500,10",  # non-positive price
        f"{t},2500,2490,2510,2500,10",  # high below low
    ]
    lines[501:501] = bad
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return len(bad)


def test_bad_rows_are_dead_lettered_and_change_no_trade(  # type: ignore[no-untyped-def]
    clean, scorer, tmp_path: Path
) -> None:
    n_bad = _corrupt_copy(SAMPLE, tmp_path / "data")
    dirty, _ = _run(tmp_path / "data", scorer)
    assert dirty.record_counts()["dead_letters"] == n_bad
    assert sum(dirty.dead_letters_by_reason.values()) == n_bad
    assert canonical_trades(dirty.trades) == canonical_trades(clean[0].trades)


def test_partition_count_only_changes_the_overall_bias_window(  # type: ignore[no-untyped-def]
    clean, scorer
) -> None:
    one, _ = _run(SAMPLE, scorer, partitions=1)
    c1, c4 = one.record_counts(), clean[0].record_counts()
    assert c1["signals_by_action"] == c4["signals_by_action"]  # upstream of the supervisor
    per_symbol = {k: v for k, v in c1["vetoes_by_reason"].items() if k != "ONE_SIDED_OVERALL"}
    assert per_symbol == {
        k: v for k, v in c4["vetoes_by_reason"].items() if k != "ONE_SIDED_OVERALL"
    }
