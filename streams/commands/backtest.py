"""`quantum-trader backtest`: recorded market files through the in-process topology."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def default_run_dir(runs_dir: Path, data: Path, symbols: str, start: str | None, end: str | None,
                    seed: int) -> Path:  # fmt: skip
    """A readable, deterministic folder name (no wall clock): data set, symbols, range, seed."""
    parts = [data.name.removesuffix(".csv.gz").removesuffix(".csv")]
    parts.append(symbols.replace(",", "+") or "all")
    parts.extend(p.replace(":", "") for p in (start, end) if p)
    parts.append(f"seed{seed}")
    return runs_dir / "-".join(parts)


def command(
    data: Annotated[Path, typer.Option(help="data-set folder (one CSV(.gz) per symbol) or a file")],
    symbols: Annotated[str, typer.Option(help="comma-separated symbols (default: all)")] = "",
    start: Annotated[
        str | None, typer.Option(help="first bar, inclusive: ISO date/time (UTC) or epoch ms")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="end, exclusive: ISO date/time (UTC) or epoch ms")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="run folder (default runs/<data>-<symbols>-<range>-seed<n>)")
    ] = None,
    registry: Annotated[
        Path | None, typer.Option(help="model registry (default QT_REGISTRY_DIR)")
    ] = None,
    partitions: Annotated[
        int | None, typer.Option(help="partitions to emulate (default QT_PARTITIONS)")
    ] = None,
    feedback_lag_ms: Annotated[
        int | None,
        typer.Option(help="trades/rewards reach decisions this much later (QT_FEEDBACK_LAG_MS)"),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="exploration seed (default QT_SEED)")] = None,
) -> None:
    """Backtest = the whole topology in-process over recorded files, no broker.

    Writes report.json, trades.csv, decisions.jsonl.gz (every signal, veto, size, risk verdict,
    order, fill and trade, for `quantum-trader diff`) and equity.png to the run folder and
    prints a summary.
    """
    from models.registry import RegistryError
    from models.scorer import EnsembleScorer, ScorerError
    from streams.adapters.market_files import MarketFileError, TimeWindow, parse_time_bound
    from streams.config import get_settings, run_configuration
    from streams.report import ReportBuilder, ReportError, print_summary, write_run
    from streams.runner import RunError, run
    from streams.stages import StageError

    settings = get_settings()
    overrides: dict[str, Any] = {}
    if feedback_lag_ms is not None:
        overrides["feedback_lag_ms"] = feedback_lag_ms
    if partitions is not None:
        overrides["partitions"] = partitions
    if seed is not None:
        overrides["seed"] = seed
    if registry is not None:  # the models' manifests too: drift reference, edge gate table
        overrides["registry_dir"] = registry
    settings = settings.model_copy(update=overrides)
    run_dir = out or default_run_dir(settings.runs_dir, data, symbols, start, end, settings.seed)
    wanted = tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
    try:
        window = TimeWindow(
            parse_time_bound(start) if start else None, parse_time_bound(end) if end else None
        )
        scorer = EnsembleScorer.from_registry(settings.registry_dir)
        builder = ReportBuilder(settings.risk.starting_equity_usd)
        stats = run(data, scorer, builder, settings, wanted, window)
        report = builder.build(
            model_versions=stats.model_versions,
            elapsed_s=stats.elapsed_s,
            bars=stats.bars,
            latency_ns=stats.latency_ns,
            extra={
                "config": run_configuration(settings),
                "data_path": str(data),
                "open_positions_at_end": stats.open_positions_at_end,
            },
        )
        write_run(run_dir, report, builder.trades, builder.decisions)
    except (MarketFileError, RunError, ScorerError, RegistryError, StageError, ReportError) as exc:
        typer.secho(f"backtest failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    print_summary(report, run_dir)
