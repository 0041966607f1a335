"""`quantum-trader demo`: the bundled real data through the whole topology on a real broker."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer


def command(
    data: Annotated[
        Path | None, typer.Option(help="data-set folder (default: the bundled sample)")
    ] = None,
    symbols: Annotated[str, typer.Option(help="comma-separated symbols (default: all)")] = "",
    start: Annotated[str | None, typer.Option(help="first bar (ISO UTC or epoch ms)")] = None,
    end: Annotated[str | None, typer.Option(help="end, exclusive (ISO UTC or epoch ms)")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/demo-<id>)")] = None,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 1800.0,
    min_confidence: Annotated[
        float | None,
        typer.Option(
            help="run the supervisor's bare confidence gate at this minimum instead of the "
            "default edge gate (which stands aside with the bundled models: docs/edge.md); the "
            "bundled models rarely pass the seed's 65% (0 decisions in the 4.5 days), so the "
            "demo uses 50%; pass 0.65 to see the seed's gate"
        ),
    ] = 0.5,
    dashboard: Annotated[
        bool,
        typer.Option(
            help="serve the web dashboard (QT_DASHBOARD_PORT) on the live replay, then on the "
            "finished run folder until Ctrl-C"
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Faust workers of the topology; they split the per-symbol partitions, and the "
            "replay starts once every input partition is held by exactly one of them",
        ),
    ] = 1,
) -> None:
    """Replay real market data through every stage on Kafka and write a run report.

    Starts the embedded broker unless QT_KAFKA_BOOTSTRAP is set, starts a Faust worker of the
    whole topology (--workers N: N of them), replays the data (default: 5
    symbols x 4.5 days of Binance futures 1-minute klines, bundled), waits until the pipeline
    has drained, reads every output topic back and writes report.json, trades.csv,
    decisions.jsonl.gz (for `quantum-trader diff`) and equity.png. Live trading is never
    involved.
    """
    from rich.console import Console

    from streams.adapters.market_files import MarketFileError, TimeWindow, parse_time_bound
    from streams.adapters.replay import ReplayError
    from streams.brokers.embedded import BrokerError
    from streams.config import get_settings
    from streams.demo import SAMPLE_DATA, DemoPlan, run_demo, with_min_confidence
    from streams.kafka_io import KafkaIOError
    from streams.report import print_summary
    from streams.workers import WorkerError  # DemoError is one

    console = Console()
    try:
        settings = get_settings()
        if min_confidence is not None:
            settings = with_min_confidence(settings, min_confidence)
        plan = DemoPlan(
            data=data or SAMPLE_DATA,
            symbols=tuple(s.strip().upper() for s in symbols.split(",") if s.strip()),
            window=TimeWindow(
                parse_time_bound(start) if start else None, parse_time_bound(end) if end else None
            ),
            run_dir=out,
            timeout_s=timeout,
            workers=workers,
        )
        board = None
        if dashboard:
            from streams.commands.dashboard import DemoDashboard

            board = DemoDashboard(
                settings, settings.dashboard_host, settings.dashboard_port, console.print
            )
            plan = replace(plan, on_live=board.watch)
        if settings.mode == "testnet":
            plan = testnet_plan(settings, plan, console)
        result = run_demo(settings, plan, console)
    except (
        WorkerError,
        BrokerError,
        KafkaIOError,
        ReplayError,
        MarketFileError,
        ValueError,
    ) as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        raise typer.Exit(code=1) from exc
    print_summary(result.report, result.run_dir)
    if board is not None:
        board.show_run(result.run_dir)
        console.print(f"dashboard of {result.run_dir} on {board.url}/ (Ctrl-C stops it)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            board.close()


def testnet_plan(settings: Any, plan: Any, console: Any) -> Any:
    """The plan with the testnet venue's gateway beside the worker, against a local fake
    exchange on the same recorded klines (no machine here reaches Binance; for the real testnet
    run ``quantum-trader worker`` and ``quantum-trader venue``: README)."""
    import dataclasses

    from streams.adapters.venues.binance.background import BackgroundVenue, fake_exchange_for

    fake = fake_exchange_for(settings, plan.data, plan.symbols, plan.window.start_ms)
    console.print(
        f"[bold]venue[/] testnet against the local fake exchange ({len(fake.klines)} symbols)"
    )

    def venue(bootstrap: str, run_settings: Any) -> BackgroundVenue:
        return BackgroundVenue(run_settings, bootstrap, fake)

    return dataclasses.replace(plan, venue=venue)
