"""The system's result on the evaluation window: the whole topology in-process, beside the rules.

The per-model rules of the report trade every signal; the system does not. This runs the
in-process runner (``streams.runner``, the reference the Faust topology reproduces) over the same
data, window and symbols with the evaluated model set and the settings as configured (the
supervisor's gate, the edge gate by default, its vetoes, the strategy, sizing, risk and the paper
venue's costs), so the report says what a deployment of these models would have done: trade, and
with what result, or stand aside and why.

The runner warms its features up inside the window (the first ``WARMUP_BARS`` minutes of each
symbol only warm), while the rules' rows are warmed on history before it: the system sees a few
hours less of the window. Nothing is tuned here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from models.dataset import TimeLike, to_ms

#: Report counts that say where the signals went (the rest is in the run's own report).
_COUNTS = ("signals", "passed_signals", "vetoed_signals", "decisions", "approvals", "rejections",
           "closed_trades")  # fmt: skip


def system_backtest(
    registry: Path,
    data_dir: Path,
    start: TimeLike,
    end: TimeLike,
    symbols: Sequence[str],
    versions: Mapping[str, str],
    settings: Any = None,
) -> dict[str, Any]:
    """The runner's report of ``versions`` on ``[start, end)``, summarised for the evaluation."""
    from models.scorer import EnsembleScorer
    from streams.adapters.market_files import TimeWindow
    from streams.config import Settings
    from streams.report import ReportBuilder
    from streams.runner import run

    settings = (settings or Settings()).model_copy(update={"registry_dir": registry})
    scorer = EnsembleScorer.from_registry(registry, dict(versions))
    builder = ReportBuilder(settings.risk.starting_equity_usd)
    stats = run(data_dir, scorer, builder, settings, tuple(symbols),
                TimeWindow(to_ms(start), to_ms(end)))  # fmt: skip
    report = builder.build(model_versions=stats.model_versions, bars=stats.bars)
    counts, perf = report["counts"], report["performance"]
    sup = settings.supervisor
    return {
        "gate": sup.gate if sup.gate != "confidence" else f"confidence >= {sup.min_confidence}",
        "bars": stats.bars,
        **{k: counts.get(k, 0) for k in _COUNTS},
        "vetoes_by_reason": counts.get("vetoes_by_reason", {}),
        "no_edge_top_buckets": counts.get("no_edge_top_buckets", {}),
        "rejections_by_rule": counts.get("rejections_by_rule", {}),
        "net_pnl_usd": perf.get("net_pnl_usd", 0.0),
        "fees_usd": perf.get("fees_usd", 0.0),
        "return_pct": perf.get("return_pct", 0.0),
        "max_drawdown_pct": perf.get("max_drawdown_pct", 0.0),
        "win_rate": perf.get("win_rate"),
        "trades_sha256": report["trades_sha256"],
        "stood_aside": counts.get("closed_trades", 0) == 0,
    }


def system_markdown(system: Mapping[str, Any]) -> list[str]:
    """The report's section: the verdict line, then the figures."""
    if system["stood_aside"]:
        vetoes = system["vetoes_by_reason"]
        top = ", ".join(f"{k} {v}" for k, v in sorted(vetoes.items(), key=lambda kv: -kv[1])[:4])
        verdict = (f"**stood aside**: no trade on {system['bars']:,} bars; "
                   f"{system['signals']:,} signals, vetoes {top or 'none'}")  # fmt: skip
    else:
        verdict = (f"**traded**: {system['closed_trades']} trades, net "
                   f"{system['net_pnl_usd']:+,.2f} USDT ({system['return_pct']:+.2%}), max "
                   f"drawdown {system['max_drawdown_pct']:.2%}")  # fmt: skip
    rows = [
        ("gate", str(system["gate"])),
        (
            "signals / passed / decisions",
            f"{system['signals']:,} / {system['passed_signals']:,} / {system['decisions']:,}",
        ),
        ("approvals / rejections", f"{system['approvals']} / {system['rejections']}"),
        ("closed trades", str(system["closed_trades"])),
        ("net PnL / fees (USDT)", f"{system['net_pnl_usd']:+,.2f} / {system['fees_usd']:,.2f}"),
        (
            "return / max drawdown",
            f"{system['return_pct']:+.2%} / {system['max_drawdown_pct']:.2%}",
        ),
        ("win rate", "–" if system["win_rate"] is None else f"{system['win_rate']:.1%}"),
        (
            "vetoes by reason",
            ", ".join(f"{k} {v}" for k, v in sorted(system["vetoes_by_reason"].items())) or "none",
        ),
        ("trades_sha256", f"`{system['trades_sha256'][:16]}…`"),
    ]
    return [
        f"- {verdict}",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
    ]
