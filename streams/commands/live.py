"""`quantum-trader live`: live Binance klines through the topology (paper venue)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer


def command(
    symbols: Annotated[
        str, typer.Option(help="comma-separated symbols (default QT_SYMBOLS, 10 perpetuals)")
    ] = "",
    market: Annotated[
        str, typer.Option(help="futures (USD-M perpetuals, default) or spot")
    ] = "futures",
    since: Annotated[
        str | None,
        typer.Option(
            help="first kline (ISO UTC or epoch ms) of symbols not yet in "
            "market.ticks; default: QT_LIVE__WARMUP_MINUTES before now"
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="stop before this kline open time, drain the topology and write a "
            "run report (default: run until Ctrl-C)"
        ),
    ] = None,
    universe: Annotated[
        int | None,
        typer.Option(
            help="trade the top N USD-M perpetuals by 24h quote volume (listing age and "
            "volatility floors: QT_LIVE__UNIVERSE__*); default QT_LIVE__UNIVERSE__SIZE, 0 = off"
        ),
    ] = None,
    join: Annotated[
        bool, typer.Option(help="only ingest: a topology already runs on these topics")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/live)")] = None,
) -> None:
    """Live Binance 1-minute klines into market.ticks, through the whole topology.

    Subscribes to the closed 1-minute klines of every symbol (combined streams, at most 200
    per connection, on Binance's routed /market path for USD-M futures) and produces each to
    <prefix>market.ticks exactly as `replay --data` would (key, partition, timestamp = kline
    open time, in-band watermarks; source binance-ws:<stream>). Orders go to the paper venue:
    live trading of real money is not offered.

    The connection never gives up: unlimited jittered backoff, an idle watchdog per stream,
    pings answered, a planned rotation before Binance's 24-hour cut. Gaps (a reconnect, a
    start, a lost message) are fetched over REST (/fapi/v1/klines, paged, request weight and
    Retry-After respected) and merged in order, deduplicated by (symbol, open time); klines
    the exchange really lacks are counted, not invented. A restart resumes each symbol after
    its newest kline already in market.ticks.

    Universe: --symbols, else with --universe N (or QT_LIVE__UNIVERSE__SIZE) the top N
    USD-M perpetuals by 24h quote volume that are TRADING, quoted in USDT, listed at least
    QT_LIVE__UNIVERSE__MIN_LISTING_DAYS and moved at least QT_LIVE__UNIVERSE__MIN_RANGE in
    24 hours (each symbol's verdict is printed at start), else QT_SYMBOLS. The universe is
    refreshed every QT_LIVE__UNIVERSE__REFRESH_MINUTES of exchange time; each join and leave
    is a record on <prefix>universe.events. A symbol that left gets no new entries from the
    risk stage; its stream stays for QT_LIVE__UNIVERSE__WIND_DOWN_MINUTES so open positions
    reach their exits, then it is unsubscribed. A joining symbol is subscribed on a running
    connection (no other stream drops) and starts cold (its feature windows fill live).

    Modes: default starts a Faust worker of the topology (and the embedded broker when
    QT_KAFKA_BOOTSTRAP is unset) and runs until Ctrl-C; --until ends the run at that time with
    the report a replay gives; --join only ingests into a running topology.
    Endpoints and timings: QT_LIVE__* (README, "Live market data").

    Examples:

    quantum-trader live --symbols BTCUSDT,ETHUSDT

    quantum-trader live --since 2025-05-05T00:00 --until 2025-05-05T02:00 --join
    """
    from rich.console import Console

    from streams.adapters.live import LiveError
    from streams.adapters.live.ingest import LiveSummary
    from streams.adapters.live.rest import RestError
    from streams.adapters.live.run import LivePlan, live_report, run_live, symbols_of
    from streams.adapters.market_files import MarketFileError, format_epoch_ms, parse_time_bound
    from streams.brokers.embedded import BrokerError
    from streams.config import get_settings
    from streams.kafka_io import KafkaIOError
    from streams.workers import WorkerError

    console = Console(stderr=True)
    if market not in ("futures", "spot"):
        raise typer.BadParameter(f"--market must be futures or spot, not {market!r}")
    chosen: Literal["futures", "spot"] = "futures" if market == "futures" else "spot"

    def progress(s: LiveSummary) -> None:
        at = format_epoch_ms(s.last_event_ms) if s.last_event_ms is not None else "-"
        console.print(
            f"[dim]{at}[/] {s.ticks:,} ticks, {s.backfilled:,} backfilled, "
            f"{s.sequencer.duplicates:,} duplicates, {s.sequencer.missing_total:,} missing, "
            f"{s.reconnects} reconnects"
        )

    try:
        settings = get_settings()
        live = settings.live.model_copy(update={"market": chosen})
        if universe is not None:
            live = live.model_copy(
                update={"universe": live.universe.model_copy(update={"size": universe})}
            )
        settings = settings.model_copy(update={"live": live})
        wanted = symbols_of(symbols, ())
        selection = chosen_universe(live, console) if not wanted and live.universe.size else None
        if selection is not None:
            wanted = selection.symbols
        plan = LivePlan(
            symbols=wanted or tuple(settings.symbols),
            since_ms=parse_time_bound(since) if since else None,
            until_ms=parse_time_bound(until) if until else None,
            join=join, run_dir=out, universe=selection,
        )  # fmt: skip
        summary, report = run_live(settings, plan, console, progress)
    except (
        LiveError,
        WorkerError,
        BrokerError,
        KafkaIOError,
        MarketFileError,
        RestError,
        ValueError,
    ) as exc:
        console.print(f"[red]live failed:[/] {exc}")
        raise typer.Exit(code=1) from exc
    console.print_json(data=live_report(summary))
    if report is not None:
        from streams.report import print_summary

        print_summary(report, out or settings.runs_dir / "live")


def chosen_universe(live: Any, console: Any) -> Any:
    """The universe the exchange's answers give now (a ``UniverseSelection``), every listed
    contract's verdict printed."""
    import asyncio

    from rich.table import Table

    from streams.adapters.live.run import select_universe_now

    selection = asyncio.run(select_universe_now(live))
    table = Table(title=f"universe: top {live.universe.size} by 24h quote volume")
    for column in ("symbol", "rank", "verdict", "24h quote volume", "24h range", "listed days"):
        table.add_column(column)
    for c in sorted(selection.candidates, key=lambda c: (c.rank is None, c.rank, c.symbol)):
        if c.verdict.value in ("NOT_PERPETUAL", "OTHER_QUOTE", "NOT_TRADING"):
            continue  # hundreds of them on Binance: not candidates at all
        days = "-" if c.listed_days is None else f"{c.listed_days:.0f}"
        table.add_row(c.symbol, str(c.rank or "-"), c.verdict.value, f"{c.quote_volume:,.0f}",
                      f"{c.range_ratio:.2%}", days)  # fmt: skip
    console.print(table)
    if not selection.symbols:
        raise ValueError("no symbol passes the universe rule (QT_LIVE__UNIVERSE__*)")
    return selection
