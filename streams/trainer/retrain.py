"""One retrain: recent ticks -> walk-forward candidates -> the shadow gate -> ``models.events``.

1. The ticks before the trigger's time, the last ``lookback_days`` of them (plus the features'
   warm-up), are written in the project's kline format (``<SYMBOL>.csv.gz``, the columns
   ``models.dataset`` reads) to ``<work_dir>/<trigger id>/data``; or, pointed at data files,
   the trainer trains on those files' same window.
2. :func:`models.train.run` trains every requested model walk-forward on them, exports ONNX,
   checks parity and registers each as a *candidate*: a new version that is not promoted, so
   no worker serves it (workers load the promoted index, and swap only on ``PROMOTED``).
3. A ``RETRAINED`` record per candidate (id ``<model>:<version>:RETRAINED:<trigger id>``).
4. :func:`models.promotion.gate_and_promote` shadow-scores the candidates beside the champion
   on the candidates' held-back block (the most recent ticks they were not fitted on) and
   records ``SHADOW_SCORED`` and ``PROMOTED`` (the gate passed: the index names the candidate
   and the topology hot-swaps at the trigger's event time) or ``PROMOTION_REFUSED`` with its
   numbers. Each decision record's id ends with the trigger's event time. With
   ``QT_PROMOTION__SHADOW=stream`` it is :func:`models.promotion.start_shadow` instead: the
   candidates' gate table goes into their manifests and ``SHADOW_STARTED`` records hand them to
   the topology, whose shadow stage scores them beside the champion on the stream and whose
   promotion stage records the decision (``streams/stages/shadow.py``).

The candidate set is the models this retrain trained (all four by default): the gate compares
models trained on the same rows, which the out-of-fold evidence needs.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from models.dataset import KLINE_COLUMNS, DatasetError
from models.features import BAR_MS, WARMUP_BARS
from models.fitting import TrainingError
from models.parity import ExportError, ParityError
from models.registry import RegistryError
from models.scorer import ScorerError
from streams.contracts.records import ModelEventRecorded, TickReceived
from streams.contracts.ticks import history_problem
from streams.trainer.triggers import RETRAINED_MARK, Trigger, recent_window
from streams.vocabulary import ModelEventKind, TickKind

if TYPE_CHECKING:
    from models.promotion import PromotionDecision
    from models.train import ModelOutcome
    from streams.config import Settings

Bar = tuple[float, float, float, float, float]
KLINE_HEADER = ",".join(KLINE_COLUMNS) + "\n"
#: Bars before the lookback window kept for the features' warm-up.
WARMUP_MS = WARMUP_BARS * BAR_MS
#: What a failed retrain raises (the long-running trainer logs it and carries on).
RETRAIN_ERRORS = (TrainingError, DatasetError, RegistryError, ParityError, ExportError,
                  ScorerError, ValueError)  # fmt: skip


@dataclass
class KlineBuffer:
    """The 1-minute klines read from ``market.ticks``, per symbol (first copy of each minute)."""

    bars: dict[str, dict[int, Bar]] = field(default_factory=dict)

    def add(self, tick: TickReceived) -> None:
        """Keep a kline and the warm-up history it carries (trade ticks are not training data;
        a history the tick rule refuses is left out, as the features stage refuses it)."""
        if tick.kind != TickKind.KLINE_1M:
            return
        by_time = self.bars.setdefault(tick.symbol, {})
        if history_problem(tick) is None:
            for h in tick.history:
                by_time.setdefault(h.open_time_ms, (h.open, h.high, h.low, h.close, h.volume))
        by_time.setdefault(
            tick.event_time_ms, (tick.open, tick.high, tick.low, tick.close, tick.volume)
        )

    def forget_before(self, t_ms: int) -> None:
        """Drop bars older than any retrain can still use."""
        for by_time in self.bars.values():
            for old in [t for t in by_time if t < t_ms]:
                del by_time[old]

    def __len__(self) -> int:
        return sum(len(b) for b in self.bars.values())

    def write(self, folder: Path, start_ms: int, end_ms: int) -> dict[str, int]:
        """``<SYMBOL>.csv.gz`` of the bars in ``[start_ms, end_ms)``; rows written per symbol.

        ``repr`` of a float reads back to the same float, so the files hold the ticks' values.
        """
        folder.mkdir(parents=True, exist_ok=True)
        written = {}
        for symbol, by_time in sorted(self.bars.items()):
            times = sorted(t for t in by_time if start_ms <= t < end_ms)
            if not times:
                continue
            with gzip.open(folder / f"{symbol}.csv.gz", "wt", encoding="ascii") as fh:
                fh.write(KLINE_HEADER)
                for t in times:
                    fh.write(f"{t}," + ",".join(repr(v) for v in by_time[t]) + "\n")
            written[symbol] = len(times)
        return written


@dataclass(frozen=True)
class RetrainPlan:
    """What every retrain of one trainer shares."""

    registry: Path
    work_dir: Path
    models: tuple[str, ...]
    lookback_days: float
    folds: int
    seed: int


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain registered and what the gate decided."""

    trigger: Trigger
    candidates: dict[str, str]
    decision: PromotionDecision | None
    """None when the decision was recorded by a run that crashed before publishing it."""
    events: list[ModelEventRecorded]
    """``RETRAINED`` then the gate's records, in the order they were written."""


def retrained_event(outcome: ModelOutcome, trigger: Trigger) -> ModelEventRecorded:
    """The ``RETRAINED`` record of one candidate: its trigger and held-back figures."""
    held = outcome.holdout
    wf = outcome.walk_forward.get("mean", {})
    return ModelEventRecorded(
        event_id=f"{outcome.name}:{outcome.version}{RETRAINED_MARK}{trigger.trigger_id}",
        model=outcome.name,
        version=outcome.version,
        event_time_ms=trigger.at_ms,
        kind=ModelEventKind.RETRAINED,
        detail=(
            f"candidate (not promoted) for {trigger.trigger_id}: {trigger.detail} | "
            f"walk-forward bal.acc {wf.get('balanced_accuracy', float('nan')):.3f}, held-back "
            f"bal.acc {held['balanced_accuracy']:.3f}, parity {outcome.parity['max_abs_diff']:.1e}"
        ),
        metric_name="holdout_balanced_accuracy",
        metric=float(held["balanced_accuracy"]),
    )


def training_data(trigger: Trigger, plan: RetrainPlan, buffer: KlineBuffer,
                  files: Path | None) -> Path:  # fmt: skip
    """The folder the retrain reads: the data files, else the buffer's window written out."""
    if files is not None:
        return files
    folder = (plan.work_dir / trigger.trigger_id / "data").resolve()
    start, end = recent_window(trigger.at_ms, plan.lookback_days, WARMUP_MS)
    if not buffer.write(folder, start, end):
        raise DatasetError(f"no klines before {trigger.at_ms} in the trainer's buffer")
    return folder


def retrain(
    trigger: Trigger,
    data_dir: Path,
    plan: RetrainPlan,
    settings: Settings,
    publish: Callable[[list[ModelEventRecorded]], None],
    log: Callable[[str], None] = print,
) -> RetrainOutcome:
    """Train, register the candidates, record them, gate them (module doc); records published
    as they are made, so the candidates are on the topic even if the gate fails.

    Each step finds what an earlier, crashed run of the same trigger left: candidates it
    registered (their manifests name the trigger) are not trained again, and a gate decision it
    recorded is published and applied instead of being made again.
    """
    from models.promotion import (
        append_events,
        apply_recorded,
        gate_and_promote,
        recorded_decision,
        start_shadow,
    )

    outcomes = _train_candidates(trigger, data_dir, plan, log)
    retrained = [retrained_event(o, trigger) for o in outcomes]
    append_events(plan.registry, retrained)
    publish(retrained)
    candidates = _candidates(outcomes)
    decided = recorded_decision(plan.registry, candidates, trigger.at_ms)
    decision: PromotionDecision | None = None
    if decided:
        log(f"{trigger.trigger_id}: the gate's decision was recorded before a restart; "
            "publishing it")  # fmt: skip
        apply_recorded(plan.registry, decided)
    elif settings.promotion.shadow == "stream":  # the topology's promotion stage decides
        decided = start_shadow(
            plan.registry, candidates, settings, plan.work_dir / "edge", trigger.at_ms, log
        )
    else:
        decision, decided = gate_and_promote(
            plan.registry, candidates, settings, plan.work_dir / "edge", trigger.at_ms, log
        )
    publish(decided)
    return RetrainOutcome(trigger, candidates, decision, [*retrained, *decided])


def _train_candidates(trigger: Trigger, data_dir: Path, plan: RetrainPlan,
                      log: Callable[[str], None]) -> list[ModelOutcome]:  # fmt: skip
    """The trigger's candidates: those registered for it before a crash, read back, and the
    others trained now under the same version."""
    from models.catalog import VARIANT_SEPARATOR
    from models.dataset import ms_to_iso
    from models.registry import next_version, versions_trained_for
    from models.train import TrainPlan, outcome_from_manifest, run

    found = versions_trained_for(plan.registry, trigger.trigger_id)
    version = max(found.values(), key=_version_number) if found else next_version(plan.registry)
    done = {m: v for m, v in found.items() if v == version}
    missing = tuple(m for m in plan.models if m.replace(VARIANT_SEPARATOR, "-") not in done)
    outcomes = [outcome_from_manifest(plan.registry, m, v) for m, v in sorted(done.items())]
    if done:
        log(f"retrain {trigger.trigger_id}: {', '.join(sorted(done))} {version} registered "
            "before a restart")  # fmt: skip
    if not missing:
        return outcomes
    start, end = recent_window(trigger.at_ms, plan.lookback_days, 0)
    train_plan = TrainPlan(
        data_dir=data_dir, registry=plan.registry, version=version, models=missing,
        start=ms_to_iso(start), end=ms_to_iso(end), seed=plan.seed, n_folds=plan.folds,
        promote=False, trained_for=trigger.trigger_id,
    )  # fmt: skip
    log(f"retrain {trigger.trigger_id}: {', '.join(missing)} as {version} on {data_dir} "
        f"[{train_plan.start}, {train_plan.end})")  # fmt: skip
    return [*outcomes, *run(train_plan, log=log)]


def _version_number(version: str) -> int:
    """``v12`` -> 12 (a version of another form sorts first)."""
    return int(version[1:]) if version[1:].isdigit() else -1


def _candidates(outcomes: Iterable[ModelOutcome]) -> dict[str, str]:
    """Model -> version of the trained models (variants like ``nhits-large`` are not served)."""
    return {o.name: o.version for o in outcomes if "-" not in o.name}


def describe_outcome(outcome: RetrainOutcome) -> list[tuple[str, str]]:
    """Rows of the trainer's summary table."""
    rows = [
        ("trigger", f"{outcome.trigger.trigger_id} ({outcome.trigger.detail})"),
        ("candidates", ", ".join(f"{m}@{v}" for m, v in sorted(outcome.candidates.items()))),
    ]
    d = outcome.decision
    kinds = {e.kind for e in outcome.events if e.kind != ModelEventKind.RETRAINED}
    if kinds == {ModelEventKind.SHADOW_STARTED}:
        rows.append(("verdict", "shadow-scored on the stream (the promotion stage decides)"))
    elif d is None:
        rows.append(("verdict", f"{', '.join(sorted(kinds))} (recorded before a restart)"))
    else:
        rows += [
            ("verdict", "PROMOTED" if d.promote else "PROMOTION_REFUSED: " + "; ".join(d.reasons)),
            ("candidate", d.candidate.describe()),
            ("champion", d.champion.describe()),
            ("candidate - champion", f"CI [{d.diff_lower:+.5%}, {d.diff_upper:+.5%}]"),
        ]
    return [*rows, ("records", f"{len(outcome.events)} on models.events")]
