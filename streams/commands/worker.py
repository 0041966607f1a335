"""`quantum-trader worker`: run a Faust worker of ``streams.app``."""

from __future__ import annotations

import typer


def command(
    loglevel: str = typer.Option("info", help="worker log level"),
    web_port: int | None = typer.Option(
        None, help="port of the worker's web server (health, metrics); default QT_WEB_PORT"
    ),
) -> None:
    """Run one Faust worker of the topology (``streams.app``).

    Connects to QT_KAFKA_BOOTSTRAP; when it is unset, starts the embedded broker on loopback
    first. Start several workers to spread the per-symbol stages over partitions.
    """
    from streams.app import run_worker

    run_worker(loglevel=loglevel, web_port=web_port)
