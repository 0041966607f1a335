"""`quantum-trader diff RUN_A RUN_B`: two runs compared decision by decision (a CI gate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from streams.decisions import RunLog
    from streams.vocabulary import DecisionKind

#: Exit codes: the runs agree, they differ, the comparison could not be made.
SAME, DIFFERENT, UNUSABLE = 0, 1, 2
KAFKA_SCHEME = "kafka:"


def command(
    run_a: Annotated[str, typer.Argument(help="run folder, or topic prefix (kafka:PREFIX)")],
    run_b: Annotated[str, typer.Argument(help="run folder, or topic prefix (kafka:PREFIX)")],
    bootstrap: Annotated[
        str | None,
        typer.Option(help="broker of topic prefixes (default QT_KAFKA_BOOTSTRAP)"),
    ] = None,
    steps: Annotated[
        str,
        typer.Option(
            "--steps",
            help="comma-separated steps to compare: signal, veto, size, verdict, order, fill, "
            "trade (default: all)",
        ),
    ] = "",
    limit: Annotated[int, typer.Option(help="divergences to list after the first")] = 10,
    start: Annotated[
        str | None,
        typer.Option(help="compare only steps at or after this event time (ISO UTC or epoch ms)"),
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="compare only steps before this event time")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON report instead")] = False,
) -> None:
    """Compare two runs decision by decision; exit 1 when they differ (a CI gate).

    Each run is a run folder (written by `demo` or `backtest`: its decisions.jsonl.gz) or the
    topics of a run on a broker: `kafka:demo-1a2b3c4d.` (a prefix; `kafka:` alone is the
    unprefixed topology), or a bare prefix that is no folder when a broker is configured.
    Signals, vetoes, sizes, risk verdicts, orders, fills and closed trades are aligned by
    their deterministic ids and compared exactly. Prints the first divergence with both
    sides' values and trace ids, a count per step, closed trades and PnL of both sides, and
    the settings the two runs' report.json disagree on.

    Exit codes: 0 identical, 1 different, 2 the runs could not be read.

    Examples:

    quantum-trader diff runs/demo-1a2b3c4d runs/backtest-seed7

    quantum-trader diff kafka:demo-1a2b3c4d. kafka:incident-42. --bootstrap 127.0.0.1:19092

    quantum-trader diff runs/a runs/b --steps trade,fill --json

    quantum-trader diff kafka:demo-1a2b3c4d. runs/incident-5e6f --start 2025-05-21T12:00
    --end 2025-05-21T13:00   (a recorded run's range against its incident replay)
    """
    from streams.decisions import DecisionLogError
    from streams.kafka_io import KafkaIOError
    from streams.run_diff import diff_runs, render_text, to_json

    try:
        kinds = parse_steps(steps)
        a, b = load_side(run_a, bootstrap), load_side(run_b, bootstrap)
        a, b, notes = comparable(within(a, start, end), within(b, start, end))
    except (DecisionLogError, KafkaIOError) as exc:
        typer.secho(f"diff failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(UNUSABLE) from None
    if notes:  # one side has closed trades only
        kinds = [k for k in kinds if k.value == "trade"]
    traces = {s: str(r.trace_file) for s, r in (("A", a), ("B", b)) if r.trace_file is not None}
    diff = diff_runs(
        a.label, a.rows, b.label, b.rows, kinds=kinds, a_config=a.config, b_config=b.config,
        notes=notes, trace_files=traces,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(to_json(diff, max(limit, 1)), indent=2))
    else:
        typer.echo(render_text(diff, limit), nl=False)
    raise typer.Exit(SAME if diff.identical else DIFFERENT)


def parse_steps(text: str) -> list[DecisionKind]:
    """``signal,fill`` -> the steps; empty -> all; an unknown name is a usage error."""
    from streams.vocabulary import DecisionKind

    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    known = {k.value: k for k in DecisionKind}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise typer.BadParameter(
            f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(known)}",
            param_hint="--steps",
        )
    return [known[n] for n in names] if names else list(DecisionKind)


def load_side(spec: str, bootstrap: str | None) -> RunLog:
    """A run folder, or a topic prefix (``kafka:PREFIX``, or a bare one with a broker)."""
    from streams.decisions import DecisionLogError, load_run_folder, read_topic_prefix

    if spec.startswith(KAFKA_SCHEME):
        return read_topic_prefix(_broker(bootstrap, spec), spec.removeprefix(KAFKA_SCHEME))
    path = Path(spec)
    if path.is_dir():
        return load_run_folder(path)
    chosen = bootstrap or _configured_broker()
    if chosen is None:
        raise DecisionLogError(
            f"{spec!r} is no run folder; to compare the topics of a run on a broker, write "
            f"kafka:{spec} and pass --bootstrap HOST:PORT (or set QT_KAFKA_BOOTSTRAP)"
        )
    return read_topic_prefix(chosen, spec)


def within(log: RunLog, start: str | None, end: str | None) -> RunLog:
    """``log`` with only the steps whose event time lies in ``[start, end)``."""
    from dataclasses import replace

    from streams.adapters.market_files import MarketFileError, TimeWindow, parse_time_bound

    if start is None and end is None:
        return log
    try:
        window = TimeWindow(
            None if start is None else parse_time_bound(start),
            None if end is None else parse_time_bound(end),
        )
    except MarketFileError as exc:
        raise typer.BadParameter(str(exc)) from None
    return replace(log, rows=[r for r in log.rows if window.contains(r.event_time_ms)])


def comparable(a: RunLog, b: RunLog) -> tuple[RunLog, RunLog, list[str]]:
    """Both sides as comparable logs: when one has closed trades only (an older run folder),
    both are compared on their closed trades, in the form ``trades.csv`` writes them."""
    from dataclasses import replace

    from streams.decisions import trade_row_as_csv
    from streams.vocabulary import DecisionKind

    if a.complete and b.complete:
        return a, b, []
    older = ", ".join(r.label for r in (a, b) if not r.complete)
    note = f"{older} has no decision log (an older run folder): closed trades compared only"

    def trades_only(log: RunLog) -> RunLog:
        if not log.complete:
            return log
        rows = [trade_row_as_csv(r) for r in log.rows if r.kind is DecisionKind.TRADE]
        return replace(log, rows=rows, complete=False)

    return trades_only(a), trades_only(b), [note]


def _broker(bootstrap: str | None, spec: str) -> str:
    from streams.decisions import DecisionLogError

    chosen = bootstrap or _configured_broker()
    if chosen is None:
        raise DecisionLogError(
            f"{spec}: reading topics needs a broker: pass --bootstrap HOST:PORT or set "
            "QT_KAFKA_BOOTSTRAP"
        )
    return chosen


def _configured_broker() -> str | None:
    from streams.config import get_settings

    try:
        return get_settings().kafka_bootstrap or None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
