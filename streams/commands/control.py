"""`quantum-trader halt|resume`: operator commands to the risk stage (the kill switch)."""

from __future__ import annotations

import getpass
import hashlib
import time
from typing import Annotated

import typer


def send_command(
    kind: str,
    reason: str,
    event_time_ms: int | None,
    symbol: str | None,
    bootstrap: str | None,
    prefix: str | None = None,
) -> str:
    """Produce one ``ControlCommand`` to ``control.commands``; returns its id.

    ``prefix``: the run's topic prefix (default ``QT_TOPIC_PREFIX``); the dashboard passes the
    prefix of the run it shows.
    """
    from streams import kafka_io
    from streams.config import get_settings
    from streams.contracts.codec import serializer_for
    from streams.contracts.records import CommandKind, ControlCommand
    from streams.topics import Topic, topic_name

    settings = get_settings()
    servers = bootstrap or settings.kafka_bootstrap
    if not servers:
        raise typer.BadParameter(
            "no broker: set QT_KAFKA_BOOTSTRAP or pass --bootstrap (the worker's broker)"
        )
    issued = int(time.time() * 1000)  # the operator's wall clock: when the command was issued
    at = issued if event_time_ms is None else event_time_ms
    command_id = hashlib.sha256(f"{kind}:{at}:{issued}:{reason}".encode()).hexdigest()[:24]
    record = ControlCommand(
        command_id=command_id,
        command=CommandKind(kind),
        event_time_ms=at,
        issued_at_ms=issued,
        issued_by=getpass.getuser(),
        reason=reason,
        symbol=symbol,
    )
    # No idempotence, as before: the worker's broker may be the embedded Tansu (bug TX).
    producer = kafka_io.producer(kafka_io.ProducerOptions(servers, idempotence=False))
    tracker = kafka_io.DeliveryTracker()
    kafka_io.produce(
        producer,
        topic_name(Topic.CONTROL_COMMANDS, settings.topic_prefix if prefix is None else prefix),
        command_id.encode(),
        serializer_for(Topic.CONTROL_COMMANDS)(record), partition=0, on_delivery=tracker,
    )  # fmt: skip
    try:
        kafka_io.flush(producer, tracker, timeout_s=15)
    except kafka_io.KafkaIOError as exc:
        raise typer.BadParameter(
            f"the broker at {servers} did not acknowledge the command: {exc}"
        ) from None
    return command_id


Reason = Annotated[str, typer.Option(help="why (kept in the journal and the risk state)")]
At = Annotated[
    int | None,
    typer.Option(help="event time (epoch ms) the command applies from; default now (live)"),
]
Bootstrap = Annotated[str | None, typer.Option(help="broker (default QT_KAFKA_BOOTSTRAP)")]


def halt(reason: Reason = "operator halt", at: At = None, bootstrap: Bootstrap = None) -> None:
    """Kill switch: the risk stage approves no new entry from the command's event time on.

    Open positions keep their exits (stop, take-profit, trailing). Replays apply the command at
    its event time, so a halt recorded in a topic replays identically.
    """
    typer.echo(f"HALT sent ({send_command('HALT', reason, at, None, bootstrap)})")


def resume(reason: Reason = "operator resume", at: At = None, bootstrap: Bootstrap = None) -> None:
    """Lift the kill switch: the risk stage evaluates new entries again."""
    typer.echo(f"RESUME sent ({send_command('RESUME', reason, at, None, bootstrap)})")
