"""`quantum-trader journal`: every business record of the topology into PostgreSQL."""

from __future__ import annotations

from typing import Annotated

import typer


def command(
    dsn: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL DSN, e.g. postgresql://quantum:***@127.0.0.1:5432/quantum_trader "
            "(default: the QT_JOURNAL_DSN environment variable)",
            envvar="QT_JOURNAL_DSN",
            show_envvar=False,
        ),
    ] = None,
    schema: Annotated[str, typer.Option(help="database schema of the journal tables")] = "public",
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default QT_KAFKA_BOOTSTRAP)")
    ] = None,
    prefix: Annotated[
        str | None, typer.Option(help="topic prefix to journal (default QT_TOPIC_PREFIX)")
    ] = None,
    group: Annotated[
        str | None, typer.Option(help="consumer group (default <prefix>journal)")
    ] = None,
    until_end: Annotated[
        bool, typer.Option(help="journal the topics up to their current end, then exit")
    ] = False,
    migrate_only: Annotated[
        bool, typer.Option(help="apply the pending migrations and exit")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="rows per database transaction")] = 5_000,
    trade_sample_every: Annotated[
        int, typer.Option(help="keep raw trade ticks with trade_id % N == 0 (0 = none)")
    ] = 100,
) -> None:
    """Journal the business topics into PostgreSQL (TimescaleDB hypertables when available).

    Idempotent (natural keys, ON CONFLICT DO NOTHING) and committed with the offsets: a batch
    is written in one transaction and only then are its Kafka offsets committed; a database
    failure commits nothing and is retried. Ctrl-C / SIGTERM stops after the current batch.
    """
    import signal

    from rich.console import Console

    from streams.adapters.journal import JournalError
    from streams.adapters.journal.migrations import migrate_dsn
    from streams.adapters.journal.sink import JournalOptions, journal_forever, journal_run
    from streams.config import get_settings

    console = Console()
    if not dsn:
        console.print("[red]journal:[/] no database: pass --dsn or set QT_JOURNAL_DSN")
        raise typer.Exit(code=2)
    try:
        settings = get_settings()
        opts = JournalOptions(
            schema=schema, batch_size=batch_size, trade_sample_every=trade_sample_every,
            max_attempts=5 if until_end else None,
        )  # fmt: skip
        if migrate_only:
            report = migrate_dsn(dsn, schema)
            kind = "TimescaleDB hypertables" if report.timescale else "plain tables"
            console.print(f"migrations applied: {list(report.applied) or 'none'} ({kind})")
            return
        servers = bootstrap or settings.kafka_bootstrap
        if not servers:
            console.print("[red]journal:[/] no broker: pass --bootstrap or set QT_KAFKA_BOOTSTRAP")
            raise typer.Exit(code=2)
        topic_prefix = settings.topic_prefix if prefix is None else prefix
        if until_end:
            stats = journal_run(servers, topic_prefix, dsn, group=group, options=opts)
        else:
            stopping: list[int] = []
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda signum, _frame: stopping.append(signum))
            console.print(f"journaling '{topic_prefix}*' into schema {schema} (Ctrl-C stops)")
            stats = journal_forever(
                servers, topic_prefix, dsn, stop=lambda: bool(stopping), group=group, options=opts
            )
    except JournalError as exc:
        console.print(f"[red]journal failed:[/] {exc}")
        raise typer.Exit(code=1) from exc
    inserted = ", ".join(f"{t} {n}" for t, n in sorted(stats.inserted.items())) or "nothing"
    console.print(
        f"journaled {stats.records} records in {stats.batches} batches; new rows: {inserted}"
    )
