"""`quantum-trader report RUN_DIR`: re-render a run folder and print its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    run_dir: Annotated[Path, typer.Argument(help="run folder written by `backtest`")],
) -> None:
    """Re-render equity.png from report.json + trades.csv (checking the trade hash), summarise."""
    from streams.report import ReportError, print_summary, render_report

    try:
        report = render_report(run_dir)
    except ReportError as exc:
        typer.secho(f"report failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    print_summary(report, run_dir)
