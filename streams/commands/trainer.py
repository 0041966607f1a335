"""`quantum-trader trainer`: the retraining worker (schedule and drift -> candidates -> gate)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from streams.trainer.retrain import RetrainOutcome


def command(
    once: Annotated[
        bool,
        typer.Option(
            help="read the topics to their end, retrain once (the newest due trigger, else now "
            "in event time) and exit"
        ),
    ] = False,
    models: Annotated[
        str | None,
        typer.Option(help="comma list of models to retrain (default QT_TRAINER__MODELS: all four)"),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="train on these kline files (one <SYMBOL>.csv.gz each) instead of the ticks "
            "read from market.ticks; the schedule and drift still come from the topics"
        ),
    ] = None,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default QT_KAFKA_BOOTSTRAP)")
    ] = None,
    prefix: Annotated[
        str | None, typer.Option(help="topic prefix to read and write (default QT_TOPIC_PREFIX)")
    ] = None,
    registry: Annotated[
        Path | None, typer.Option(help="registry folder (default QT_REGISTRY_DIR)")
    ] = None,
) -> None:
    """Retrain the models as a worker, beside the topology (needs the train extra).

    Reads <prefix>market.ticks and <prefix>models.events. It retrains (a) when the ticks' event
    time crosses a multiple of QT_TRAINER__SCHEDULE_MS (daily by default; never the wall clock)
    and (b) on a DRIFT_DETECTED record, at most once per QT_TRAINER__DRIFT_COOLDOWN_MS of drift.
    A retrain trains the models walk-forward on the last QT_TRAINER__LOOKBACK_DAYS of ticks,
    exports and parity-checks them and registers them as candidates (never served), writes
    their gate table (measured on their folds) into their manifests and records SHADOW_STARTED:
    the topology's shadow stage then scores them beside the promoted champion on the stream
    (signals.shadow) and its promotion stage records PROMOTED (every worker hot-swaps) or
    PROMOTION_REFUSED with the numbers after QT_PROMOTION__MIN_DECISIONS would-be decisions
    (or QT_PROMOTION__MAX_SHADOW_MS of event time). With QT_PROMOTION__SHADOW=held_back the
    trainer decides at once instead, on the candidates' held-back block. Every id derives from
    the trigger, so a restarted trainer does not retrain the same one.

    Examples:

    quantum-trader trainer                       # run beside the topology
    quantum-trader trainer --once --models xgboost,lightgbm
    """
    from rich.console import Console

    from models.catalog import model_module
    from models.fitting import TrainingError
    from streams.config import get_settings
    from streams.trainer.loop import Trainer, TrainerError
    from streams.trainer.retrain import RETRAIN_ERRORS, RetrainPlan

    console = Console()
    settings = get_settings()
    cfg = settings.trainer
    chosen = tuple(m.strip() for m in (models or ",".join(cfg.models)).split(",") if m.strip())
    try:
        for spec in chosen:  # fails now, not after the first retrain's data was read
            model_module(spec)
    except TrainingError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    server = bootstrap or settings.kafka_bootstrap
    if not server:
        console.print("[red]error:[/red] no broker: pass --bootstrap or set QT_KAFKA_BOOTSTRAP")
        raise typer.Exit(2)
    reg = registry or settings.registry_dir
    plan = RetrainPlan(
        registry=reg, work_dir=cfg.work_dir or settings.runs_dir / "trainer", models=chosen,
        lookback_days=cfg.lookback_days, folds=cfg.folds, seed=settings.seed,
    )  # fmt: skip
    topic_prefix = settings.topic_prefix if prefix is None else prefix
    console.print(
        f"trainer on {server} '{topic_prefix}': {', '.join(chosen)}, last {cfg.lookback_days:g} "
        f"days, schedule {cfg.schedule_ms / 3_600_000:g} h, drift cool-down "
        f"{cfg.drift_cooldown_ms / 3_600_000:g} h, registry {reg}"
    )
    trainer = Trainer(server, topic_prefix, settings, plan, data, console.print)
    try:
        outcomes = trainer.run(once=once)
    except (TrainerError, *RETRAIN_ERRORS) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        console.print("trainer stopped")
        return
    _summary(console, outcomes)


def _summary(console: Console, outcomes: list[RetrainOutcome]) -> None:
    """One table per retrain: trigger, candidates, the gate's verdict and numbers."""
    from rich.table import Table

    from streams.trainer.retrain import describe_outcome

    for outcome in outcomes:
        table = Table(show_header=False, title="retrain")
        for key, value in describe_outcome(outcome):
            table.add_row(key, value)
        console.print(table)
