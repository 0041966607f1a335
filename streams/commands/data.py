"""`quantum-trader data download`: Binance 1-minute klines over REST into the project's files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Market data sets: download Binance klines into the CSV(.gz) layout replays read.",
    no_args_is_help=True,
)


@app.command("download")
def download(
    start: Annotated[str, typer.Option(help="first kline, inclusive: ISO date/time (UTC) or ms")],
    symbols: Annotated[str, typer.Option(help="comma-separated symbols (default QT_SYMBOLS)")] = "",
    end: Annotated[
        str | None,
        typer.Option(help="end, exclusive (default: the exchange's current minute)"),
    ] = None,
    market: Annotated[str, typer.Option(help="futures (USD-M, default) or spot")] = "futures",
    out: Annotated[
        Path | None,
        typer.Option(
            help="folder, one file per symbol (default <QT_DATA_DIR>/binance/<market>_1m)"
        ),
    ] = None,
    gzip: Annotated[bool, typer.Option(help="write .csv.gz (default) or plain .csv")] = True,
) -> None:
    """Download closed 1-minute klines from Binance's REST endpoint (/fapi/v1/klines, spot
    /api/v3/klines) into one <SYMBOL>.csv.gz per symbol, header
    open_time_ms,open,high,low,close,volume: the layout of data/sample, so `replay --data`,
    `backtest --data` and `models train` read the folder as they read the bundled data.

    Paged, within the request weight (QT_LIVE__REST_WEIGHT_BUDGET), 429/418 Retry-After
    waited out, network failures retried with backoff; endpoints from
    QT_LIVE__FUTURES_REST_URL / QT_LIVE__SPOT_REST_URL.

    Run it again to resume: each file continues after its last kline. Minutes the exchange
    has no kline for are counted, never filled.

    Example:

    quantum-trader data download --symbols BTCUSDT,ETHUSDT --start 2025-05-01 --end 2025-05-08
    """
    import asyncio

    from rich.console import Console

    from streams.adapters.live.rest import RestError
    from streams.adapters.live.run import symbols_of
    from streams.adapters.market_files import MarketFileError, parse_time_bound
    from streams.config import get_settings

    console = Console(stderr=True)
    if market not in ("futures", "spot"):
        raise typer.BadParameter(f"--market must be futures or spot, not {market!r}")
    try:
        settings = get_settings()
        live = settings.live.model_copy(update={"market": market})
        folder = out or settings.data_dir / "binance" / f"{market}_1m"
        plan = (
            symbols_of(symbols, settings.symbols), parse_time_bound(start),
            parse_time_bound(end) if end else None,
        )  # fmt: skip
        results = asyncio.run(_download(live, folder, gzip, *plan, console))
    except (RestError, MarketFileError, ValueError, OSError) as exc:
        console.print(f"[red]download failed:[/] {exc}")
        raise typer.Exit(code=1) from exc
    for r in results:
        resumed = "" if r.resumed_after_ms is None else " (resumed)"
        console.print(f"{r.path}: {r.written:,} klines written{resumed}, {r.missing:,} missing")


async def _download(
    live: Any,
    folder: Path,
    compress: bool,
    symbols: tuple[str, ...],
    start_ms: int,
    end_ms: int | None,
    console: Any,
) -> list[Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from streams.adapters.live.download import (
        download_symbol,
        exchange_minute,
        file_for,
        last_open_time,
    )
    from streams.adapters.live.rest import binance_client
    from streams.adapters.live.run import rest_client

    client = binance_client(live.market, live.rest_url, live.rest_timeout_s)
    try:
        rest = rest_client(client, live)
        now = await exchange_minute(rest)
        stop = now if end_ms is None else min(end_ms, now)
        results = []
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("minutes"), TimeRemainingColumn())  # fmt: skip
        with Progress(*columns, console=console) as progress:
            for symbol in symbols:
                path = file_for(folder, symbol, compress)
                last = last_open_time(path)
                begin = start_ms if last is None else max(start_ms, last + 60_000)
                task = progress.add_task(symbol, total=max(0, (stop - begin) // 60_000))
                advance = lambda n, task=task: progress.advance(task, n)  # noqa: E731
                results.append(await download_symbol(rest, symbol, start_ms, stop, path, advance))
        return results
    finally:
        await client.close_connection()
