"""Generate the Grafana dashboards of Quantum Trader (``infra/grafana/dashboards/*.json``).

The JSON files are generated, checked in, and checked for drift by ``tests/unit/test_infra.py``
(regenerating must give the same bytes), so edit this module and run::

    .venv/bin/python infra/grafana/dashboards.py

Every query uses only the metrics the workers export (the agreed names in infra/README.md);
the test parses each query and checks every metric name and grouping label against them.

Portfolio-wide gauges (equity, drawdown, PnL, positions, kill switch) are written by the one
worker that owns the single-partition risk stage. After a rebalance the previous owner keeps
its last value, so panels select the worker whose risk stage processed a record most recently
(:func:`risk_owner`) instead of summing or taking the maximum over workers.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "qt-prometheus"}
OUT_DIR = Path(__file__).resolve().parent / "dashboards"
GRID_WIDTH = 24
RATE = "$__rate_interval"
SCORING = "qt_model_scoring_seconds"
LAST_EVENT = "qt_stage_last_event_timestamp_seconds"

Json = dict[str, Any]


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel and its legend."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    """A panel before layout: Grafana type, queries, unit, size in grid cells."""

    title: str
    kind: str
    queries: tuple[Query, ...]
    description: str
    unit: str = "short"
    width: int = 8
    height: int = 8
    thresholds: tuple[tuple[float, str], ...] = ()
    value_range: tuple[float, float] | None = None
    extra_options: Json = field(default_factory=dict)


def risk_owner(metric: str) -> str:
    """``metric`` from the worker that currently runs the risk stage, labels dropped."""
    owner = 'topk(1, qt_stage_last_event_timestamp_seconds{stage="risk"})'
    return f"sum({metric} and on (instance) {owner})"


def histogram_quantile(q: float, metric: str, by: str) -> str:
    """The ``q`` quantile of histogram ``metric`` per ``by`` label over the rate interval."""
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket[{RATE}])))"


def _field_config(panel: Panel) -> Json:
    steps: list[Json] = [{"color": "green", "value": None}]
    steps += [{"color": color, "value": value} for value, color in panel.thresholds]
    defaults: Json = {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if panel.value_range is not None:
        defaults["min"], defaults["max"] = panel.value_range
    return {"defaults": defaults, "overrides": []}


def _targets(panel: Panel) -> list[Json]:
    return [
        {
            "refId": chr(ord("A") + i),
            "datasource": DATASOURCE,
            "expr": q.expr,
            "legendFormat": q.legend or "__auto",
            "instant": q.instant,
            "range": not q.instant,
        }
        for i, q in enumerate(panel.queries)
    ]


def render_panel(panel: Panel, panel_id: int, x: int, y: int) -> Json:
    """Grafana JSON of ``panel`` at grid position ``(x, y)``."""
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": _targets(panel),
        "fieldConfig": _field_config(panel),
        "options": panel.extra_options,
    }


def layout(panels: list[Panel]) -> list[Json]:
    """Place panels left to right, wrapping rows at the grid width; ids are 1, 2, ..."""
    rendered: list[Json] = []
    x = y = row_height = 0
    for panel_id, panel in enumerate(panels, start=1):
        if x + panel.width > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        rendered.append(render_panel(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return rendered


def _variable(name: str, query: str) -> Json:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard(uid: str, title: str, panels: list[Panel], variables: list[Json]) -> Json:
    """A complete dashboard (schema of Grafana 10/11) in UTC, refreshing every 30 s."""
    return {
        "uid": uid,
        "title": title,
        "tags": ["quantum-trader"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [{"title": "Quantum Trader", "type": "dashboards", "tags": ["quantum-trader"]}],
        "panels": layout(panels),
    }


def trading_panels() -> list[Panel]:
    """PnL, equity, drawdown, positions, kill switch, trading mode, orders and closed trades."""
    return [
        Panel(
            "Equity",
            "stat",
            (Query(risk_owner("qt_equity_usd"), "equity"),),
            "Realised portfolio equity as the risk stage sees it.",
            unit="currencyUSD",
            width=6,
            height=5,
        ),
        Panel(
            "Realized PnL",
            "stat",
            (Query(risk_owner("qt_realized_pnl_usd"), "realized"),),
            "Equity minus starting equity: closed trades net of fees.",
            unit="currencyUSD",
            width=6,
            height=5,
            thresholds=((0.0, "green"),),
        ),
        Panel(
            "Drawdown",
            "gauge",
            (Query(risk_owner("qt_drawdown_ratio"), "drawdown"),),
            "Loss from the equity peak; warns at 12% (daily limit: 15% from the day start).",
            unit="percentunit",
            width=6,
            height=5,
            thresholds=((0.12, "orange"), (0.15, "red")),
            value_range=(0.0, 0.25),
        ),
        Panel(
            "Kill switch",
            "stat",
            (Query(risk_owner("qt_kill_switch"), "halted"),),
            "1 = halted: no new entries (drawdown limit or a halt command); exits still run.",
            width=6,
            height=5,
            thresholds=((1.0, "red"),),
        ),
        Panel(
            "Trading mode",
            "timeseries",
            (
                Query(
                    "sum by (mode) (qt_trading_mode and on (instance) "
                    'topk(1, qt_stage_last_event_timestamp_seconds{stage="risk"}))',
                    "{{mode}}",
                ),
            ),
            "The policy layer's mode of the latest decision (1 = in that mode): NORMAL, "
            "DEFENSIVE (drawdown from the peak, drift, regime, model-health vetoes: smaller "
            "entries), HALT.",
            width=24,
            height=5,
        ),
        Panel(
            "Equity and realized PnL",
            "timeseries",
            (
                Query(risk_owner("qt_equity_usd"), "equity"),
                Query(risk_owner("qt_realized_pnl_usd"), "realized PnL"),
            ),
            "Equity and cumulative realized PnL over time.",
            unit="currencyUSD",
            width=12,
        ),
        Panel(
            "Drawdown over time",
            "timeseries",
            (Query(risk_owner("qt_drawdown_ratio"), "drawdown"),),
            "Drawdown ratio with the warning (12%) and limit (15%) thresholds.",
            unit="percentunit",
            width=12,
            thresholds=((0.12, "orange"), (0.15, "red")),
        ),
        Panel(
            "Open positions",
            "timeseries",
            (Query(risk_owner("qt_open_positions"), "open"),),
            "Concurrent open positions (limit 20 by default).",
            width=8,
        ),
        Panel(
            "Orders by side",
            "timeseries",
            (Query(f"sum by (side) (rate(qt_orders_total[{RATE}]))", "{{side}}"),),
            "Orders planned per second, by side.",
            unit="ops",
            width=8,
        ),
        Panel(
            "Closed trades by exit reason",
            "timeseries",
            (
                Query(
                    f"sum by (exit_reason) (increase(qt_trades_closed_total[{RATE}]))",
                    "{{exit_reason}}",
                ),
            ),
            "Trades closed per interval: take-profit legs, stop loss, trailing stop, other.",
            width=8,
        ),
        Panel(
            "Risk rejections by rule",
            "timeseries",
            (Query(f"sum by (rule) (rate(qt_risk_rejections_total[{RATE}]))", "{{rule}}"),),
            "Sized decisions the risk stage refused, by the rule that refused them.",
            unit="ops",
            width=16,
        ),
        Panel(
            "Venue reconciliation findings",
            "timeseries",
            (
                Query(
                    f"sum by (kind) (increase(qt_venue_reconcile_findings_total[{RATE}]))",
                    "{{kind}}",
                ),
            ),
            "Testnet venue: differences between the exchange and our state, by the fix made "
            "(an unknown position flattened or adopted, a leg missing, ...). Empty on paper.",
            width=8,
        ),
    ]


def ai_panels() -> list[Panel]:
    """Signal balance, vetoes, model versions and scoring latency."""
    symbols = 'symbol=~"$symbol"'
    return [
        Panel(
            "Signal side share (overall)",
            "timeseries",
            (Query('max by (side) (qt_signal_side_share{scope="overall"})', "{{side}}"),),
            "Share of BUY/SELL among recent non-HOLD signals; the supervisor vetoes above 70%.",
            unit="percentunit",
            width=12,
            thresholds=((0.7, "orange"), (0.9, "red")),
        ),
        Panel(
            "Signal side share by symbol",
            "timeseries",
            (
                Query(
                    'max by (scope, side) (qt_signal_side_share{scope=~"$symbol"})',
                    "{{scope}} {{side}}",
                ),
            ),
            "Per-symbol share of BUY/SELL among recent non-HOLD signals.",
            unit="percentunit",
            width=12,
            thresholds=((0.7, "orange"), (0.9, "red")),
        ),
        Panel(
            "Signals by action",
            "timeseries",
            (
                Query(
                    f"sum by (action) (rate(qt_signals_total{{{symbols}}}[{RATE}]))",
                    "{{action}}",
                ),
            ),
            "Ensemble signals per second by action (BUY, SELL, HOLD) for the chosen symbols.",
            unit="ops",
            width=12,
        ),
        Panel(
            "Veto rate by rule",
            "timeseries",
            (Query(f"sum by (rule) (rate(qt_vetoes_total[{RATE}]))", "{{rule}}"),),
            "Supervisor vetoes per second by rule (bias, confidence, staleness, disagreement).",
            unit="ops",
            width=12,
        ),
        Panel(
            "Vetoed share of signals",
            "timeseries",
            (
                Query(
                    f"sum(rate(qt_vetoes_total[{RATE}])) / "
                    f'sum(rate(qt_signals_total{{action!="HOLD"}}[{RATE}]))',
                    "vetoed",
                ),
            ),
            "Vetoes per non-HOLD ensemble signal.",
            unit="percentunit",
            width=8,
        ),
        Panel(
            "Model scoring latency p50 / p99",
            "timeseries",
            (
                Query(histogram_quantile(0.5, SCORING, "model"), "{{model}} p50"),
                Query(histogram_quantile(0.99, SCORING, "model"), "{{model}} p99"),
            ),
            "ONNX Runtime scoring time per model and call.",
            unit="s",
            width=10,
        ),
        Panel(
            "Model versions in use",
            "table",
            (Query("max by (model, version) (qt_model_info)", "", instant=True),),
            "The model versions the workers loaded (one row per model and version).",
            width=6,
            extra_options={"showHeader": True},
        ),
        Panel(
            "Drift from the training reference (PSI)",
            "timeseries",
            (Query("max by (model, feature) (qt_model_drift_psi)", "{{model}} {{feature}}"),),
            "PSI of the rolling event-time window against the manifests' training reference, per "
            "feature (model=features) and per predicted-class distribution (docs/drift.md); "
            "0.1 moderate, 0.25 significant.",
            width=24,
        ),
        Panel(
            "Signals vetoed for model health",
            "timeseries",
            (Query("max by (partition) (qt_model_health_veto_share)", "partition {{partition}}"),),
            "Share of each supervisor partition's last BUY/SELL signals vetoed for model health "
            "(one-sided, missing or stale model, disagreement); at QT_RISK__DEFENSIVE_VETO_SHARE "
            "(0.95) the policy layer sizes that partition's decisions DEFENSIVE (docs/edge.md).",
            width=24,
        ),
    ]


def pipeline_panels() -> list[Panel]:
    """Throughput, latency, event-time progress, stalls, lag and dead letters."""
    return [
        Panel(
            "Records handled by stage",
            "timeseries",
            (Query(f"sum by (stage) (rate(qt_stage_records_total[{RATE}]))", "{{stage}}"),),
            "Records per second each stage handled, over all workers.",
            unit="ops",
            width=12,
        ),
        Panel(
            "Handling latency p99 by stage",
            "timeseries",
            (Query(histogram_quantile(0.99, "qt_stage_latency_seconds", "stage"), "{{stage}}"),),
            "Handling time per record, 99th percentile.",
            unit="s",
            width=12,
        ),
        Panel(
            "Stalled stages",
            "stat",
            (Query("max by (stage) (qt_stage_stalled)", "{{stage}}"),),
            "1 = input pending but no progress within QT_STALL_AFTER_S.",
            width=12,
            height=5,
            thresholds=((1.0, "red"),),
        ),
        Panel(
            "Seconds since last record by stage",
            "stat",
            (Query(f"time() - max by (stage) ({LAST_EVENT})", "{{stage}}"),),
            "Wall-clock age of the last record each stage processed.",
            unit="s",
            width=12,
            height=5,
            thresholds=((60.0, "orange"), (300.0, "red")),
        ),
        Panel(
            "Event-time watermark by stage",
            "timeseries",
            (Query("max by (stage) (qt_stage_watermark_ms)", "{{stage}}"),),
            "Event-time progress (ms since epoch): a stage whose line flattens holds others back.",
            unit="dateTimeAsIso",
            width=12,
        ),
        Panel(
            "Consumer lag by topic",
            "timeseries",
            (Query("sum by (topic) (qt_consumer_lag)", "{{topic}}"),),
            "Records produced but not yet consumed, summed over partitions.",
            width=12,
        ),
        Panel(
            "Records handled by topic",
            "timeseries",
            (Query(f"sum by (topic) (rate(qt_stage_records_total[{RATE}]))", "{{topic}}"),),
            "Per-topic rate of the records the stages handled.",
            unit="ops",
            width=12,
        ),
        Panel(
            "Dead letters by stage and reason",
            "timeseries",
            (
                Query(
                    f"sum by (stage, reason) (rate(qt_deadletters_total[{RATE}]))",
                    "{{stage}}: {{reason}}",
                ),
            ),
            "Records that could not be decoded or failed validation (see the deadletter topic).",
            unit="ops",
            width=12,
        ),
        Panel(
            "State flushes and redelivered records by stage",
            "timeseries",
            (
                Query(
                    "histogram_quantile(0.99, sum by (stage, le) "
                    f"(rate(qt_state_flush_seconds_bucket[{RATE}])))",
                    "{{stage}} flush p99",
                ),
                Query(
                    f"sum by (stage) (increase(qt_redelivered_total[{RATE}]))",
                    "{{stage}} redelivered",
                ),
            ),
            "Time to store a stage's changed state (its outputs' delivery, then the table "
            "write), and the records skipped after a restart or rebalance as already applied or "
            "as re-sent copies (docs/determinism.md).",
            width=12,
        ),
        *live_ingest_panels(),
    ]


def live_ingest_panels() -> list[Panel]:
    """The live ingest (``quantum-trader live``): connections, streams, lag, backfill, REST."""
    return [
        Panel(
            "Live ingest ready",
            "stat",
            (
                Query("min by (market) (qt_live_ready)", "{{market}}"),
                Query("max by (connection) (qt_live_connected)", "{{connection}} open"),
            ),
            "1 = every connection open and no stream silent beyond QT_LIVE__IDLE_TIMEOUT_S.",
            width=12,
            height=5,
            thresholds=((0.0, "red"), (1.0, "green")),
        ),
        Panel(
            "Live lag to the exchange clock",
            "timeseries",
            (Query("max by (market) (qt_live_exchange_lag_seconds)", "{{market}}"),),
            "Exchange time since the newest kline in market.ticks closed (backfill catching up "
            "shows as a falling line).",
            unit="s",
            width=12,
            height=5,
        ),
        Panel(
            "Live messages and reconnects by connection",
            "timeseries",
            (
                Query(
                    f"sum by (connection) (rate(qt_live_messages_total[{RATE}]))",
                    "{{connection}} messages",
                ),
                Query(
                    f"sum by (connection) (increase(qt_live_reconnects_total[{RATE}]))",
                    "{{connection}} reconnects",
                ),
                Query(
                    f"sum by (connection) (increase(qt_live_idle_timeouts_total[{RATE}]))",
                    "{{connection}} idle timeouts",
                ),
            ),
            "Websocket messages per second; sessions replaced (drops, stalls, rotations) and "
            "those replaced by the idle watchdog.",
            width=12,
        ),
        Panel(
            "Seconds since the last message by stream",
            "timeseries",
            (
                Query(
                    "time() - max by (stream) (qt_live_stream_last_message_timestamp_seconds)",
                    "{{stream}}",
                ),
            ),
            "A stream over QT_LIVE__IDLE_TIMEOUT_S replaces its connection.",
            unit="s",
            width=12,
        ),
        Panel(
            "Live klines: produced, backfilled, duplicates, dead letters",
            "timeseries",
            tuple(
                Query(f"sum by (market) (rate({metric}[{RATE}]))", f"{{{{market}}}} {what}")
                for metric, what in (
                    ("qt_live_ticks_total", "produced"),
                    ("qt_live_backfilled_total", "backfilled"),
                    ("qt_live_duplicates_total", "duplicates"),
                    ("qt_live_dead_letters_total", "dead letters"),
                )
            ),
            "Klines per second into market.ticks, those that came over REST, and those dropped.",
            unit="ops",
            width=12,
        ),
        Panel(
            "Live klines missing on the exchange, joiners' warm-up, REST requests and rate limits",
            "timeseries",
            (
                Query(
                    f"sum by (symbol) (increase(qt_live_missing_klines_total[{RATE}]))",
                    "{{symbol}} missing",
                ),
                Query(
                    f"sum by (symbol) (increase(qt_live_warmup_klines_total[{RATE}]))",
                    "{{symbol}} warm-up history",
                ),
                Query(
                    f"sum by (market) (rate(qt_live_rest_requests_total[{RATE}]))",
                    "{{market}} REST requests",
                ),
                Query(
                    f"sum by (market) (increase(qt_live_rest_rate_limited_total[{RATE}]))",
                    "{{market}} 429/418",
                ),
            ),
            "Minutes REST confirmed absent (counted, never filled), history fetched for a "
            "joiner's first kline (its warm-up), REST load and rate limits.",
            width=12,
        ),
        Panel(
            "Live universe: members, winding down, refreshes",
            "timeseries",
            (
                Query("max by (state) (qt_live_universe_symbols)", "{{state}}"),
                Query(
                    f"sum by (market) (increase(qt_live_universe_refreshes_total[{RATE}]))",
                    "{{market}} refreshes",
                ),
            ),
            "With --universe N: symbols in the universe, those that left and keep their stream "
            "for their wind-down (no new entries), and refreshes on the exchange clock "
            "(changes: universe.events).",
            width=12,
        ),
    ]


def all_dashboards() -> dict[str, Json]:
    """File name -> dashboard JSON, for every dashboard of the project."""
    symbol = _variable("symbol", "label_values(qt_signals_total, symbol)")
    return {
        "trading.json": dashboard("qt-trading", "Quantum Trader / Trading", trading_panels(), []),
        "ai.json": dashboard("qt-ai", "Quantum Trader / AI", ai_panels(), [symbol]),
        "pipeline.json": dashboard(
            "qt-pipeline", "Quantum Trader / Pipeline", pipeline_panels(), []
        ),
    }


def render(board: Json) -> str:
    """The checked-in text of ``board``: sorted keys, two-space indent, final newline."""
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def main(out_dir: Path = OUT_DIR) -> list[Path]:
    """Write every dashboard to ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in all_dashboards().items():
        path = out_dir / name
        path.write_text(render(board), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR):
        print(path)
