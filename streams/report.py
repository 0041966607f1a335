"""The run folder: ``report.json``, ``trades.csv``, ``decisions.jsonl.gz``, ``equity.png``.

:class:`ReportBuilder` consumes the stream of output records of a run, in any order, so the same
code serves the in-process runner (records handed over as they are made) and the Kafka demo
(records consumed back from the topics). It keeps counters, the closed trades and the decision
log (:mod:`streams.decisions`, what ``quantum-trader diff`` compares; its hash without trace ids
is ``decisions_sha256`` in ``report.json``).

Canonical trade list (``trades.csv``, hashed into ``trades_sha256``): one row per
``TradeClosed``, sorted by ``(event_time_ms, trade_id)`` (close time, then id), columns
:data:`TRADE_COLUMNS` in that order, comma separated, ``\\n`` line ends, a header row; floats
written with ``repr`` (the shortest text that reads back to the same double: exact, and identical
on every IEEE-754 platform), ``model_versions`` as ``model=version`` pairs sorted by model and
joined by ``;``. Two runs trade identically exactly when their hashes are equal.

Performance figures: net PnL, fees, return on starting equity, win rate (net PnL > 0 among
filled trades), max drawdown of the realised equity curve (trade by trade), and a daily Sharpe
ratio: realised equity at each UTC day end, daily returns, ``mean / std * sqrt(365)`` (crypto
trades every day; sample std, ``None`` with fewer than two daily returns or zero variance).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.contracts.base import AvroRecord
from streams.contracts.records import (
    DeadLettered,
    DecisionSized,
    FeaturesComputed,
    FillExecuted,
    OrderApproved,
    OrderPlanned,
    OrderRejected,
    PositionChanged,
    RewardComputed,
    SignalScored,
    SignalSupervised,
    TickReceived,
    TradeClosed,
)
from streams.decisions import (
    DECISIONS_FILE,
    DecisionRow,
    decision_row,
    decisions_sha256,
    write_decisions,
)
from streams.vocabulary import VetoRule

REPORT_FILE = "report.json"
TRADES_FILE = "trades.csv"
EQUITY_FILE = "equity.png"
DAY_MS = 86_400_000
TRADE_COLUMNS: tuple[str, ...] = (
    "trade_id", "symbol", "side", "opened_ms", "event_time_ms", "qty", "entry_price",
    "exit_price", "leverage", "margin_usd", "gross_pnl", "fees", "net_pnl", "return_pct",
    "exit_reason", "strategy", "regime", "size_multiplier", "confidence", "model_versions",
)  # fmt: skip


class ReportError(Exception):
    """A run folder cannot be written or read back (missing or malformed files)."""


def _cell(value: object) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return ";".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


def canonical_trades(trades: Iterable[TradeClosed]) -> str:
    """The canonical CSV text of ``trades`` (see the module doc)."""
    rows = sorted(trades, key=lambda t: (t.event_time_ms, t.trade_id))
    lines = [",".join(TRADE_COLUMNS)]
    lines.extend(",".join(_cell(getattr(t, c)) for c in TRADE_COLUMNS) for t in rows)
    return "\n".join(lines) + "\n"


def trades_sha256(trades: Iterable[TradeClosed]) -> str:
    """sha256 hex digest of :func:`canonical_trades`."""
    return hashlib.sha256(canonical_trades(trades).encode()).hexdigest()


def equity_curve(start_equity: float, trades: Sequence[TradeClosed]) -> list[tuple[int, float]]:
    """Realised equity after each closed trade, in canonical order, as (close time, equity)."""
    equity, curve = start_equity, []
    for t in sorted(trades, key=lambda x: (x.event_time_ms, x.trade_id)):
        equity += t.net_pnl
        curve.append((t.event_time_ms, equity))
    return curve


def max_drawdown(start_equity: float, curve: Sequence[tuple[int, float]]) -> float:
    """Largest peak-to-trough loss of the realised equity, as a fraction of the peak."""
    peak, worst = start_equity, 0.0
    for _t, equity in curve:
        peak = max(peak, equity)
        worst = max(worst, (peak - equity) / peak if peak > 0 else 1.0)
    return worst


def daily_sharpe(
    start_equity: float, curve: Sequence[tuple[int, float]], first_ms: int, last_ms: int
) -> float | None:
    """Annualised Sharpe of daily realised-equity returns over the data's UTC days."""
    days = range(first_ms // DAY_MS, last_ms // DAY_MS + 1)
    closes, equity, i = [], start_equity, 0
    for day in days:
        end = (day + 1) * DAY_MS
        while i < len(curve) and curve[i][0] < end:
            equity = curve[i][1]
            i += 1
        closes.append(equity)
    opens = [start_equity, *closes[:-1]]
    rets = [c / o - 1.0 for o, c in zip(opens, closes, strict=True) if o > 0]
    if len(rets) < 2:
        return None
    mean = sum(rets) / len(rets)
    var = sum((r - mean) ** 2 for r in rets) / (len(rets) - 1)
    return mean / math.sqrt(var) * math.sqrt(365.0) if var > 0 else None


def percentiles_us(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50 / p99 (nearest rank) of nanosecond samples, in microseconds."""
    ordered = sorted(samples_ns)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] / 1000.0

    return {"p50_us": rank(0.50), "p99_us": rank(0.99), "count": float(n)}


@dataclass
class ReportBuilder:
    """Counts a run's output records, keeps its closed trades and its decision log (``add``)."""

    starting_equity: float
    counts: Counter[str] = field(default_factory=Counter)
    signals_by_action: Counter[str] = field(default_factory=Counter)
    vetoes_by_reason: Counter[str] = field(default_factory=Counter)
    rejections_by_rule: Counter[str] = field(default_factory=Counter)
    dead_letters_by_reason: Counter[str] = field(default_factory=Counter)
    exits_by_reason: Counter[str] = field(default_factory=Counter)
    no_edge_by_bucket: Counter[str] = field(default_factory=Counter)
    symbols: set[str] = field(default_factory=set)
    first_ms: int | None = None
    last_ms: int | None = None
    trades: list[TradeClosed] = field(default_factory=list)
    #: one row per signal, veto, size, verdict, order, fill and closed trade (streams.decisions)
    decisions: list[DecisionRow] = field(default_factory=list)

    def __call__(self, record: AvroRecord) -> None:
        """Sink interface of :func:`streams.runner.run`."""
        self.add(record)

    def add(self, record: AvroRecord, trace_id: str | None = None) -> None:
        """Account for one record (unknown record types are counted by name only).

        ``trace_id``: the W3C trace the record travelled with (Kafka runs), kept in its
        decision log row so ``quantum-trader diff`` can point at the trace.
        """
        row = decision_row(record, trace_id)
        if row is not None:
            self.decisions.append(row)
        self.counts[type(record).__name__] += 1
        if isinstance(record, TickReceived):
            self._tick(record)
        elif isinstance(record, SignalScored):
            self.signals_by_action[record.action.value] += 1
        elif isinstance(record, SignalSupervised):
            self.vetoes_by_reason.update(v.rule.value for v in record.veto_reasons)
            self.no_edge_by_bucket.update(
                v.detail for v in record.veto_reasons if v.rule is VetoRule.NO_EDGE
            )
            self.counts["vetoed_signals"] += record.vetoed
            self.counts["passed_signals"] += not record.vetoed
        elif isinstance(record, OrderRejected):
            self.rejections_by_rule[record.rule.value] += 1
        elif isinstance(record, DeadLettered):
            self.dead_letters_by_reason[record.reason] += 1
        elif isinstance(record, TradeClosed):
            self.trades.append(record)
            self.exits_by_reason[record.exit_reason.value] += 1

    def add_all(self, records: Iterable[AvroRecord]) -> ReportBuilder:
        """Add every record; returns self."""
        for r in records:
            self.add(r)
        return self

    def _tick(self, t: TickReceived) -> None:
        self.symbols.add(t.symbol)
        self.first_ms = (
            t.event_time_ms if self.first_ms is None else min(self.first_ms, t.event_time_ms)
        )
        self.last_ms = (
            t.event_time_ms if self.last_ms is None else max(self.last_ms, t.event_time_ms)
        )

    def performance(self) -> dict[str, Any]:
        """Net PnL, fees, return, Sharpe, max drawdown and win rate of the closed trades."""
        filled = [t for t in self.trades if t.qty > 0]
        curve = equity_curve(self.starting_equity, filled)
        net = sum(t.net_pnl for t in filled)
        first, last = self.first_ms or 0, self.last_ms or 0
        return {
            "starting_equity_usd": self.starting_equity,
            "final_equity_usd": self.starting_equity + net,
            "net_pnl_usd": net,
            "fees_usd": sum(t.fees for t in filled),
            "return_pct": net / self.starting_equity,
            "sharpe_daily_annualised": daily_sharpe(self.starting_equity, curve, first, last),
            "max_drawdown_pct": max_drawdown(self.starting_equity, curve),
            "win_rate": sum(t.net_pnl > 0 for t in filled) / len(filled) if filled else None,
            "filled_trades": len(filled),
        }

    def record_counts(self) -> dict[str, Any]:
        """The count section of ``report.json``."""
        c = self.counts
        return {
            "ticks": c[TickReceived.__name__],
            "features": c[FeaturesComputed.__name__],
            "signals": c[SignalScored.__name__],
            "signals_by_action": dict(sorted(self.signals_by_action.items())),
            "supervised": c[SignalSupervised.__name__],
            "vetoed_signals": c["vetoed_signals"],
            "vetoes_by_reason": dict(sorted(self.vetoes_by_reason.items())),
            "passed_signals": c["passed_signals"],
            "no_edge_top_buckets": dict(self.no_edge_by_bucket.most_common(3)),
            "decisions": c[DecisionSized.__name__],
            "approvals": c[OrderApproved.__name__],
            "rejections": c[OrderRejected.__name__],
            "rejections_by_rule": dict(sorted(self.rejections_by_rule.items())),
            "orders": c[OrderPlanned.__name__],
            "fills": c[FillExecuted.__name__],
            "position_changes": c[PositionChanged.__name__],
            "closed_trades": c[TradeClosed.__name__],
            "exits_by_reason": dict(sorted(self.exits_by_reason.items())),
            "rewards": c[RewardComputed.__name__],
            "dead_letters": c[DeadLettered.__name__],
            "dead_letters_by_reason": dict(sorted(self.dead_letters_by_reason.items())),
        }

    def build(
        self,
        *,
        model_versions: Mapping[str, str],
        elapsed_s: float | None = None,
        bars: int | None = None,
        latency_ns: Mapping[str, Sequence[int]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The ``report.json`` document."""
        events = sum(v for k, v in self.counts.items() if k != "vetoed_signals")
        fmt = _iso
        return {
            "data": {
                "symbols": sorted(self.symbols),
                "first_bar": fmt(self.first_ms),
                "last_bar": fmt(self.last_ms),
                "first_ms": self.first_ms,
                "last_ms": self.last_ms,
            },
            "counts": self.record_counts(),
            "performance": self.performance(),
            "model_versions": dict(sorted(model_versions.items())),
            "latency": {k: percentiles_us(v) for k, v in sorted((latency_ns or {}).items()) if v},
            "throughput": {
                "elapsed_s": elapsed_s,
                "bars_per_s": bars / elapsed_s if bars and elapsed_s else None,
                "events_per_s": events / elapsed_s if elapsed_s else None,
            },
            "trades_sha256": trades_sha256(self.trades),
            "decisions_sha256": decisions_sha256(self.decisions),
            **dict(extra or {}),
        }


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------- the run folder


def write_run(
    run_dir: Path,
    report: Mapping[str, Any],
    trades: Sequence[TradeClosed],
    decisions: Sequence[DecisionRow] | None = None,
) -> None:
    """Write ``report.json``, ``trades.csv``, ``equity.png`` and (given) ``decisions.jsonl.gz``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    text = canonical_trades(trades)
    if hashlib.sha256(text.encode()).hexdigest() != report["trades_sha256"]:
        raise ReportError(f"{run_dir}: trades do not match the report's trades_sha256")
    if decisions is not None:
        if decisions_sha256(decisions) != report.get("decisions_sha256"):
            raise ReportError(f"{run_dir}: decisions do not match the report's decisions_sha256")
        write_decisions(run_dir / DECISIONS_FILE, decisions)
    (run_dir / TRADES_FILE).write_text(text, encoding="utf-8")
    (run_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot_equity(run_dir / EQUITY_FILE, report, read_trades_csv(run_dir / TRADES_FILE))


def read_trades_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a ``trades.csv`` as dicts (strings); the header must be :data:`TRADE_COLUMNS`."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc
    if not lines or tuple(lines[0].split(",")) != TRADE_COLUMNS:
        raise ReportError(f"{path}: not a trades.csv (header differs from {TRADE_COLUMNS})")
    return [dict(zip(TRADE_COLUMNS, line.split(","), strict=True)) for line in lines[1:]]


def plot_equity(path: Path, report: Mapping[str, Any], rows: Sequence[Mapping[str, str]]) -> None:
    """Realised equity and its drawdown over close time (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = float(report["performance"]["starting_equity_usd"])
    first = report["data"]["first_ms"] or 0
    times, equity = [first], [start]
    for r in rows:
        if float(r["qty"]) > 0:
            times.append(int(r["event_time_ms"]))
            equity.append(equity[-1] + float(r["net_pnl"]))
    peaks = [max(equity[: i + 1]) for i in range(len(equity))]
    drawdown = [(p - e) / p * 100.0 for p, e in zip(peaks, equity, strict=True)]
    dates = [datetime.fromtimestamp(t / 1000, tz=UTC) for t in times]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 6), height_ratios=(3, 1))
    ax1.step(dates, equity, where="post")
    ax1.set_ylabel("realised equity (USDT)")
    ax1.set_title(f"{', '.join(report['data']['symbols'])}: {len(rows)} trades")
    ax2.fill_between(dates, [-d for d in drawdown], step="post", color="tab:red", alpha=0.5)
    ax2.set_ylabel("drawdown (%)")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_report(run_dir: Path) -> dict[str, Any]:
    """``report.json`` of a run folder."""
    path = run_dir / REPORT_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc
    return data


def render_report(run_dir: Path) -> dict[str, Any]:
    """Re-render ``equity.png`` from ``report.json`` + ``trades.csv``; checks the trade hash."""
    report = load_report(run_dir)
    text = (run_dir / TRADES_FILE).read_text(encoding="utf-8")
    if hashlib.sha256(text.encode()).hexdigest() != report.get("trades_sha256"):
        raise ReportError(f"{run_dir}: trades.csv does not match trades_sha256 of report.json")
    plot_equity(run_dir / EQUITY_FILE, report, read_trades_csv(run_dir / TRADES_FILE))
    return report


def _money(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def summary_lines(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of the human summary."""
    d, c, p = report["data"], report["counts"], report["performance"]
    t = report.get("throughput", {})
    sharpe = p["sharpe_daily_annualised"]
    bars_s = t.get("bars_per_s")
    exits = ", ".join(f"{k} {v}" for k, v in c["exits_by_reason"].items())
    sharpe_text = "-" if sharpe is None else f"{sharpe:.2f}"
    return [
        ("data", f"{', '.join(d['symbols'])}  {d['first_bar']} .. {d['last_bar']}"),
        ("models", ", ".join(f"{k}@{v}" for k, v in report["model_versions"].items())),
        ("ticks / dead letters", f"{c['ticks']:,} / {c['dead_letters']:,}"),
        ("signals", ", ".join(f"{k} {v:,}" for k, v in c["signals_by_action"].items())),
        ("vetoes", ", ".join(f"{k} {v:,}" for k, v in c["vetoes_by_reason"].items()) or "-"),
        ("gate", gate_line(report)),
        ("decisions / approved", f"{c['decisions']:,} / {c['approvals']:,}"),
        ("rejections", ", ".join(f"{k} {v:,}" for k, v in c["rejections_by_rule"].items()) or "-"),
        ("trades", f"{c['closed_trades']:,} ({exits})"),
        ("net PnL / fees", f"{_money(p['net_pnl_usd'])} / {_money(p['fees_usd'])} USDT"),
        ("return / max drawdown", f"{_pct(p['return_pct'])} / {_pct(p['max_drawdown_pct'])}"),
        ("win rate / Sharpe (daily)", f"{_pct(p['win_rate'])} / {sharpe_text}"),
        ("throughput", "-" if not bars_s else f"{bars_s:,.0f} bars/s"),
        ("trades_sha256", report["trades_sha256"]),
    ]  # fmt: skip


def gate_line(report: Mapping[str, Any]) -> str:
    """Which gate ran and, for the edge gate, how much it let through and what stopped the rest."""
    policy = report.get("config", {}).get("supervisor", {})
    c = report["counts"]
    if policy.get("gate") != "edge":
        return f"confidence >= {policy.get('min_confidence', '?')}"
    stood_aside = c["vetoes_by_reason"].get(VetoRule.NO_EDGE.value, 0)
    line = f"edge: {c.get('passed_signals', 0):,} signals passed, {stood_aside:,} stood aside"
    top = next(iter(c.get("no_edge_top_buckets", {})), None)
    return f"{line} (most: {top})" if top else line


def print_summary(report: Mapping[str, Any], run_dir: Path | None = None) -> None:
    """The terminal summary (rich table)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {run_dir}" if run_dir else "run", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in summary_lines(report):
        table.add_row(label, value)
    Console().print(table)
