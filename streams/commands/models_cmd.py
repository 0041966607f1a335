"""`quantum-trader models`: train, evaluate, export, list and promote the ONNX models.

Heavy imports (numpy, the model modules, torch/xgboost/lightgbm) happen inside the command
bodies so ``quantum-trader --help`` stays fast. Errors of our own types are printed as one red
line with their context and exit code 1, not as tracebacks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from models.registry import Manifest

app = typer.Typer(
    help="Train (walk-forward), evaluate, export, list and promote the ONNX models.",
    no_args_is_help=True,
)

_DEFAULT_DATA = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "binance" / "um_futures_1m_2025"
)
_ALL_MODELS = "xgboost,lightgbm,nhits,patchtst"
_DEMO_SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT,XRPUSDT"

RegistryOpt = Annotated[
    Path | None, typer.Option(help="registry folder (default: QT_REGISTRY_DIR / models/registry)")
]


def _console() -> Console:
    from rich.console import Console

    return Console()


def _registry(path: Path | None) -> Path:
    if path is not None:
        return path
    from streams.config import get_settings

    return get_settings().registry_dir


def _csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


@contextmanager
def _our_errors() -> Iterator[None]:
    """Print project errors (registry, parity, dataset, training, scorer) as one line, exit 1."""
    from models.dataset import DatasetError
    from models.fitting import TrainingError
    from models.parity import ExportError, ParityError
    from models.registry import RegistryError
    from models.scorer import ScorerError

    try:
        yield
    except (
        RegistryError,
        ParityError,
        ExportError,
        DatasetError,
        TrainingError,
        ScorerError,
    ) as exc:
        _console().print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="kline folder (one <SYMBOL>.csv.gz each)")] = (
        _DEFAULT_DATA
    ),
    models: Annotated[
        str, typer.Option(help="comma list; 'nhits@large' trains a module's LARGE_CONFIG")
    ] = _ALL_MODELS,
    symbols: Annotated[str, typer.Option(help="comma list (default: every file)")] = "",
    start: Annotated[str | None, typer.Option(help="first row time, ISO UTC")] = None,
    train_end: Annotated[
        str, typer.Option(help="exclusive end, ISO UTC; the evaluation window starts here")
    ] = "2025-05-21T00:00",
    seed: Annotated[int, typer.Option(help="seed for every model")] = 7,
    version: Annotated[
        str | None, typer.Option(help="version name (default: next free v<N>)")
    ] = None,
    folds: Annotated[int, typer.Option(help="walk-forward folds (0 = skip)")] = 3,
    holdout_fraction: Annotated[float, typer.Option(help="held-back tail of the period")] = 0.12,
    stride: Annotated[int, typer.Option(help="use every N-th development row for fitting")] = 2,
    horizon: Annotated[int, typer.Option(help="label horizon, bars")] = 15,
    fee_rate: Annotated[float, typer.Option(help="fee per side")] = 0.0004,
    dead_zone: Annotated[float | None, typer.Option(help="dead zone beyond fees")] = None,
    promote: Annotated[
        bool,
        typer.Option(
            help="promote the new versions if they pass the promotion gate (shadow "
            "scoring against the champion, models/promotion.py)"
        ),
    ] = True,
    overwrite: Annotated[bool, typer.Option(help="replace an existing version")] = False,
    keep_native: Annotated[
        bool, typer.Option(help="store the native model too (for `models export`)")
    ] = True,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="config override MODEL:key=value, dotted for nested (nhits:train.epochs=6)",
        ),
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """Walk-forward train the models, export ONNX, check parity, register (and promote).

    Variants (``nhits@large``) are registered as ``nhits-large`` for comparison, not promoted.
    """
    from models.registry import next_version
    from models.train import TrainPlan, run

    reg = _registry(registry)
    label: dict[str, Any] = {"horizon_bars": horizon, "fee_rate": fee_rate}
    if dead_zone is not None:
        label["dead_zone"] = dead_zone
    plan = TrainPlan(
        data_dir=data,
        registry=reg,
        version=version or next_version(reg),
        models=_csv(models),
        symbols=_csv(symbols) or None,
        start=start,
        end=train_end,
        seed=seed,
        n_folds=folds,
        holdout_fraction=holdout_fraction,
        train_stride=stride,
        promote=False,  # the promotion gate decides, after every model is registered
        overwrite=overwrite,
        keep_native=keep_native,
        label=label,
        config_overrides=_overrides(set_ or []),
    )
    console = _console()
    console.print(f"training {', '.join(plan.models)} as {plan.version} on {data} < {train_end}")
    with _our_errors():
        outcomes = run(plan, log=console.print)
        if promote:
            trained = {o.name: o.version for o in outcomes if "-" not in o.name}
            _gate_and_promote(reg, trained)


def _gate_and_promote(reg: Path, trained: dict[str, str]) -> None:
    """Shadow-score the candidate set against the champion; promote it only if the gate says so."""
    from models.promotion import EVENTS_FILE, gate_and_promote
    from models.registry import read_index
    from streams.config import get_settings

    settings = get_settings()
    console = _console()
    candidate = {**read_index(reg), **trained}
    decision, events = gate_and_promote(reg, candidate, settings, Path("runs/edge"),
                                        log=console.print)  # fmt: skip
    _publish(events)
    console.print(decision.detail())
    path = reg / EVENTS_FILE
    if decision.promote:
        console.print(f"promoted {trained}; events in {path}")
    else:
        console.print(f"[yellow]not promoted[/yellow]; the champion stays; events in {path}")


def _publish(events: list[Any]) -> None:
    """Produce the events to ``models.events`` when a broker is configured."""
    from streams.config import get_settings
    from streams.trainer.publish import publish_model_events

    settings = get_settings()
    if settings.kafka_bootstrap:
        publish_model_events(settings.kafka_bootstrap, settings.topic_prefix, events)


@app.command()
def shadow(
    candidate: Annotated[str, typer.Argument(help="model=version list, e.g. xgboost=v3")],
    registry: RegistryOpt = None,
    promote: Annotated[bool, typer.Option(help="promote when the gate passes")] = False,
) -> None:
    """Shadow-score a candidate set (the champion with these versions swapped in) against the
    promoted one on the candidate's held-back block and print the promotion gate's decision."""
    from models.promotion import decision_events, shadow_compare
    from models.registry import read_index
    from streams.config import get_settings

    reg = _registry(registry)
    swapped = dict(item.split("=", 1) for item in _csv(candidate))
    with _our_errors():
        if promote:
            _gate_and_promote(reg, swapped)
            return
        settings = get_settings()
        champion = read_index(reg)
        decision, at, _gate = shadow_compare(
            reg, {**champion, **swapped}, champion, settings.ensemble_weights,
            settings.promotion, settings.supervisor.bias_threshold, Path("runs/edge"),
            _console().print,
        )  # fmt: skip
    _console().print(decision.detail())
    for e in decision_events(decision, at):
        _console().print(f"{e.kind.value} {e.model}@{e.version} {e.metric_name}={e.metric:+.6f}")


def _overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["nhits:train.epochs=6"]`` -> ``{"nhits": {"train.epochs": 6}}`` (JSON values)."""
    import json

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        spec, sep1, assignment = item.partition(":")
        key, sep2, raw = assignment.partition("=")
        if not (sep1 and sep2 and key):
            raise typer.BadParameter(f"--set {item!r}: expected MODEL:key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(spec, {})[key] = value
    return out


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option(help="kline folder with the evaluation window")] = (
        _DEFAULT_DATA
    ),
    start: Annotated[str, typer.Option(help="evaluation start, ISO UTC")] = "2025-05-21T00:00",
    end: Annotated[str, typer.Option(help="evaluation end (exclusive)")] = "2025-05-25T12:00",
    symbols: Annotated[str, typer.Option(help="comma list")] = _DEMO_SYMBOLS,
    out: Annotated[
        Path | None, typer.Option(help="report folder (default models/reports/<version>)")
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """Score the promoted models on the held-out window and write the report (JSON, md, PNG),
    with the system's own backtest of them (the configured gate, risk and costs) beside the
    per-model rules and the baselines."""
    from models.evaluation.report import write_report
    from models.registry import read_index
    from streams.config import get_settings

    reg = _registry(registry)
    promoted = read_index(reg)
    versions = sorted(set(promoted.values()))
    label = versions[0] if len(versions) == 1 else "mixed-" + "-".join(versions)
    out_dir = out or reg.parent / "reports" / label
    with _our_errors():
        write_report(
            reg,
            data,
            out_dir,
            start,
            end,
            list(_csv(symbols)),
            ensemble_weights=get_settings().ensemble_weights,
            system_settings=get_settings(),
        )
    _console().print(f"report written to {out_dir}")


@app.command()
def gate(
    write: Annotated[
        bool, typer.Option(help="store the table in the members' manifests (edge_gate)")
    ] = False,
    out: Annotated[Path, typer.Option(help="report folder")] = Path("models/reports/edge"),
    cache: Annotated[Path, typer.Option(help="out-of-fold cache")] = Path("runs/edge"),
    registry: RegistryOpt = None,
) -> None:
    """Build the expected-value gate of the promoted models from walk-forward out-of-fold votes
    on their training period (refits the folds; cached per model set) and report it."""
    from models.edge import GateEvidence, attach_gate, gate_report, measure_gate
    from models.registry import read_index
    from streams.config import get_settings

    settings = get_settings()
    reg = _registry(registry)
    with _our_errors():
        table, _oof = measure_gate(reg, read_index(reg), settings.ensemble_weights, settings.paper,
                             GateEvidence(seed=settings.seed), cache, _console().print)  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        (out / "gate.md").write_text(gate_report(table), encoding="utf-8")
        (out / "gate.json").write_text(
            json.dumps(table.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        written = attach_gate(reg, table) if write else []
    _console().print(gate_report(table))
    for path in written:
        _console().print(f"gate table written to {path}")


@app.command()
def reference(
    stride: Annotated[int, typer.Option(min=1, help="every STRIDE-th minute of the window")] = 5,
    registry: RegistryOpt = None,
) -> None:
    """Store each promoted model's drift reference in its manifest: per-feature quantile bins
    and the predicted-class distribution (each model's and the ensemble's) on the training
    window the manifest names. Deterministic: a re-run writes the same bytes."""
    from models.reference import attach_references, build_references
    from models.registry import read_index
    from streams.config import get_settings

    reg = _registry(registry)
    with _our_errors():
        versions = read_index(reg)
        refs = build_references(reg, versions, get_settings().ensemble_weights, stride,
                                _console().print)  # fmt: skip
        for path in attach_references(reg, versions, refs):
            _console().print(f"drift reference written to {path}")


@app.command("list")
def list_(registry: RegistryOpt = None) -> None:
    """Registered versions with walk-forward/held-back metrics, parity and the promoted flag."""
    from rich.table import Table

    from models.registry import all_manifests, read_index

    reg = _registry(registry)
    with _our_errors():
        manifests = all_manifests(reg)
        promoted = read_index(reg)
    table = Table(title=f"models in {reg}")
    for col in _LIST_COLUMNS:
        table.add_column(col)
    for m in manifests:
        table.add_row(*_row(m, promoted.get(m.model) == m.version))
    console = _console()
    if not console.is_terminal:
        console.width = 160  # piped output: do not squeeze the table into 80 columns
    console.print(table)


_LIST_COLUMNS = (
    "model", "ver", "promoted", "input", "features", "dev rows", "WF bAcc", "WF F1",
    "held bAcc", "pred S/H/B", "parity", "KB",
)  # fmt: skip


def _row(m: Manifest, is_promoted: bool) -> list[str]:
    """One table row of ``models list``."""
    wf = m.metrics.get("walk_forward", {}).get("mean", {})
    held = m.metrics.get("holdout", {})
    balance = "/".join(f"{p:.2f}" for p in held.get("prediction_balance", []))
    return [
        m.model,
        m.version,
        "yes" if is_promoted else "",
        f"{m.input} {'x'.join(str(d) for d in m.input_shape[1:])}",
        m.feature_version,
        str(m.train_range.get("rows", "")),
        _fmt(wf.get("balanced_accuracy")),
        _fmt(wf.get("macro_f1")),
        _fmt(held.get("balanced_accuracy")),
        balance,
        f"{m.parity.get('max_abs_diff', float('nan')):.1e}",
        f"{m.onnx_bytes / 1024:.0f}",
    ]


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


@app.command("promote")
def promote_(
    model: Annotated[str, typer.Argument(help="model name, e.g. xgboost")],
    version: Annotated[str, typer.Argument(help="registered version, e.g. v2")],
    registry: RegistryOpt = None,
) -> None:
    """Make VERSION the one workers load for MODEL (artifact sha256 is verified first)."""
    from models.registry import promote

    with _our_errors():
        promoted = promote(_registry(registry), model, version)
    _console().print(f"promoted {model} {version}; now: {promoted}")


@app.command()
def rollback(
    model: Annotated[str, typer.Argument(help="model name, e.g. xgboost")],
    to: Annotated[str | None, typer.Option(help="version (default: the one served before)")] = None,
    at: Annotated[
        int | None,
        typer.Option(help="event time (epoch ms) workers swap at; default now (live)"),
    ] = None,
    reason: Annotated[str, typer.Option(help="why (kept in the record)")] = "operator rollback",
    registry: RegistryOpt = None,
) -> None:
    """Serve an earlier version of MODEL: marks it promoted in the registry and records
    ROLLED_BACK on models.events (produced when QT_KAFKA_BOOTSTRAP is set); running workers
    hot-swap to it from the record's event time, without a restart."""
    import time

    from models.promotion import append_events, rollback_event, rollback_target, served_history
    from models.registry import RegistryError, list_versions, promote, read_index

    reg = _registry(registry)
    with _our_errors():
        current = read_index(reg).get(model)
        if current is None:
            raise RegistryError(f"no promoted version of {model} in {reg}")
        target = to or rollback_target(current, served_history(reg, model),
                                       list_versions(reg, model))  # fmt: skip
        if target is None or target == current:
            raise RegistryError(f"{model} {current} has no earlier version to roll back to")
        promote(reg, model, target)
        event = rollback_event(model, target, current, at or int(time.time() * 1000), reason)
        path = append_events(reg, [event])
        _publish([event])
    _console().print(f"{model}: {current} -> {target} (ROLLED_BACK at {event.event_time_ms}); "
                     f"event in {path}")  # fmt: skip


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="model name with a kept native artifact")],
    version: Annotated[str, typer.Argument(help="registered version")],
    out: Annotated[Path, typer.Option(help="where to write the re-exported ONNX file")] = Path(
        "model.reexport.onnx"
    ),
    data: Annotated[Path | None, typer.Option(help="kline folder (default: manifest's)")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Re-export a version's kept native model to ONNX and check parity on its held-back rows.

    GBDT versions keep their native booster (``native.*``) for this; the sequence models keep
    only ONNX (their native form is a torch module; re-train to change the export). The
    registered version itself is never modified (versions are immutable).
    """
    from models.reexport import reexport

    with _our_errors():
        result = reexport(_registry(registry), model, version, out, data)
    _console().print(
        f"{model} {version} -> {out}: parity {result.max_abs_diff:.2e} on {result.n_rows} "
        f"held-back rows"
    )
