"""The decision log of a run folder and `quantum-trader diff` over two of them."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.config import get_settings
from streams.contracts.examples import load_example
from streams.contracts.records import RECORD_TYPES, OrderRejected, TradeClosed
from streams.decisions import (
    DECISIONS_FILE,
    DecisionLogError,
    DecisionRow,
    decision_row,
    decisions_sha256,
    read_decisions,
    trace_id_of,
    write_decisions,
)
from streams.report import ReportBuilder, write_run
from streams.run_diff import diff_runs, render_text
from streams.topics import Topic
from streams.vocabulary import DecisionKind, RiskRule

DECISION_TOPICS = {
    Topic.SIGNALS_ENSEMBLE: DecisionKind.SIGNAL,
    Topic.SIGNALS_SUPERVISED: DecisionKind.VETO,
    Topic.DECISIONS_SIZED: DecisionKind.SIZE,
    Topic.ORDERS_APPROVED: DecisionKind.VERDICT,
    Topic.RISK_REJECTIONS: DecisionKind.VERDICT,
    Topic.ORDERS_INTENTS: DecisionKind.ORDER,
    Topic.EXECUTION_FILLS: DecisionKind.FILL,
    Topic.TRADES_CLOSED: DecisionKind.TRADE,
}


def example(topic: Topic) -> Any:
    return RECORD_TYPES[topic].from_avro(load_example(topic))


def records() -> list[Any]:
    return [example(t) for t in DECISION_TOPICS if t is not Topic.RISK_REJECTIONS]


def run_folder(path: Path, recs: list[Any], config: dict[str, Any] | None = None) -> Path:
    builder = ReportBuilder(10_000.0)
    for i, rec in enumerate(recs):
        builder.add(rec, f"{i:032x}")
    report = builder.build(model_versions={}, extra={"config": config or {"seed": 7}})
    write_run(path, report, builder.trades, builder.decisions)
    return path


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["diff", *args], env={"COLUMNS": "200"})


# ------------------------------------------------------------------ the log


@pytest.mark.parametrize("topic", list(DECISION_TOPICS))
def test_every_decision_step_has_a_row_with_its_id_and_decision(topic: Topic) -> None:
    record = example(topic)
    row = decision_row(record, "ab" * 16)
    assert row is not None and row.kind is DECISION_TOPICS[topic]
    assert row.event_time_ms == record.event_time_ms and row.symbol == record.symbol
    assert row.trace_id == "ab" * 16
    assert row.values and all("." not in k or k.split(".")[0] for k in row.values)
    assert DecisionRow.from_json(json.loads(json.dumps(row.to_json()))) == row


def test_records_that_are_no_decision_step_have_no_row() -> None:
    assert decision_row(example(Topic.MARKET_TICKS)) is None
    assert decision_row(example(Topic.LEARNING_REWARDS)) is None


def test_the_file_round_trips_in_log_order_and_is_reproducible(tmp_path: Path) -> None:
    rows = [r for r in (decision_row(x, None) for x in reversed(records())) if r]
    write_decisions(tmp_path / "a.gz", rows)
    write_decisions(tmp_path / "b.gz", list(reversed(rows)))
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    back = list(read_decisions(tmp_path / "a.gz"))
    assert back == sorted(rows, key=lambda r: r.sort_key)


def test_the_hash_ignores_trace_ids_but_not_values() -> None:
    trade = example(Topic.TRADES_CLOSED)
    one, two = decision_row(trade, "1" * 32), decision_row(trade, "2" * 32)
    other = decision_row(dataclasses.replace(trade, net_pnl=trade.net_pnl + 1e-9))
    assert one and two and other
    assert decisions_sha256([one]) == decisions_sha256([two]) != decisions_sha256([other])


def test_a_broken_log_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / DECISIONS_FILE
    path.write_bytes(b"not gzip")
    with pytest.raises(DecisionLogError, match="cannot read"):
        list(read_decisions(path))
    with gzip.open(path, "wt") as fh:
        fh.write('{"something": "else"}\n')
    with pytest.raises(DecisionLogError, match="not a decision log"):
        list(read_decisions(path))


def test_trace_id_comes_from_the_traceparent_header() -> None:
    header = ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert trace_id_of([("qt-source", b"x"), header]) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_of([("traceparent", b"garbage")]) is None
    assert trace_id_of(None) is None


# ------------------------------------------------------------------ the comparison


def test_identical_runs_have_no_divergence(tmp_path: Path) -> None:
    a = run_folder(tmp_path / "a", records())
    b = run_folder(tmp_path / "b", records())
    result = cli(str(a), str(b))
    assert result.exit_code == 0, result.output
    assert "runs are identical, decision by decision" in result.output


def test_the_first_divergence_shows_both_values_and_the_traces(tmp_path: Path) -> None:
    recs = records()
    trade = next(r for r in recs if isinstance(r, TradeClosed))
    changed = [dataclasses.replace(r, net_pnl=-5.0) if r is trade else r for r in recs]
    a = run_folder(tmp_path / "a", recs)
    b = run_folder(tmp_path / "b", changed, config={"seed": 8})
    (b / "traces.jsonl").write_text("")
    result = cli(str(a), str(b))
    assert result.exit_code == 1, result.output
    out = result.output
    assert f"first divergence at 2025-05-04T15:55:00Z: trade {trade.trade_id}" in out
    assert re.search(rf"^    net_pnl +{re.escape(repr(trade.net_pnl))} +-5\.0$", out, re.M)
    assert "settings that differ:\n  seed: A 7, B 8" in out
    assert (
        f"B: trace {6:032x}; quantum-trader trace {trade.decision_id} --file {b}/traces.jsonl"
        in out
    )
    assert f"net PnL A {trade.net_pnl:,.2f}, B -5.00" in out
    assert "runs differ: 1 decision step(s)" in out


def test_an_approval_against_a_rejection_is_one_changed_verdict() -> None:
    approved = example(Topic.ORDERS_APPROVED)
    rejected = OrderRejected(
        decision_id=approved.decision_id, symbol=approved.symbol,
        event_time_ms=approved.event_time_ms, side=approved.decision.side,
        margin_usd=approved.approved_margin_usd, confidence=approved.decision.confidence,
        rule=RiskRule.MAX_MARGIN, detail="20 open", observed=20.0, limit=20.0,
    )  # fmt: skip
    a, b = decision_row(approved), decision_row(rejected)
    assert a and b
    diff = diff_runs("A", [a], "B", [b])
    (only,) = diff.divergences
    assert only.status == "changed" and only.kind is DecisionKind.VERDICT
    changes = {c.name: (c.a, c.b) for c in only.changes}
    assert changes["verdict"] == ("APPROVED", "REJECTED")
    assert changes["rule"] == (None, "MAX_MARGIN")
    assert "verdict" in render_text(diff)


def test_missing_steps_are_counted_per_side_and_ordered_by_time() -> None:
    rows = [r for r in (decision_row(x) for x in records()) if r]
    late_only_a = dataclasses.replace(rows[0], id="LATE", event_time_ms=rows[0].event_time_ms + 1)
    diff = diff_runs("A", [*rows, late_only_a], "B", rows[1:])
    assert [d.status for d in diff.divergences] == ["only in A", "only in A"]
    assert diff.divergences[0].id == rows[0].id  # the earlier one first
    signal = next(k for k in diff.kinds if k.kind is rows[0].kind)
    assert (signal.a, signal.b, signal.only_a, signal.same) == (2, 0, 2, 0)


def test_steps_option_restricts_the_comparison(tmp_path: Path) -> None:
    recs = records()
    changed = [
        dataclasses.replace(r, confidence=0.99) if type(r).__name__ == "SignalScored" else r
        for r in recs
    ]
    a, b = run_folder(tmp_path / "a", recs), run_folder(tmp_path / "b", changed)
    assert cli(str(a), str(b)).exit_code == 1
    assert cli(str(a), str(b), "--steps", "trade,fill").exit_code == 0
    bad = cli(str(a), str(b), "--steps", "trades")
    assert bad.exit_code == 2 and "unknown step(s) trades" in bad.output


def test_json_report_is_machine_readable(tmp_path: Path) -> None:
    recs = records()
    a = run_folder(tmp_path / "a", recs)
    b = run_folder(tmp_path / "b", recs[:-1])  # no closed trade
    result = cli(str(a), str(b), "--json")
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert doc["identical"] is False and doc["pnl"]["trades_b"] == 0
    assert doc["divergences"][0]["status"] == "only in A"


def test_an_older_run_folder_is_compared_on_its_closed_trades(tmp_path: Path) -> None:
    a = run_folder(tmp_path / "a", records())
    b = run_folder(tmp_path / "b", records())
    (b / DECISIONS_FILE).unlink()
    result = cli(str(a), str(b))
    assert result.exit_code == 0, result.output
    assert "has no decision log (an older run folder): closed trades compared only" in result.output


def test_unreadable_sides_exit_2_with_one_clear_line(tmp_path: Path) -> None:
    a = run_folder(tmp_path / "a", records())
    (tmp_path / "empty").mkdir()
    not_run = cli(str(a), str(tmp_path / "empty"))
    assert not_run.exit_code == 2 and "is not a run folder (no report.json)" in not_run.output
    get_settings.cache_clear()  # settings an earlier test read may name a broker
    try:
        missing = CliRunner().invoke(
            app, ["diff", str(a), "no-such-run"], env={"QT_KAFKA_BOOTSTRAP": ""}
        )
    finally:
        get_settings.cache_clear()
    assert missing.exit_code == 2 and "kafka:no-such-run" in missing.output
    assert "Traceback" not in missing.output
