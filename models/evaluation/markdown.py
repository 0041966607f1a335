"""``report.md``: the report dict rendered as tables (numbers identical to ``report.json``)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from models.dataset import CLASSES
from models.evaluation.system import system_markdown


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _sci(x: float | None) -> str:
    return "–" if x is None else f"{x:.1e}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:+.2%}"


def _balance(b: Mapping[str, float]) -> str:
    return " / ".join(f"{b[c]:.0%}" for c in CLASSES)


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]], left: Collection[int] = (0,)
           ) -> list[str]:  # fmt: skip
    """A markdown table; columns whose index is in ``left`` are left-aligned, others right."""
    align = "|".join("---" if i in left else "---:" for i in range(len(columns)))
    return [
        f"| {' | '.join(columns)} |",
        f"|{align}|",
        *(f"| {' | '.join(cells)} |" for cells in rows),
    ]


def _predictor_table(report: Mapping[str, Any]) -> list[str]:
    columns = ["predictor", "acc", "bal. acc", "macro-F1", "log loss", "ECE", "predicted S/H/B",
               "trades", "net return", "Sharpe", "max DD"]  # fmt: skip
    rows = []
    for name, e in report["predictors"].items():
        m, t = e["metrics"], e["trading"]
        ece = e.get("calibration", {}).get("ece")
        rows.append([
            name, _f(m["accuracy"]), _f(m["balanced_accuracy"]), _f(m["macro_f1"]),
            _f(m["log_loss"]), _f(ece), _balance(m["prediction_balance"]), str(t["trades"]),
            _pct(t["net_return"]), _f(t["sharpe_annualized"], 1), f"{t['max_drawdown']:.2%}",
        ])  # fmt: skip
    return _table(columns, rows, left=(0, 6))


def _horizon_table(report: Mapping[str, Any]) -> list[str]:
    columns = ["predictor", "trades", "win rate", "mean net return / trade", "sum of net returns"]
    rows = []
    for name, e in report["predictors"].items():
        h = e["horizon_trades"]
        win = "–" if h["win_rate"] is None else f"{h['win_rate']:.1%}"
        mean = "–" if h["mean_net_return"] is None else f"{h['mean_net_return']:+.4%}"
        rows.append([name, str(h["trades"]), win, mean, f"{h['sum_net_return']:+.2%}"])
    return _table(columns, rows)


def _per_class_table(report: Mapping[str, Any]) -> list[str]:
    columns = ["predictor", *(f"{c} {k}" for c in CLASSES for k in ("P", "R"))]
    rows = []
    for name, e in report["predictors"].items():
        pc = e["metrics"]["per_class"]
        cells = (_f(pc[c][k]) for c in CLASSES for k in ("precision", "recall"))
        rows.append([name, *cells])
    return _table(columns, rows)


def _training_table(report: Mapping[str, Any]) -> list[str]:
    columns = ["model", "version", "WF acc", "WF bal. acc", "WF bal. acc per fold",
               "WF macro-F1", "WF log loss", "held-back acc", "held-back bal. acc",
               "ONNX parity max abs diff"]  # fmt: skip
    rows = []
    for name, tr in report["training"].items():
        wf, ho = tr["walk_forward_mean"], tr["holdout"]
        per_fold = " / ".join(_f(f.get("balanced_accuracy")) for f in tr["walk_forward_folds"])
        rows.append([
            name, tr["version"], _f(wf.get("accuracy")), _f(wf.get("balanced_accuracy")),
            per_fold or "–", _f(wf.get("macro_f1")), _f(wf.get("log_loss")),
            _f(ho.get("accuracy")), _f(ho.get("balanced_accuracy")),
            _sci(tr["parity"].get("max_abs_diff")),
        ])  # fmt: skip
    return _table(columns, rows, left=(0, 1, 4))


def _size_table(report: Mapping[str, Any]) -> list[str]:
    if not report["sequence_size_comparison"]:
        return ["Only one size of each sequence model is registered; nothing to compare."]
    columns = ["model", "eval acc", "eval bal. acc", "eval macro-F1", "eval log loss",
               "WF bal. acc", "1-row p50 µs", "ONNX bytes"]  # fmt: skip
    rows = []
    for r in report["sequence_size_comparison"]:
        ev, wf = r["evaluation"], r["walk_forward_mean"]
        rows.append([
            r["model"], _f(ev["accuracy"]), _f(ev["balanced_accuracy"]), _f(ev["macro_f1"]),
            _f(ev["log_loss"]), _f(wf.get("balanced_accuracy")),
            _f(r["tick_latency_us_p50"], 0), str(r["onnx_bytes"]),
        ])  # fmt: skip
    return _table(columns, rows)


def render_markdown(report: Mapping[str, Any]) -> str:
    """The human-readable report (numbers identical to ``report.json``)."""
    src = report["evaluation"]
    lat = report.get("tick_latency_us_p50") or {}
    lines = [
        "# Model evaluation on the held-out window",
        "",
        f"- window: {src['start']} .. {src['end_exclusive']} (exclusive), "
        f"data `{src['data_source']}`, symbols {', '.join(src['symbols'])}",
        f"- rows: {src['rows']} labelled bars; label: {src['label']['rule']} "
        f"(horizon {src['label']['horizon_bars']} bars, fee {src['label']['fee_rate']} per side, "
        f"dead zone {src['label']['dead_zone']}); features `{src['feature_version']}`",
        f"- label balance S/H/B: {_balance(src['label_balance'])}",
        f"- models: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}",
        f"- ensemble weights: {report['ensemble']['weights']}"
        + (
            f"; missing members: {report['ensemble']['missing']}"
            if report["ensemble"]["missing"]
            else ""
        ),
        f"- equity rule: {report['trading_rule']}",
        "",
        "## Warnings",
        "",
        *([f"- {w}" for w in report["warnings"]] or ["- none"]),
        "",
        "## The system on the evaluation window",
        "",
        "The whole topology in-process (`streams.runner`) with these models and the configured "
        "gate, vetoes, strategy, sizing, risk and the paper venue's costs: what a deployment "
        "would have done, beside the rules below, which trade every signal.",
        "",
        *(system_markdown(report["system"]) if report.get("system") else ["- not run"]),
        "",
        "## Predictors on the evaluation window",
        "",
        *_predictor_table(report),
        "",
        f"Fixed-horizon trades: {report['horizon_rule']}",
        "",
        *_horizon_table(report),
        "",
        "Per-class precision (P) and recall (R):",
        "",
        *_per_class_table(report),
        "",
        "## Walk-forward validation (from the manifests, training period only)",
        "",
        *_training_table(report),
        "",
        "## Sequence models: small vs large",
        "",
        *_size_table(report),
        "",
        "## One-row scoring latency (p50 µs, one thread, this run's machine)",
        "",
        *([f"- {k}: {v:.0f}" for k, v in lat.items()] or ["- not measured"]),
        "",
        "## Plots",
        "",
        "![confusion matrices](confusion_matrices.png)",
        "",
        "![calibration](calibration.png)",
        "",
        "![equity](equity.png)",
        "",
    ]
    return "\n".join(lines)
