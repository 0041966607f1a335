"""`quantum-trader replay`: recorded market files or a recorded topic range into the topology."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from streams.adapters.market_files import TimeWindow
    from streams.adapters.replay.files import ReplaySummary
    from streams.adapters.replay.topic import TopicReplaySummary


def command(
    data: Annotated[
        Path | None,
        typer.Option(help="data-set folder (one CSV(.gz) per symbol) or a single market file"),
    ] = None,
    topic: Annotated[
        str | None,
        typer.Option(help="replay a recorded topic instead (broker-side name, as recorded)"),
    ] = None,
    symbols: Annotated[
        str, typer.Option(help="comma-separated symbols to replay (default: every file)")
    ] = "",
    start: Annotated[
        str | None,
        typer.Option(help="first event time, inclusive: ISO date/time (UTC if naive) or epoch ms"),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(help="end event time, exclusive: ISO date/time (UTC if naive) or epoch ms"),
    ] = None,
    speed: Annotated[
        str, typer.Option(help="'max' = as fast as possible, or N = N x real time (event time)")
    ] = "max",
    into: Annotated[
        str | None, typer.Option(help="topic replay: topic prefix of the target app (run42.)")
    ] = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default QT_KAFKA_BOOTSTRAP)")
    ] = None,
    prefix: Annotated[
        str | None, typer.Option(help="topic prefix to write under (default QT_TOPIC_PREFIX)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="validate files only: print the dead-letter summary, no broker")
    ] = False,
    idempotence: Annotated[
        bool, typer.Option(help="idempotent producer (turn off for the embedded Tansu broker)")
    ] = True,
    end_of_stream: Annotated[
        bool,
        typer.Option(
            help="topic replay of market.ticks: end the copy with the end-of-stream watermark, "
            "so a bounded replay drains the topology (--no-end-of-stream to append more later)"
        ),
    ] = True,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Replay recorded market data (--data) or a recorded topic range (--topic).

    Files: every valid row goes to <prefix>market.ticks (key = symbol, timestamp = event time),
    merged across symbols in event-time order; every invalid row (unparsable, NaN, price <= 0,
    high < low, duplicate or out-of-order time, ...) goes to <prefix>deadletter with its reason,
    file and line, and the replay goes on.

    Topic: copies the records of --topic whose record timestamp lies in [--start, --end) into
    <--into or prefix><topic>, key, value, headers and timestamps unchanged. A copy of
    market.ticks can drive the topology: it is written in event-time order with watermarks of
    its own (the source run's are dropped) and ends with the end-of-stream watermark, so a
    worker on the target prefix processes the range and drains.

    Examples:

    quantum-trader replay --data ../shared/data/binance/um_futures_1m_2025
    --symbols BTCUSDT,ETHUSDT --start 2025-05-05 --end 2025-05-06

    quantum-trader replay --data trades_spot/BTCUSDT.csv.gz --speed 10 --prefix run42.

    quantum-trader replay --data um_futures_1m_2025 --dry-run

    quantum-trader replay --topic market.ticks --start 2025-05-05T12:00
    --end 2025-05-05T13:00 --into run42.
    """
    from rich.console import Console

    from streams.adapters.market_files import MarketFileError
    from streams.adapters.replay import ReplayError
    from streams.contracts.errors import ContractsError
    from streams.kafka_io import KafkaIOError

    console = Console(stderr=True)
    try:
        if (data is None) == (topic is None):
            raise typer.BadParameter("give exactly one of --data PATH or --topic NAME")
        if data is not None:
            _replay_data(data, symbols, start, end, speed, bootstrap, prefix, dry_run,
                         idempotence, progress, console)  # fmt: skip
        elif topic is not None:
            _replay_topic(topic, start, end, into, bootstrap, prefix, idempotence,
                          end_of_stream, console)  # fmt: skip
    except (MarketFileError, ReplayError, KafkaIOError, ContractsError) as exc:
        console.print(f"[red]replay failed:[/red] {exc}")
        raise typer.Exit(code=1) from None


def _resolve(bootstrap: str | None, prefix: str | None) -> tuple[str | None, str]:
    """Bootstrap and prefix: the options, else the settings."""
    from streams.config import get_settings

    try:
        settings = get_settings()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    chosen_prefix = settings.topic_prefix if prefix is None else prefix
    return bootstrap or settings.kafka_bootstrap, chosen_prefix


def _need_bootstrap(bootstrap: str | None) -> str:
    if bootstrap is None:
        from streams.kafka_io import BrokerUnreachableError

        raise BrokerUnreachableError(
            "no broker configured: pass --bootstrap HOST:PORT or set QT_KAFKA_BOOTSTRAP "
            "(`make kafka` starts one on 127.0.0.1:19092); --dry-run needs none"
        )
    return bootstrap


def _replay_data(
    data: Path,
    symbols: str,
    start: str | None,
    end: str | None,
    speed: str,
    bootstrap: str | None,
    prefix: str | None,
    dry_run: bool,
    idempotence: bool,
    progress: bool,
    console: Console,
) -> None:
    from streams.adapters.replay.files import parse_speed, replay_files
    from streams.config import get_settings
    from streams.kafka_io import ProducerOptions

    window = _window(start, end)
    chosen, chosen_prefix = _resolve(bootstrap, prefix)
    target = None if dry_run else _need_bootstrap(chosen)
    settings = get_settings()
    summary = replay_files(
        data,
        bootstrap=target,
        prefix=chosen_prefix,
        symbols=[s.strip() for s in symbols.split(",") if s.strip()],
        window=window,
        speed=parse_speed(speed),
        options=None if target is None else ProducerOptions(target, idempotence=idempotence),
        partitions=settings.partitions,
        replication=settings.replication_factor,
        console=console,
        show_progress=progress,
    )
    _print_file_summary(summary, chosen_prefix, console)


def _replay_topic(
    topic: str,
    start: str | None,
    end: str | None,
    into: str | None,
    bootstrap: str | None,
    prefix: str | None,
    idempotence: bool,
    end_of_stream: bool,
    console: Console,
) -> None:
    from streams.adapters.replay.topic import carries_watermarks, replay_topic, target_topic_for
    from streams.config import get_settings
    from streams.kafka_io import ProducerOptions

    window = _window(start, end)
    chosen, chosen_prefix = _resolve(bootstrap, prefix)
    target_bootstrap = _need_bootstrap(chosen)
    target = target_topic_for(topic, into, chosen_prefix)
    summary = replay_topic(
        topic,
        target,
        window,
        bootstrap=target_bootstrap,
        options=ProducerOptions(target_bootstrap, idempotence=idempotence),
        replication=get_settings().replication_factor,
        end_of_stream=end_of_stream and carries_watermarks(target),
    )
    _print_topic_summary(summary, console)


def _window(start: str | None, end: str | None) -> TimeWindow:
    from streams.adapters.market_files import TimeWindow, parse_time_bound

    return TimeWindow(
        None if start is None else parse_time_bound(start),
        None if end is None else parse_time_bound(end),
    )


def _time_range(first: int | None, last: int | None) -> str:
    from streams.adapters.market_files import format_epoch_ms

    if first is None or last is None:
        return "-"
    return f"{format_epoch_ms(first)} .. {format_epoch_ms(last)} UTC"


def _print_file_summary(summary: ReplaySummary, prefix: str, console: Console) -> None:
    from rich.table import Table

    table = Table(title="dry run: nothing sent" if summary.dry_run else "replay summary")
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("rows read", f"{summary.rows_read:,}")
    table.add_row("valid ticks", f"{summary.ticks:,}")
    if not summary.dry_run:
        table.add_row(f"produced to {prefix}market.ticks", f"{summary.produced:,}")
    table.add_row("dead letters", f"{summary.dead_letters:,}")
    for reason, count in sorted(summary.dead_lettered.items()):
        table.add_row(f"  {reason}", f"{count:,}")
    table.add_row("symbols", ", ".join(sorted(summary.ticks_by_symbol)) or "-")
    table.add_row("event time", _time_range(summary.first_event_ms, summary.last_event_ms))
    console.print(table)


def _print_topic_summary(summary: TopicReplaySummary, console: Console) -> None:
    scanned = sum(summary.scanned.values())
    console.print(
        f"copied {summary.total_copied:,} of {scanned:,} scanned records "
        f"{summary.source} -> {summary.target}; "
        f"timestamps {_time_range(summary.first_timestamp_ms, summary.last_timestamp_ms)}"
    )
    if summary.watermarks_sent:
        ending = ", ending with the end-of-stream watermark" if summary.end_of_stream else ""
        console.print(f"wrote {summary.watermarks_sent:,} watermark records{ending}")
    else:
        console.print("no watermarks written: only a market.ticks copy can drive the topology")
    if summary.late_records:
        console.print(
            f"{summary.late_records:,} copied records were behind their partition's time "
            "(kept in their partition's recorded order)"
        )
