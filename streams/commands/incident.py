"""`quantum-trader incident replay`: a recorded stretch run again with warm state."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Replay a recorded incident with every stage warm (docs/incident-replay.md).",
    no_args_is_help=True,
)


@app.command("replay")
def replay(
    source: Annotated[
        str, typer.Option("--from", help="the recorded run's topic prefix (demo-1a2b3c4d.)")
    ],
    start: Annotated[str, typer.Option(help="first event time: ISO (UTC if naive) or epoch ms")],
    end: Annotated[str, typer.Option(help="end event time, exclusive")],
    into: Annotated[
        str | None, typer.Option(help="fresh topic prefix of the replay (default incident-<id>.)")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="a setting changed for the replay: risk.max_leverage=10"),
    ] = None,
    model_versions: Annotated[
        list[str] | None,
        typer.Option("--model-version", help="a model version for the replay: xgboost=v1"),
    ] = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="the recorded run's broker (default QT_KAFKA_BOOTSTRAP)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/<into>)")] = None,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 1800.0,
) -> None:
    """Replay [--start, --end) of a recorded run with every stage as warm as it was then.

    Each stage's state at --start is rebuilt from the recorded run: its latest stored state
    document before the start (its state changelog), then its recorded inputs after that. The
    range's ticks are copied into a fresh prefix with watermarks and an end-of-stream marker, a
    worker runs the topology on it with the --set settings and --model-version versions, and
    the run folder is written. Compare it with the recorded run's range:

    quantum-trader diff kafka:demo-1a2b3c4d. runs/incident-5e6f --start T --end T

    Run it with the settings the run was recorded with (QT_* as then): the history before the
    start is rebuilt with them, and only the range runs with --set.

    Example:

    quantum-trader incident replay --from demo-1a2b3c4d. --start 2025-05-21T12:00
    --end 2025-05-21T13:00 --set risk.max_leverage=10
    """
    from rich.console import Console

    from streams.adapters.market_files import MarketFileError, TimeWindow, parse_time_bound
    from streams.adapters.replay import ReplayError
    from streams.agents.durable import StateFormatError
    from streams.config import get_settings, with_overrides
    from streams.demo import DemoError
    from streams.incident import IncidentError, IncidentPlan, run_incident
    from streams.kafka_io import KafkaIOError

    console = Console(stderr=True)
    try:
        recorded = get_settings()
        if bootstrap:
            recorded = recorded.model_copy(update={"kafka_bootstrap": bootstrap})
        versions = dict(recorded.model_versions)
        for item in model_versions or []:
            name, sep, version = item.partition("=")
            if not sep or not name.strip() or not version.strip():
                raise typer.BadParameter(
                    f"{item!r}: expected model=version", param_hint="--model-version"
                )
            versions[name.strip()] = version.strip()
        replay_settings = with_overrides(recorded, overrides or [])
        replay_settings = replay_settings.model_copy(update={"model_versions": versions})
        window = TimeWindow(parse_time_bound(start), parse_time_bound(end))
    except (ValueError, MarketFileError) as exc:
        raise typer.BadParameter(str(exc)) from None
    prefix = into or f"incident-{uuid.uuid4().hex[:8]}."
    run_dir = out or recorded.runs_dir / prefix.rstrip(".")
    plan = IncidentPlan(source, window, prefix, run_dir, timeout)
    try:
        result = run_incident(recorded, replay_settings, plan, console)
    except (IncidentError, DemoError, ReplayError, KafkaIOError, StateFormatError) as exc:
        console.print(f"[red]incident replay failed:[/red] {exc}")
        raise typer.Exit(code=1) from None
    counts = result.report.get("counts", {})
    console.print(
        f"[bold]replayed[/] {source} {start} .. {end} into {prefix}: "
        f"{counts.get('decisions', 0)} decision(s), "
        f"{counts.get('closed_trades', 0)} closed trade(s); "
        f"run folder {result.run_dir}"
    )
    console.print(
        f"compare: quantum-trader diff kafka:{source} {result.run_dir} --start {start} --end {end}"
    )
