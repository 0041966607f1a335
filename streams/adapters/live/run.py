"""``quantum-trader live``: the topology (a worker, unless joining one) fed by the live ingest.

1. uses ``QT_KAFKA_BOOTSTRAP`` or starts the embedded broker, creates the topology's topics;
2. starts one Faust worker of the whole topology (``join=False``), as the demo does;
3. resumes every symbol after its newest kline already in ``market.ticks`` (:mod:`.resume`);
   others start at ``since`` or warm up from ``warmup_minutes`` of history; with a universe
   (``--universe N``) the start's selection is refreshed on the exchange clock while it runs
   (:class:`~.universe.UniverseTracker`, changes on ``universe.events``);
4. runs :class:`~.ingest.LiveIngest` until ``until_ms`` (then the end-of-stream watermark, the
   drain and a run report like a replay's) or until interrupted (Ctrl-C: the ingest stops,
   flushes and the worker is stopped; the topics keep everything for a later run or replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.adapters.live.ingest import LiveIngest, LiveSummary
from streams.adapters.live.resume import last_kline_times
from streams.adapters.live.universe import (
    UniverseRule,
    UniverseSelection,
    UniverseTracker,
    selection_of,
)
from streams.config import LiveConfig, Settings, UniverseConfig
from streams.contracts.records import UniverseChanged

if TYPE_CHECKING:
    from streams.adapters.live.rest import RestKlines
from streams.topics import Topic, topic_name


@dataclass(frozen=True)
class LivePlan:
    """What to ingest and how the run goes."""

    symbols: tuple[str, ...]
    since_ms: int | None = None
    until_ms: int | None = None
    join: bool = False  # True: only ingest, a topology is already running on these topics
    run_dir: Path | None = None
    timeout_s: float = 1800.0
    universe: UniverseSelection | None = None  # the start's selection: refreshed while running


def universe_rule(config: UniverseConfig) -> UniverseRule:
    """The selection rule of the ``QT_LIVE__UNIVERSE__*`` settings."""
    return UniverseRule(config.size, config.min_listing_days, config.min_range, config.quote_asset)


def universe_tracker(config: UniverseConfig, start: UniverseSelection) -> UniverseTracker:
    """The running universe from the start's selection (its first refresh on the next grid
    time of ``QT_LIVE__UNIVERSE__REFRESH_MINUTES``)."""
    return UniverseTracker(
        universe_rule(config), config.refresh_minutes * 60_000,
        config.wind_down_minutes * 60_000, start,
    )  # fmt: skip


async def select_universe_now(live: LiveConfig) -> UniverseSelection:
    """Today's universe from the exchange's exchangeInfo and 24h ticker (see universe.py)."""
    from streams.adapters.live.rest import binance_client

    client = binance_client(live.market, live.rest_url, live.rest_timeout_s)
    try:
        info, tickers = await rest_client(client, live).universe_inputs()
    finally:
        await client.close_connection()
    return selection_of(info, tickers, universe_rule(live.universe))


def rest_client(client: Any, live: LiveConfig) -> RestKlines:
    """The REST side of the ingest on python-binance's ``client``."""
    from streams.adapters.live.backoff import Backoff
    from streams.adapters.live.rest import RestKlines

    return RestKlines(
        client, live.market, page_limit=live.rest_page_limit,
        weight_budget=live.rest_weight_budget,
        backoff=Backoff(live.backoff_base_s, live.backoff_cap_s),
    )  # fmt: skip


def read_universe(bootstrap: str, settings: Settings) -> list[UniverseChanged]:
    """Every change on ``universe.events`` so far, in written order (one partition)."""
    from streams.adapters.live.resume import written_values
    from streams.contracts.codec import topic_codec

    codec = topic_codec(Topic.UNIVERSE_EVENTS)
    topic = topic_name(Topic.UNIVERSE_EVENTS, settings.topic_prefix)
    records = [codec.decode_record(v) for v in written_values(bootstrap, topic)]
    return [r for r in records if isinstance(r, UniverseChanged)]


def resume_points(bootstrap: str, settings: Settings, plan: LivePlan) -> dict[str, int]:
    """Next open time per symbol: after its newest tick in ``market.ticks``, else ``since``.

    ``since`` is only for a topic none of the symbols is in yet: a symbol new to a topic that
    has ticks starts with the others (the sequencer's rule), never behind their newest.
    """
    topic = topic_name(Topic.MARKET_TICKS, settings.topic_prefix)
    starts = {s: t + 60_000 for s, t in last_kline_times(bootstrap, topic, plan.symbols).items()}
    if plan.since_ms is not None and not starts:
        for symbol in plan.symbols:
            starts.setdefault(symbol, plan.since_ms)
    return starts


async def ingest(
    settings: Settings,
    bootstrap: str,
    plan: LivePlan,
    starts: dict[str, int],
    idempotence: bool,
    on_progress: Callable[[LiveSummary], None] | None = None,
    tracker: UniverseTracker | None = None,
) -> LiveSummary:
    """Run the ingest into the settings' topics; SIGINT/SIGTERM stop it cleanly."""
    from streams.adapters.live.rest import binance_client
    from streams.adapters.live.sink import kafka_live_sink

    live = settings.live
    sink = kafka_live_sink(
        bootstrap, settings.topic_prefix, partitions=settings.partitions,
        replication=settings.replication_factor, idempotence=idempotence,
    )  # fmt: skip
    client = binance_client(live.market, live.rest_url, live.rest_timeout_s)
    rest = rest_client(client, live)
    runner = LiveIngest(
        live, plan.symbols, sink, rest, starts=starts, until_ms=plan.until_ms,
        end_of_stream=plan.until_ms is not None, on_progress=on_progress, universe=tracker,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, runner.stop)
    health = None
    if live.metrics_port:
        from streams.observability.ingest import serve_health

        health = await serve_health(runner, settings.web_host, live.metrics_port)
    try:
        return await runner.run()
    finally:
        await client.close_connection()
        if health is not None:
            await health.cleanup()


def run_live(
    settings: Settings,
    plan: LivePlan,
    console: Any,
    on_progress: Callable[[LiveSummary], None] | None = None,
) -> tuple[LiveSummary, dict[str, Any] | None]:
    """Steps 1-4 of the module doc; the report is ``None`` unless the run had an end."""
    from streams.app import ensure_topics
    from streams.brokers.faust_settings import resolve_bootstrap
    from streams.workers import running_worker, worker_env

    with resolve_bootstrap(settings) as broker:
        embedded = broker.embedded or settings.kafka_embedded
        console.print(f"[bold]broker[/] {broker.bootstrap}; topics under '{settings.topic_prefix}'")
        ensure_topics(broker.bootstrap, settings, keep_forever=True)
        tracker = None
        if plan.universe is not None:
            tracker = universe_tracker(settings.live.universe, plan.universe)
            tracker.resume(read_universe(broker.bootstrap, settings), plan.universe.at_ms)
            plan = replace(plan, symbols=tracker.streamed)  # leavers still winding down too
        starts = resume_points(broker.bootstrap, settings, plan)
        run_dir = plan.run_dir or settings.runs_dir / "live"
        if plan.join:
            summary = asyncio.run(
                ingest(settings, broker.bootstrap, plan, starts, not embedded, on_progress, tracker)
            )
            return summary, None
        env = worker_env(settings, broker.bootstrap, settings.topic_prefix, embedded,
                         run_dir / "traces.jsonl")  # fmt: skip
        with running_worker(env, run_dir / "worker.log") as worker:
            console.print(f"[bold]worker[/] pid {worker.pid}, log {run_dir / 'worker.log'}")
            summary = asyncio.run(
                ingest(settings, broker.bootstrap, plan, starts, not embedded, on_progress, tracker)
            )
            if plan.until_ms is None or not summary.ticks:
                return summary, None
            report = _drain_and_report(settings, broker.bootstrap, env, worker, plan, summary)
        return summary, report


def _drain_and_report(
    settings: Settings,
    bootstrap: str,
    env: dict[str, str],
    worker: Any,
    plan: LivePlan,
    summary: LiveSummary,
) -> dict[str, Any]:
    """Wait for the drain and build the run report exactly as the demo does."""
    from rich.progress import Progress

    from models.scorer import promoted_versions
    from streams.config import run_configuration
    from streams.demo import read_back, wait_until_drained
    from streams.report import ReportBuilder, write_run
    from streams.workers import WorkerWatch

    run_dir = plan.run_dir or settings.runs_dir / "live"
    watch = WorkerWatch(worker, int(env["QT_WEB_PORT"]), run_dir / "worker.log")
    with Progress() as progress:
        wait_until_drained(bootstrap, settings.topic_prefix, settings.partitions, watch,
                           plan.timeout_s, progress, summary.last_event_ms or 0)  # fmt: skip
    builder = ReportBuilder(settings.risk.starting_equity_usd)
    builder.add_all(read_back(bootstrap, settings.topic_prefix, settings.partitions,
                              settings.max_event_skew_ms))  # fmt: skip
    report = builder.build(
        model_versions=promoted_versions(settings.registry_dir), elapsed_s=0.0,
        bars=builder.counts["TickReceived"],
        extra={"mode": "live", "market": settings.live.market, "topic_prefix":
               settings.topic_prefix, "config": run_configuration(settings),
               "live": live_report(summary)},
    )  # fmt: skip
    write_run(run_dir, report, builder.trades)
    return report


def live_report(summary: LiveSummary) -> dict[str, Any]:
    """The ingest's own figures, JSON-safe (for report.json and the command's summary)."""
    return {
        "ticks": summary.ticks, "backfilled": summary.backfilled,
        "duplicates_dropped": summary.sequencer.duplicates,
        "missing_on_exchange": dict(summary.sequencer.missing),
        "warm_up_klines": dict(summary.sequencer.history),
        "dead_letters": summary.dead_letters, "reconnects": summary.reconnects,
        "rest_requests": summary.rest.requests, "rest_rate_limited": summary.rest.rate_limited,
        "universe_refreshes": summary.universe_refreshes,
        "universe_changes": [
            {"at_ms": e.event_time_ms, "symbol": e.symbol, "change": e.change.value,
             "reason": e.reason}
            for e in summary.universe_events
        ],
        "connections": [
            {"name": c.name, "streams": len(c.streams), "sessions": c.sessions,
             "reconnects": c.reconnects, "rotations": c.rotations,
             "idle_timeouts": c.idle_timeouts, "last_error": c.last_error}
            for c in summary.connections
        ],
    }  # fmt: skip


def symbols_of(text: str, default: Sequence[str]) -> tuple[str, ...]:
    """Comma-separated symbols (upper-cased), or ``default``."""
    chosen = tuple(s.strip().upper() for s in text.split(",") if s.strip())
    return chosen or tuple(default)
