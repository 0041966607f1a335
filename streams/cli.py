"""The ``quantum-trader`` command.

Each sub-command lives in ``streams/commands/<name>.py`` and imports its heavy dependencies
inside the command body, so ``quantum-trader --help`` stays fast.
"""

from __future__ import annotations

import typer

from streams.commands import (
    backtest,
    broker,
    control,
    dashboard,
    data,
    demo,
    diff,
    incident,
    journal,
    live,
    models_cmd,
    replay,
    report,
    schemas,
    topology,
    trace,
    trainer,
    venue,
    worker,
)

app = typer.Typer(
    name="quantum-trader",
    help=(
        "Quantum Trader: an AI crypto-trading topology on Kafka (Faust).\n\n"
        "Start a broker, run workers, replay recorded market data or a recorded topic through "
        "the topology, check Avro contracts, and train/evaluate/promote the ONNX models."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command("broker")(broker.command)
app.command("worker")(worker.command)
app.command("replay")(replay.command)
app.command("demo")(demo.command)
app.command("dashboard")(dashboard.command)
app.command("backtest")(backtest.command)
app.command("live")(live.command)
app.command("report")(report.command)
app.command("diff")(diff.command)
app.command("journal")(journal.command)
app.command("trace")(trace.command)
app.command("topology")(topology.command)
app.command("venue")(venue.command)
app.command("trainer")(trainer.command)
app.command("halt")(control.halt)
app.command("resume")(control.resume)
app.add_typer(schemas.app, name="schemas")
app.add_typer(models_cmd.app, name="models")
app.add_typer(data.app, name="data")
app.add_typer(incident.app, name="incident")


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":
    main()
