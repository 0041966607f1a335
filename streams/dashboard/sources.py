"""Where the dashboard's data comes from: the topics, a run folder, the registry, the worker.

* :class:`TopicFeed`: a background thread that reads every topic of a run (one topic prefix)
  from the beginning and folds each decoded record into a :class:`ReadModel`; it keeps up with
  a live run or a replay in progress, and reads a finished run's topics if the broker still
  has them. It also reads every stage's state changelog (``<app>-state-<stage>-changelog``,
  joined as soon as the worker created it): the stored state the learning view, the overview's
  trading mode and marks and the pipeline page's state sizes come from. It commits nothing and
  joins no consumer group's work: a pure reader.
* :func:`load_run_folder`: a finished run folder (``runs/<id>/``): ``report.json``, its
  ``trades.csv`` and, when the run wrote one, ``dashboard.json`` (the read model's snapshot).
* :func:`read_stored_states`: every stage's stored state in one go (the demo's last snapshot).
* :func:`list_runs`, :func:`registry_models`, :func:`worker_pipeline`: the runs page, the
  models page's registry half and the pipeline page (the worker's ``/health`` and ``/metrics``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams import kafka_io
from streams.agents.durable import read_state_changelog, state_changelog_topic
from streams.dashboard.model import DOCUMENT_STAGES, ReadModel, drawdown_curve
from streams.ordering import WATERMARK_HEADER, header_value
from streams.topics import Topic, topic_name
from streams.topology import STAGES

log = logging.getLogger(__name__)

#: The snapshot a run folder keeps for the dashboard (written by the demo).
DASHBOARD_FILE = "dashboard.json"
#: Not read: feature rows are large (price windows) and no page shows them; ``models.swaps``
#: holds copies of ``models.events`` records (one per partition), read there once.
UNREAD_TOPICS = frozenset({Topic.MARKET_FEATURES, Topic.MODELS_SWAPS})
FEED_TOPICS = tuple(t for t in Topic if t not in UNREAD_TOPICS)
#: How often the feed looks for state changelogs the worker has not created yet (seconds).
CHANGELOG_POLL_S = 2.0


def state_changelogs(app_id: str, prefix: str) -> dict[str, str]:
    """Changelog topic -> stage, for every stage of the topology in the run ``prefix``."""
    return {state_changelog_topic(app_id, prefix, spec.name): spec.name for spec in STAGES}


class DashboardError(Exception):
    """The dashboard cannot start or read a source; the message says what to fix."""


# --------------------------------------------------------------------------------- topics


def prefixes_on(topic_names: Iterable[str]) -> list[str]:
    """Every topic prefix that has a ``market.ticks`` topic (one per run), sorted."""
    suffix = Topic.MARKET_TICKS.value
    return sorted({n[: -len(suffix)] for n in topic_names if n.endswith(suffix)})


def choose_prefix(available: list[str], wanted: str | None) -> str:
    """``wanted`` if given, else the only run on the broker; a clear error otherwise."""
    if wanted is not None:
        return wanted
    if len(available) == 1:
        return available[0]
    if not available:
        raise DashboardError(
            "no run on this broker yet (no *market.ticks topic): start a worker or a demo, "
            "or pass --prefix to wait for one"
        )
    shown = ", ".join(repr(p) for p in available[:20])
    raise DashboardError(f"{len(available)} runs on this broker: pass --prefix, one of {shown}")


def broker_topics(bootstrap: str, timeout_s: float = 10.0) -> dict[str, int]:
    """Partition count of every topic on the broker (a clear error when it does not answer)."""
    from confluent_kafka import KafkaException

    admin = kafka_io.admin_client(bootstrap, quiet=True, connect_timeout_ms=5000)
    try:
        return kafka_io.partition_counts(admin, timeout_s)
    except KafkaException as exc:
        raise kafka_io.broker_error(bootstrap, "listing topics", exc) from exc


@dataclass
class FeedStatus:
    """What the feed has done, for the pages' header (and the operator's confidence)."""

    bootstrap: str
    prefix: str
    started_s: float = field(default_factory=time.time)
    records: int = 0
    undecodable: int = 0
    topics: list[str] = field(default_factory=list)
    error: str | None = None
    last_record_s: float | None = None


class TopicFeed:
    """Reads a run's topics into a :class:`ReadModel` in a daemon thread (see the module doc).

    ``lock`` guards ``model``: the web server takes it to read views.
    """

    def __init__(
        self, model: ReadModel, bootstrap: str, prefix: str, app_id: str = "quantum-trader"
    ) -> None:
        self.model = model
        self.lock = threading.Lock()
        self.status = FeedStatus(bootstrap, prefix)
        self.changelogs = state_changelogs(app_id, prefix)
        self._assigned_changelogs: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)

    def start(self) -> TopicFeed:
        """Start reading; returns self."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop reading and close the consumer."""
        self._stop.set()
        self._thread.join(timeout_s)

    def _wait_for_topics(self) -> dict[str, int]:
        """Partition counts of the run's topics, once ``market.ticks`` exists."""
        prefix = self.status.prefix
        while not self._stop.is_set():
            try:
                counts = broker_topics(self.status.bootstrap)
            except kafka_io.KafkaIOError as exc:
                self.status.error = str(exc)
            else:
                if topic_name(Topic.MARKET_TICKS, prefix) in counts:
                    self.status.error = None
                    return {
                        topic_name(t, prefix): counts[topic_name(t, prefix)]
                        for t in FEED_TOPICS
                        if topic_name(t, prefix) in counts
                    }
                self.status.error = f"waiting for the topics under prefix {prefix!r}"
            self._stop.wait(1.0)
        return {}

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        partitions = self._wait_for_topics()
        if not partitions:
            return
        self.status.topics = sorted(partitions)
        # A group id of its own, never committed: the feed only reads (assign, not subscribe).
        group = f"{self.status.prefix}dashboard-{uuid.uuid4().hex[:8]}"
        consumer = kafka_io.consumer(kafka_io.ConsumerOptions(self.status.bootstrap, group))
        consumer.assign(
            [
                TopicPartition(name, p, OFFSET_BEGINNING)
                for name, count in partitions.items()
                for p in range(count)
            ]
        )
        next_look = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() >= next_look and self._changelogs_missing():
                    self._assign_changelogs(consumer)
                    next_look = time.monotonic() + CHANGELOG_POLL_S
                batch = consumer.consume(500, 0.2)
                if batch:
                    self._fold(batch)
        except Exception as exc:  # the thread must say why it stopped, on the page
            log.exception("dashboard feed stopped")
            self.status.error = f"the feed stopped: {type(exc).__name__}: {exc}"
        finally:
            consumer.close()

    def _changelogs_missing(self) -> bool:
        return len(self._assigned_changelogs) < len(self.changelogs)

    def _assign_changelogs(self, consumer: Any) -> None:
        """Add the state changelogs that exist by now to the assignment, from the start."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        try:
            counts = broker_topics(self.status.bootstrap)
        except kafka_io.KafkaIOError:
            return  # said by the next topic read; tried again later
        new = [
            TopicPartition(name, p, OFFSET_BEGINNING)
            for name in self.changelogs
            if name in counts and name not in self._assigned_changelogs
            for p in range(counts[name])
        ]
        if new:
            consumer.incremental_assign(new)
            self._assigned_changelogs.update(tp.topic for tp in new)

    def _fold(self, batch: list[Any]) -> None:
        from streams.contracts.codec import topic_codec
        from streams.contracts.errors import ContractError

        prefix = self.status.prefix
        decoded = []
        state: list[tuple[str, Any]] = []
        for msg in batch:
            error = msg.error()
            if error is not None:
                self.status.error = kafka_io.describe(error)
                continue
            stage = self.changelogs.get(msg.topic() or "")
            if stage is not None:
                state.append((stage, msg))
                continue
            if header_value(msg.headers(), WATERMARK_HEADER) is not None:
                continue
            try:
                base = Topic((msg.topic() or "").removeprefix(prefix))
                decoded.append(topic_codec(base).decode_record(msg.value() or b""))
            except (ValueError, ContractError):
                self.status.undecodable += 1  # the stages dead-letter it; counted there
        with self.lock:
            self.model.apply_all(decoded)
            for stage, msg in state:
                kind, ts = msg.timestamp()
                offset = msg.offset() or 0
                self.model.apply_state_record(
                    stage, offset, msg.key(), msg.value(), ts if kind else None
                )
        self.status.records += len(decoded)
        if decoded:
            self.status.last_record_s = time.time()


def read_stored_states(
    model: ReadModel, bootstrap: str, app_id: str, prefix: str, read: str, timeout_s: float = 60.0
) -> None:
    """Every stage's state changelog read to its end now, into ``model`` (``read``: when)."""
    for topic, stage in state_changelogs(app_id, prefix).items():
        fold = read_state_changelog(
            bootstrap, topic, keep_documents=stage in DOCUMENT_STAGES, timeout_s=timeout_s
        )
        if fold.records:
            model.set_stored_state(stage, fold, read)


# ------------------------------------------------------------------------------ run folders


@dataclass(frozen=True)
class RunFolder:
    """A finished run as the dashboard shows it."""

    run_id: str
    path: Path
    report: dict[str, Any]
    snapshot: dict[str, Any]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DashboardError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DashboardError(f"{path}: not a JSON object")
    return data


def snapshot_from_trades(report: Mapping[str, Any], rows: list[dict[str, str]]) -> dict[str, Any]:
    """The overview of a run folder without ``dashboard.json``: its closed trades only."""
    start = float(report.get("performance", {}).get("starting_equity_usd", 0.0))
    t: list[int] = []
    equity: list[float] = []
    for r in sorted(rows, key=lambda x: (int(x["event_time_ms"]), x["trade_id"])):
        if float(r["qty"]) > 0:
            t.append(int(r["event_time_ms"]))
            equity.append((equity[-1] if equity else start) + float(r["net_pnl"]))
    perf = report.get("performance", {})
    return {
        "overview": {
            "starting_equity_usd": start,
            "equity_curve": {"t": t, "equity": equity, "drawdown": drawdown_curve(start, equity)},
            "realized_pnl_usd": perf.get("net_pnl_usd"),
            "unrealized_pnl_usd": 0.0,
            "equity_usd": perf.get("final_equity_usd"),
            "fees_usd": perf.get("fees_usd"),
            "positions": [],
            "recent_trades": [
                {**r, "net_pnl": float(r["net_pnl"]), "event_time_ms": int(r["event_time_ms"])}
                for r in rows[::-1]
            ],
            "kill_switch": {"halted": False, "command": None, "rejections": 0},
            "commands": [],
            "counts": {},
        },
        "signals": [],
        "models": {},
        "learning": {},
        "partial": "this run folder has no dashboard.json: trades and report only",
    }


def write_snapshot(run_dir: Path, model: ReadModel) -> Path:
    """``dashboard.json``: the read model of a finished run, for the dashboard's run view."""
    path = run_dir / DASHBOARD_FILE
    path.write_text(json.dumps(model.snapshot(), default=str) + "\n", encoding="utf-8")
    return path


def load_run_folder(path: Path) -> RunFolder:
    """A run folder's report and snapshot (``dashboard.json``, else built from its trades)."""
    from streams.report import REPORT_FILE, TRADES_FILE, ReportError, read_trades_csv

    if not (path / REPORT_FILE).is_file():
        raise DashboardError(f"{path} is not a finished run folder (no {REPORT_FILE})")
    report = _read_json(path / REPORT_FILE)
    if (path / DASHBOARD_FILE).is_file():
        snapshot = _read_json(path / DASHBOARD_FILE)
    else:
        try:
            snapshot = snapshot_from_trades(report, read_trades_csv(path / TRADES_FILE))
        except ReportError as exc:
            raise DashboardError(str(exc)) from exc
    return RunFolder(path.name, path, report, snapshot)


def run_summary(path: Path, report: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the runs page."""
    perf, data, counts = (report.get(k) or {} for k in ("performance", "data", "counts"))
    return {
        "run_id": path.name,
        "mode": report.get("mode"),
        "broker": report.get("broker"),
        "symbols": data.get("symbols"),
        "first_bar": data.get("first_bar"),
        "last_bar": data.get("last_bar"),
        "closed_trades": counts.get("closed_trades"),
        "net_pnl_usd": perf.get("net_pnl_usd"),
        "return_pct": perf.get("return_pct"),
        "max_drawdown_pct": perf.get("max_drawdown_pct"),
        "win_rate": perf.get("win_rate"),
        "trades_sha256": report.get("trades_sha256"),
        "has_equity_png": (path / "equity.png").is_file(),
        "has_traces": (path / "traces.jsonl").is_file(),
        "modified_s": (path / "report.json").stat().st_mtime,
    }


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every finished run folder under ``runs_dir``, newest first (unreadable ones say why)."""
    if not runs_dir.is_dir():
        return []
    rows = []
    for path in runs_dir.iterdir():
        if not (path / "report.json").is_file():
            continue
        try:
            rows.append(run_summary(path, _read_json(path / "report.json")))
        except DashboardError as exc:
            rows.append({"run_id": path.name, "error": str(exc), "modified_s": 0.0})
    return sorted(rows, key=lambda r: r["modified_s"], reverse=True)


def run_dir_of(runs_dir: Path, run_id: str) -> Path:
    """``runs_dir/run_id``, refusing anything that is not a plain folder name in it."""
    if not run_id or "/" in run_id or "\\" in run_id or run_id in (".", ".."):
        raise DashboardError(f"not a run id: {run_id!r}")
    path = runs_dir / run_id
    if not path.is_dir():
        raise DashboardError(f"no run {run_id!r} under {runs_dir}")
    return path


# ---------------------------------------------------------------------------- the registry


def _fold_metrics(fold: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("balanced_accuracy", "macro_f1", "log_loss", "rows", "prediction_balance")
    return {k: fold.get(k) for k in keys}


def registry_models(registry_dir: Path) -> dict[str, Any]:
    """Promoted version of every model with its walk-forward and held-out metrics."""
    from models.registry import RegistryError, read_index, read_manifest

    try:
        promoted = read_index(registry_dir)
    except (RegistryError, OSError) as exc:
        return {"error": f"cannot read the registry {registry_dir}: {exc}", "models": {}}
    out: dict[str, Any] = {}
    for model, version in sorted(promoted.items()):
        try:
            m = read_manifest(registry_dir, model, version)
        except (RegistryError, OSError) as exc:
            out[model] = {"version": version, "error": str(exc)}
            continue
        folds = (m.metrics.get("walk_forward") or {}).get("folds") or []
        out[model] = {
            "version": version,
            "feature_version": m.feature_version,
            "train_range": m.train_range,
            "walk_forward": [_fold_metrics(f) for f in folds],
            "holdout": _fold_metrics(m.metrics.get("holdout") or {}),
            "sha256": m.sha256,
        }
    return {"models": out, "registry": str(registry_dir)}


# ------------------------------------------------------------------------------ the worker


def worker_pipeline(worker_url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The worker's ``/health`` body, per-stage latency and state flush time from ``/metrics``
    (``qt_stage_latency_seconds``, ``qt_state_flush_seconds``), or why not."""
    import urllib.error
    import urllib.request

    from streams.workers import histogram_quantiles

    out: dict[str, Any] = {"worker_url": worker_url, "fetched_s": time.time()}
    try:
        with urllib.request.urlopen(f"{worker_url}/health", timeout=timeout_s) as r:  # noqa: S310
            out["health"], out["status"] = json.loads(r.read()), r.status
    except urllib.error.HTTPError as exc:  # 503 carries the reasons in its body
        try:
            out["health"], out["status"] = json.loads(exc.read()), exc.code
        except ValueError:
            out["error"] = f"{worker_url}/health answered {exc.code} without JSON"
    except (OSError, ValueError) as exc:
        out["error"] = f"the worker at {worker_url} does not answer: {exc}"
        return out
    try:
        with urllib.request.urlopen(f"{worker_url}/metrics", timeout=timeout_s) as r:  # noqa: S310
            text = r.read().decode()
        out["latency"] = histogram_quantiles(text, "qt_stage_latency_seconds", "stage")
        out["state_flush"] = histogram_quantiles(text, "qt_state_flush_seconds", "stage")
    except (OSError, ValueError) as exc:
        out["latency_error"] = str(exc)
    return out
