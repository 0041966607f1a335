"""Prometheus metrics of a worker: exactly the agreed names, one registry, small helpers.

The agreed names are the contract with ``infra/`` (Grafana dashboards and alert rules query
them; a test there compares against :func:`exported_metric_names`). Agents never touch
``prometheus_client`` directly: they call the helpers of :class:`Metrics`, which keeps label
values consistent (stage names, enum values) and holds the little state a gauge needs (the
rolling BUY/SELL windows behind ``qt_signal_side_share``, the equity peak behind
``qt_drawdown_ratio``).

One process-wide instance is created on first use (:func:`metrics`), not at import time; tests
install their own with :func:`install_metrics` to read values from a fresh registry.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from streams.stages.ensemble import Scorer
from streams.vocabulary import TradingMode

#: Exposition content type for the ``/metrics`` view.
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Histogram buckets of per-record handling time: 10 µs .. 2.5 s (a merge stage's amortised
#: per-record time is tens of µs; a stalled send shows up in the top buckets).
LATENCY_BUCKETS = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5, 2.5,
)  # fmt: skip
#: Buckets of one model's scoring time for one batch: 50 µs .. 1 s.
SCORING_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.25, 1.0)
#: Non-HOLD signals per window behind ``qt_signal_side_share`` (the supervisor's default).
SIDE_WINDOW = 200
#: ``qt_signal_side_share`` scope of all symbols together.
OVERALL = "overall"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One agreed metric: the name Prometheus queries use, its type, labels and help."""

    name: str
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str


#: The agreed metric set (README "Observability"): names as they appear in PromQL.
AGREED: tuple[MetricSpec, ...] = (
    MetricSpec("qt_stage_records_total", "counter", ("stage", "topic"), "records handled"),
    MetricSpec("qt_stage_latency_seconds", "histogram", ("stage",), "handling time per record"),
    MetricSpec(
        "qt_stage_last_event_timestamp_seconds", "gauge", ("stage",),
        "wall clock (unix s) when the stage last processed a record",
    ),
    MetricSpec("qt_stage_watermark_ms", "gauge", ("stage",), "event-time progress of the input"),
    MetricSpec(
        "qt_stage_stalled", "gauge", ("stage",),
        "1 = input pending and no progress within QT_STALL_AFTER_S",
    ),
    MetricSpec("qt_consumer_lag", "gauge", ("topic", "partition"), "records not yet processed"),
    MetricSpec("qt_deadletters_total", "counter", ("stage", "reason"), "records dead-lettered"),
    MetricSpec(
        "qt_stage_errors_total", "counter", ("stage", "error_type"),
        "records a stage failed on by its own fault (dead-lettered as stage_error)",
    ),
    MetricSpec(
        "qt_redelivered_total", "counter", ("stage",),
        "records skipped as already applied, or as a copy an upstream re-sent after a restart",
    ),
    MetricSpec(
        "qt_state_flush_seconds", "histogram", ("stage",),
        "time to store a stage's changed state (the outputs' delivery, then the table write)",
    ),
    MetricSpec("qt_signals_total", "counter", ("symbol", "action"), "ensemble signals"),
    MetricSpec(
        "qt_signal_side_share", "gauge", ("scope", "side"),
        "share of BUY/SELL among the recent non-HOLD signals (scope: symbol or overall)",
    ),
    MetricSpec("qt_vetoes_total", "counter", ("rule",), "supervisor vetoes by rule"),
    MetricSpec("qt_risk_rejections_total", "counter", ("rule",), "risk rejections by rule"),
    MetricSpec("qt_open_positions", "gauge", (), "positions the risk stage holds open"),
    MetricSpec("qt_equity_usd", "gauge", (), "realised portfolio equity"),
    MetricSpec("qt_drawdown_ratio", "gauge", (), "loss from the equity peak, fraction of it"),
    MetricSpec("qt_realized_pnl_usd", "gauge", (), "equity minus starting equity"),
    MetricSpec("qt_kill_switch", "gauge", (), "1 = new entries halted"),
    MetricSpec(
        "qt_trading_mode", "gauge", ("mode",),
        "1 for the policy layer's mode of the latest decision (NORMAL, DEFENSIVE, HALT), 0 else",
    ),
    MetricSpec("qt_model_info", "gauge", ("model", "version"), "model versions in use (=1)"),
    MetricSpec(
        "qt_model_drift_psi", "gauge", ("model", "feature"),
        "PSI of the rolling window against the training reference (model=features: a feature; "
        "feature=predicted_class: a model's or the ensemble's predicted-class distribution)",
    ),
    MetricSpec(
        "qt_model_drift_level", "gauge", ("partition",),
        "0 stable, 1 moderate, 2 significant drift (worst PSI, per ensemble partition)",
    ),
    MetricSpec(
        "qt_model_health_veto_share", "gauge", ("partition",),
        "share of the partition's last BUY/SELL signals the supervisor vetoed for model health "
        "(the policy layer's veto-rate input, docs/edge.md)",
    ),
    MetricSpec(
        "qt_model_scoring_seconds", "histogram", ("model",), "one model's scoring time per batch"
    ),
    MetricSpec("qt_orders_total", "counter", ("side",), "orders planned by side"),
    MetricSpec("qt_trades_closed_total", "counter", ("exit_reason",), "closed trades by reason"),
    MetricSpec(
        "qt_venue_reconcile_findings_total", "counter", ("kind",),
        "differences reconciliation found between the exchange and the venue, by the fix made",
    ),
)  # fmt: skip


def agreed_metric_names() -> frozenset[str]:
    """The agreed names (what dashboards and rules may use)."""
    return frozenset(spec.name for spec in AGREED)


def _collector(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    if spec.kind == "counter":
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.help, spec.labels, registry=registry)
    buckets = LATENCY_BUCKETS if spec.name == "qt_stage_latency_seconds" else SCORING_BUCKETS
    return Histogram(spec.name, spec.help, spec.labels, buckets=buckets, registry=registry)


class SideWindow:
    """The last ``size`` non-HOLD sides of one scope; shares of BUY and SELL."""

    def __init__(self, size: int = SIDE_WINDOW) -> None:
        self._sides: deque[bool] = deque(maxlen=size)  # True = BUY
        self._buys = 0

    def add(self, buy: bool) -> None:
        """Record one BUY (``True``) or SELL signal, forgetting the oldest beyond the size."""
        if len(self._sides) == self._sides.maxlen and self._sides[0]:
            self._buys -= 1
        self._sides.append(buy)
        self._buys += int(buy)

    def shares(self) -> tuple[float, float]:
        """(BUY share, SELL share); (0, 0) while empty."""
        n = len(self._sides)
        return (0.0, 0.0) if n == 0 else (self._buys / n, (n - self._buys) / n)


class Metrics:
    """The agreed collectors on one registry, and the helpers agents call."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        side_window: int = SIDE_WINDOW,
        starting_equity_usd: float = 10_000.0,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._c = {spec.name: _collector(spec, self.registry) for spec in AGREED}
        self._side_window = side_window
        self._windows: dict[str, SideWindow] = {}
        self.starting_equity_usd = starting_equity_usd
        self._peak = starting_equity_usd

    def set_starting_equity(self, equity_usd: float) -> None:
        """The run's starting equity (realised PnL and the drawdown peak start from it)."""
        self.starting_equity_usd = equity_usd
        self._peak = equity_usd

    # -- stages ---------------------------------------------------------------------------------
    def stage_records(self, stage: str, topic: str, n: int = 1) -> None:
        """``n`` data records of ``topic`` handled by ``stage``."""
        self._c["qt_stage_records_total"].labels(stage, topic).inc(n)

    def stage_latency(self, stage: str, seconds_per_record: float, n: int = 1) -> None:
        """``n`` records handled in ``seconds_per_record`` each (a batch's amortised time)."""
        child = self._c["qt_stage_latency_seconds"].labels(stage)
        for _ in range(n):
            child.observe(seconds_per_record)

    def stage_progress(self, stage: str, wall_s: float, watermark_ms: int | None) -> None:
        """``stage`` processed something at ``wall_s``; its input reached ``watermark_ms``."""
        self._c["qt_stage_last_event_timestamp_seconds"].labels(stage).set(wall_s)
        if watermark_ms is not None:
            self._c["qt_stage_watermark_ms"].labels(stage).set(watermark_ms)

    def stage_stalled(self, stage: str, stalled: bool) -> None:
        """Whether ``stage`` has input pending and made no progress within the stall limit."""
        self._c["qt_stage_stalled"].labels(stage).set(1 if stalled else 0)

    def consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        """Records of ``topic``/``partition`` not processed yet by its slowest reader."""
        self._c["qt_consumer_lag"].labels(topic, str(partition)).set(lag)

    def dead_letter(self, stage: str, reason: str) -> None:
        """One record dead-lettered by ``stage`` for ``reason``."""
        self._c["qt_deadletters_total"].labels(stage, reason).inc()

    def redelivered(self, stage: str, n: int = 1) -> None:
        """``n`` records ``stage`` had already applied (or were re-sent copies): skipped."""
        self._c["qt_redelivered_total"].labels(stage).inc(n)

    def state_flush(self, stage: str, seconds: float) -> None:
        """One flush of ``stage``'s changed state took ``seconds``."""
        self._c["qt_state_flush_seconds"].labels(stage).observe(seconds)

    def stage_error(self, stage: str, error_type: str) -> None:
        """``stage`` raised ``error_type`` on a record: a bug, dead-lettered as stage_error."""
        self._c["qt_stage_errors_total"].labels(stage, error_type).inc()

    # -- trading ----------------------------------------------------------------------------

    def signal(self, symbol: str, action: str) -> None:
        """One ensemble signal; BUY/SELL also move the symbol's and the overall side shares."""
        self._c["qt_signals_total"].labels(symbol, action).inc()
        if action not in ("BUY", "SELL"):
            return
        for scope in (symbol, OVERALL):
            window = self._windows.get(scope)
            if window is None:
                window = self._windows[scope] = SideWindow(self._side_window)
            window.add(action == "BUY")
            buy, sell = window.shares()
            self._c["qt_signal_side_share"].labels(scope, "BUY").set(buy)
            self._c["qt_signal_side_share"].labels(scope, "SELL").set(sell)

    def veto(self, rule: str) -> None:
        """One supervisor veto by ``rule`` (a signal with two reasons counts under both)."""
        self._c["qt_vetoes_total"].labels(rule).inc()

    def health_veto_share(self, partition: int, share: float) -> None:
        """The supervisor partition's health-veto share after its latest BUY/SELL signal."""
        self._c["qt_model_health_veto_share"].labels(str(partition)).set(share)

    def risk_rejection(self, rule: str) -> None:
        """One decision rejected by the risk ``rule``."""
        self._c["qt_risk_rejections_total"].labels(rule).inc()

    def portfolio(self, *, equity_usd: float, open_positions: int, halted: bool) -> None:
        """The risk stage's portfolio after an event: equity, positions, kill switch."""
        self._peak = max(self._peak, equity_usd)
        drawdown = (self._peak - equity_usd) / self._peak if self._peak > 0 else 0.0
        self._c["qt_equity_usd"].set(equity_usd)
        self._c["qt_open_positions"].set(open_positions)
        self._c["qt_drawdown_ratio"].set(drawdown)
        self._c["qt_realized_pnl_usd"].set(equity_usd - self.starting_equity_usd)
        self._c["qt_kill_switch"].set(1 if halted else 0)

    def trading_mode(self, mode: str) -> None:
        """The policy layer's mode of the latest decision the risk stage weighed."""
        for m in TradingMode:
            self._c["qt_trading_mode"].labels(m.value).set(1 if m.value == mode else 0)

    def model_info(self, versions: Mapping[str, str]) -> None:
        """The model versions this worker scores with."""
        for model, version in versions.items():
            self._c["qt_model_info"].labels(model, version).set(1)

    def model_drift(self, instance: int, level: int, psi: Mapping[tuple[str, str], float]) -> None:
        """A drift reading: its level and the PSI per (model, feature)."""
        self._c["qt_model_drift_level"].labels(str(instance)).set(level)
        for (model, feature), value in psi.items():
            self._c["qt_model_drift_psi"].labels(model, feature).set(value)

    def model_scoring(self, model: str, seconds: float) -> None:
        """One batch scored by ``model`` in ``seconds``."""
        self._c["qt_model_scoring_seconds"].labels(model).observe(seconds)

    def order(self, side: str) -> None:
        """One order planned on ``side``."""
        self._c["qt_orders_total"].labels(side).inc()

    def trade_closed(self, exit_reason: str) -> None:
        """One trade closed for ``exit_reason``."""
        self._c["qt_trades_closed_total"].labels(exit_reason).inc()

    def venue_finding(self, kind: str) -> None:
        """One reconciliation finding (a ``ReconcileKind``) of the testnet venue."""
        self._c["qt_venue_reconcile_findings_total"].labels(kind).inc()

    # -- exposition -------------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The current value of one sample (tests, health), ``None`` when never set."""
        return self.registry.get_sample_value(name, dict(labels or {}))


def exported_metric_names(m: Metrics | None = None) -> frozenset[str]:
    """Metric names the registry really exposes, as PromQL sees them.

    Counters are registered as ``<family>`` and sampled as ``<family>_total``; histograms are
    queried through ``_bucket``/``_sum``/``_count`` of the family name, which is the agreed one.
    """
    registry = (m or Metrics()).registry
    names: set[str] = set()
    for family in registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return frozenset(names)


_current: Metrics | None = None


def metrics() -> Metrics:
    """The process-wide :class:`Metrics` (created on first use)."""
    global _current
    if _current is None:
        _current = Metrics()
    return _current


def install_metrics(m: Metrics | None) -> Metrics | None:
    """Make ``m`` the process-wide instance; returns the previous one (tests restore it)."""
    global _current
    previous, _current = _current, m
    return previous


class TimedScorer:
    """An ensemble scorer made of single-model scorers, timing each (``qt_model_scoring_seconds``).

    Each member is a :class:`~streams.stages.ensemble.Scorer` (one ``models.scorer.EnsembleScorer``
    per model). Scores are exactly those of the one-scorer-for-all ensemble: the same ONNX
    sessions see the same inputs in the same order; only the call is split per model to time it.
    """

    def __init__(
        self,
        members: Mapping[str, Scorer],
        sink: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not members:
            raise ValueError("TimedScorer needs at least one model")
        self._members = dict(members)
        self._sink = sink
        self._clock = clock
        versions = {m.feature_version for m in self._members.values()}
        if len(versions) != 1:
            raise ValueError(f"models were trained on different feature versions: {versions}")
        self.feature_version: str = versions.pop()

    @property
    def names(self) -> tuple[str, ...]:
        """Model names in scoring order."""
        return tuple(n for m in self._members.values() for n in m.names)

    @property
    def versions(self) -> dict[str, str]:
        """Loaded version per model."""
        return {k: v for m in self._members.values() for k, v in m.versions.items()}

    def score(self, tabular: np.ndarray | None, window: np.ndarray | None) -> dict[str, np.ndarray]:
        """Every member's probabilities; each member's wall time goes to the sink."""
        sink = self._sink or metrics().model_scoring
        out: dict[str, np.ndarray] = {}
        for name, member in self._members.items():
            started = self._clock()
            out.update(member.score(tabular, window))
            sink(name, self._clock() - started)
        return out
