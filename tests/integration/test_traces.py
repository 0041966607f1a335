"""One decision's trace over a real Kafka: tick to closed trade, one trace, linked hop by hop.

The whole topology runs as a Faust worker subprocess (``run_demo``) on real data with the
bundled ONNX models, exporting spans to a JSON-lines file. For a decision that became a closed
trade, and for one the risk stage rejected, the test walks the trace from the last span back to
the tick through the ``parent_span_id`` links: every Kafka hop must be a parent/child link in
one trace, and each stage's span must carry the values that decided (model versions and
confidences, vetoes, strategy and size, every risk rule, exit legs, fills, exit reason). The
records themselves must not change: the trades match the in-process runner's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.config import Settings
from streams.demo import SAMPLE_DATA, DemoPlan, read_back, run_demo
from streams.observability.tracing import DECISION_ID, build_tree, decision_trace, read_spans
from streams.stages.risk import rules_passed
from tests.run_diffs import assert_same_decisions

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: Four hours in which the runner decides 26 times: 10 closed trades, rejections by two rules.
WINDOW = TimeWindow(parse_time_bound("2025-05-21T14:00"), parse_time_bound("2025-05-21T18:00"))
GATES = {"gate": "confidence", "min_confidence": 0.5}
#: The path of an approved decision, from the tick to its closed trade (span names).
APPROVED_PATH = [
    "features market.ticks",
    "ensemble market.features",
    "supervisor signals.ensemble",
    "strategy signals.supervised",
    "risk decisions.sized",
    "exits orders.approved",
    "execution orders.intents",
    "execution trade closed",
]


def settings_for(bootstrap: str, tmp: Path) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        partitions=2,
        feedback_lag_ms=300_000,
        supervisor=GATES,
        runs_dir=tmp / "runs",
        trace_file=tmp / "traces.jsonl",
    )


@pytest.fixture(scope="module")
def traced_run(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("traces")
    settings = settings_for(kafka_bootstrap, tmp)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        mp.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        result = run_demo(settings, DemoPlan(window=WINDOW, timeout_s=600))
    prefix = result.report["topic_prefix"]
    records = list(read_back(kafka_bootstrap, prefix, settings.partitions))
    yield {
        "settings": settings,
        "report": result.report,
        "run_dir": result.run_dir,
        "records": records,
        "trace_file": settings.trace_file,
    }


def of_type(records: list[Any], name: str) -> list[Any]:
    return [r for r in records if type(r).__name__ == name]


def path_to_root(spans: list[dict[str, Any]], leaf: dict[str, Any]) -> list[dict[str, Any]]:
    """``leaf`` and its ancestors, root first; fails on a broken link."""
    by_id = {s["span_id"]: s for s in spans}
    chain = [leaf]
    while chain[-1]["parent_span_id"] is not None:
        parent = by_id.get(chain[-1]["parent_span_id"])
        assert parent is not None, f"{chain[-1]['name']} points at a span not in its trace"
        chain.append(parent)
    return chain[::-1]


def named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


def test_records_are_unchanged_by_tracing(traced_run: dict[str, Any]) -> None:
    from models.scorer import EnsembleScorer
    from streams.report import ReportBuilder, write_run
    from streams.runner import run

    settings = traced_run["settings"]
    builder = ReportBuilder(settings.risk.starting_equity_usd)
    stats = run(SAMPLE_DATA, EnsembleScorer.from_registry(settings.registry_dir), builder, settings,
                window=WINDOW)  # fmt: skip
    runner = builder.build(model_versions=stats.model_versions)
    runner_dir = traced_run["run_dir"].parent / "runner"
    write_run(runner_dir, runner, builder.trades, builder.decisions)
    assert runner["counts"]["closed_trades"] >= 3, "the window must trade to be a test"
    assert_same_decisions(runner_dir, traced_run["run_dir"])  # says where, if anywhere
    assert traced_run["report"]["trades_sha256"] == runner["trades_sha256"]


def test_a_closed_trade_has_one_trace_from_its_tick(traced_run: dict[str, Any]) -> None:
    records = traced_run["records"]
    trade = sorted(of_type(records, "TradeClosed"), key=lambda t: t.trade_id)[0]
    decision = next(d for d in of_type(records, "DecisionSized")
                    if d.decision_id == trade.decision_id)  # fmt: skip
    plan = next(p for p in of_type(records, "OrderPlanned")
                if p.decision_id == trade.decision_id)  # fmt: skip

    spans = decision_trace(traced_run["trace_file"], trade.decision_id)
    assert len({s["trace_id"] for s in spans}) == 1, "one trace per decision"
    closed = [s for s in named(spans, "execution trade closed")
              if s["attributes"]["qt.trade_id"] == trade.trade_id]  # fmt: skip
    assert len(closed) == 1
    chain = path_to_root(spans, closed[0])
    assert [s["name"] for s in chain] == APPROVED_PATH
    assert chain[0]["parent_span_id"] is None  # the tick's span is the root
    a = {s["name"]: s["attributes"] for s in chain}

    # tick -> features: the tick's own symbol and bar time travel with the trace
    assert a["features market.ticks"]["qt.symbol"] == trade.symbol
    assert a["features market.ticks"]["qt.event_time_ms"] == decision.event_time_ms
    # each model's vote, with the versions the decision recorded
    vote = a["ensemble market.features"]
    for model, version in decision.model_versions.items():
        assert vote[f"qt.vote.{model}.version"] == version
        assert 0.0 <= vote[f"qt.vote.{model}.confidence"] <= 1.0
    assert vote["qt.action"] == ("BUY" if decision.side.value == "LONG" else "SELL")
    assert vote["qt.confidence"] == pytest.approx(decision.confidence)
    # the supervisor passed it
    assert a["supervisor signals.ensemble"]["qt.vetoed"] is False
    assert a["supervisor signals.ensemble"]["qt.veto_rules"] == []
    # strategy and size
    sized = a["strategy signals.supervised"]
    assert sized[DECISION_ID] == decision.decision_id
    assert sized["qt.strategy"] == decision.strategy
    assert sized["qt.size_multiplier"] == decision.size_multiplier
    assert sized["qt.margin_usd"] == decision.margin_usd
    # every risk rule passed
    risk = a["risk decisions.sized"]
    assert risk["qt.risk.verdict"] == "approved"
    assert risk["qt.risk.rules_passed"] == [r.value for r in rules_passed(None)]
    # the exit plan's legs
    legs = a["exits orders.approved"]["qt.legs"]
    assert [leg.split()[0] for leg in legs] == [leg.kind.value for leg in plan.legs]
    # fills of this order, under the order's span
    order_span = chain[-2]
    fills = [s for s in spans if s["parent_span_id"] == order_span["span_id"]
             and s["name"].startswith("execution fill")]  # fmt: skip
    own = [f for f in of_type(records, "FillExecuted") if f.decision_id == trade.decision_id]
    assert len(own) >= 2  # an entry and at least one exit
    assert {f["attributes"]["qt.fill_id"] for f in fills} == {f.fill_id for f in own}
    # outcome
    assert a["execution trade closed"]["qt.exit_reason"] == trade.exit_reason.value
    assert a["execution trade closed"]["qt.net_pnl"] == trade.net_pnl
    # ... and what learning and risk made of it: children of the closed trade's span
    children = {s["name"] for s in spans if s["parent_span_id"] == closed[0]["span_id"]}
    assert {"learning trades.closed", "risk trades.closed"} <= children


def test_a_rejected_decision_names_its_rule(traced_run: dict[str, Any]) -> None:
    rejection = sorted(of_type(traced_run["records"], "OrderRejected"),
                       key=lambda r: r.decision_id)[0]  # fmt: skip
    spans = decision_trace(traced_run["trace_file"], rejection.decision_id)
    risk = named(spans, "risk decisions.sized")
    assert len(risk) == 1
    chain = path_to_root(spans, risk[0])
    assert [s["name"] for s in chain] == APPROVED_PATH[:5]
    attrs = risk[0]["attributes"]
    assert attrs["qt.risk.verdict"] == "rejected"
    assert attrs["qt.risk.rule"] == rejection.rule.value
    assert attrs["qt.risk.rules_passed"] == [r.value for r in rules_passed(rejection.rule)]
    assert not named(spans, "exits orders.approved")


def test_hold_ticks_are_not_exported(traced_run: dict[str, Any]) -> None:
    spans = list(read_spans(traced_run["trace_file"]))
    votes = [s for s in spans if s["name"] == "ensemble market.features"]
    assert votes and all(v["attributes"]["qt.action"] != "HOLD" for v in votes)
    signals = of_type(traced_run["records"], "SignalScored")
    assert len(votes) == sum(s.action.value != "HOLD" for s in signals)


def test_trace_command_prints_the_tree(traced_run: dict[str, Any]) -> None:
    import typer

    from streams.commands.trace import command

    trade = of_type(traced_run["records"], "TradeClosed")[0]
    app = typer.Typer()
    app.command()(command)
    result = CliRunner().invoke(
        app, [trade.decision_id, "--file", str(traced_run["trace_file"])], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    for name in APPROVED_PATH:
        assert name in result.output
    assert trade.exit_reason.value in result.output
    missing = CliRunner().invoke(app, ["no-such-decision", "--file", str(traced_run["trace_file"])])
    assert missing.exit_code == 1
    roots = build_tree(decision_trace(traced_run["trace_file"], trade.decision_id))
    assert [r.span["name"] for r in roots] == ["features market.ticks"]
