"""Drift of the live stream from the models' training reference, in event time (docs/drift.md).

The ensemble stage feeds every scored row to a :class:`DriftMonitor`: its tabular feature values
and each model's and the ensemble's predicted class. Rows are counted into the reference's bins
per event-time *slot* (``QT_DRIFT__SLOT_MS``, an hour); when a row opens a new slot the window of
the slots before it (``QT_DRIFT__WINDOW_MS``, 24 hours) is measured, once it is full and holds
``QT_DRIFT__MIN_SAMPLES`` rows: PSI and KS per feature, PSI of each predicted-class
distribution. The reading's level is its worst PSI's (stable / moderate / significant); a
``models.events`` record goes out only when the level changes: ``DRIFT_DETECTED`` going up (or
down to moderate), ``DRIFT_RECOVERED`` back to stable. The counts are plain integers in the
stage's state, so a restarted worker measures the same windows.

The reference comes from the loaded models' manifests (``drift_reference``, written by
``quantum-trader models reference``): features from the first member that has one, each model's
class distribution from its own, the ensemble's only when the versions and weights it was
measured with are the loaded ones. A set without any reference is not measured, and says so.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from models.drift import ks, level, psi
from streams.config import DriftConfig, Settings
from streams.contracts.records import FeaturesComputed, ModelEventRecorded, SignalScored
from streams.vocabulary import CLASSES, ModelDrift, ModelEventKind

log = logging.getLogger(__name__)

ENSEMBLE = "ensemble"
FEATURES = "features"
PREDICTED = "predicted_class"
LEVELS = ("stable", "moderate", "significant")
#: The contract's name of each level (``SignalScored.model_drift``).
DRIFT_LEVELS = (ModelDrift.STABLE, ModelDrift.MODERATE, ModelDrift.SIGNIFICANT)


@dataclass(frozen=True)
class SymbolShares:
    """One training symbol's own shares: per feature bin (the population's edges), per model
    predicted class (a model missing here takes the population's)."""

    proportions: tuple[np.ndarray, ...]
    classes: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class DriftReference:
    """The bins and shares the window is compared with."""

    feature_names: tuple[str, ...]
    edges: tuple[np.ndarray, ...]
    proportions: tuple[np.ndarray, ...]
    classes: Mapping[str, np.ndarray]
    """Predicted-class shares per model name, and ``ensemble`` when it applies."""
    by_symbol: Mapping[str, SymbolShares] = field(default_factory=dict)
    """Each training symbol's own shares (empty in a reference written before them)."""

    @property
    def bins(self) -> tuple[int, ...]:
        """Bin count per feature."""
        return tuple(len(e) + 1 for e in self.edges)

    def expected(
        self, rows: Mapping[str, int], samples: int
    ) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        """The shares a window of ``samples`` rows should show, ``rows`` of them per symbol:
        the mix of those symbols' own shares, weighted by their rows; the population's for a
        symbol the reference has not (or rows no symbol was counted for)."""
        own = {s: n for s, n in sorted(rows.items()) if n > 0 and s in self.by_symbol}
        if not own or samples <= 0:
            return list(self.proportions), dict(self.classes)
        rest = float(samples - sum(own.values()))
        features = [p * rest for p in self.proportions]
        classes = {m: p * rest for m, p in self.classes.items()}
        for symbol, n in own.items():
            ref = self.by_symbol[symbol]
            features = [f + n * p for f, p in zip(features, ref.proportions, strict=True)]
            classes = {m: c + n * ref.classes.get(m, self.classes[m]) for m, c in classes.items()}
        return [f / samples for f in features], {m: c / samples for m, c in classes.items()}


def _arrays(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _symbol_shares(
    first: Mapping[str, Any], present: Mapping[str, Mapping[str, Any]],
    ensemble: Mapping[str, Any] | None, names: Sequence[str],
) -> dict[str, SymbolShares]:  # fmt: skip
    """Each symbol's shares from the references' ``by_symbol`` (features from ``first``)."""
    out = {}
    for symbol, own in sorted((first.get("by_symbol") or {}).items()):
        classes = {m: _arrays(r["by_symbol"][symbol]["predicted_classes"])
                   for m, r in present.items() if symbol in (r.get("by_symbol") or {})}  # fmt: skip
        if ensemble is not None and symbol in (ensemble.get("by_symbol") or {}):
            classes[ENSEMBLE] = _arrays(ensemble["by_symbol"][symbol])
        out[symbol] = SymbolShares(tuple(_arrays(own["features"][n]) for n in names), classes)
    return out


def reference_of(
    references: Mapping[str, Mapping[str, Any] | None],
    versions: Mapping[str, str],
    weights: Mapping[str, float],
) -> tuple[DriftReference | None, str]:
    """The reference of the loaded set from its manifests' ``drift_reference``; or None and why."""
    present = {m: r for m, r in sorted(references.items()) if r}
    if not present:
        return None, "no reference: no loaded manifest has a drift_reference"
    first = next(iter(present.values()))
    names = tuple(first["feature_names"])
    classes = {m: _arrays(r["predicted_classes"]) for m, r in present.items()}
    ens = first.get("ensemble") or {}
    voters = {m: float(w) for m, w in weights.items() if m in versions and w > 0}
    applies = ens.get("versions") == dict(sorted(versions.items())) and ens.get("weights") == voters
    if applies:
        classes[ENSEMBLE] = _arrays(ens["predicted_classes"])
    feats = first["features"]
    return (
        DriftReference(
            names,
            tuple(_arrays(feats[n]["edges"]) for n in names),
            tuple(_arrays(feats[n]["proportions"]) for n in names),
            classes,
            _symbol_shares(first, present, ens if applies else None, names),
        ),
        "",
    )


@dataclass(frozen=True)
class DriftReading:
    """One measurement of the window that ends at ``event_time_ms``."""

    event_time_ms: int
    samples: int
    psi: Mapping[tuple[str, str], float]
    """PSI per (``features``, feature name) and per (model or ``ensemble``, ``predicted_class``)."""
    ks: Mapping[str, float]
    level: int

    def worst(self, n: int) -> list[tuple[str, str, float]]:
        """The ``n`` largest PSIs, largest first (ties by name)."""
        ranked = sorted(self.psi.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(m, f, v) for (m, f), v in ranked[:n]]

    def describe(self, n: int) -> str:
        """``significant drift over 720 rows: PSI vol_60 0.81 (KS 0.35), ...``."""
        parts = []
        for model, feature, value in self.worst(n):
            what = feature if model == FEATURES else f"{model} {PREDICTED}"
            extra = f" (KS {self.ks[feature]:.2f})" if model == FEATURES else ""
            parts.append(f"PSI {what} {value:.3f}{extra}")
        return f"{LEVELS[self.level]} drift over {self.samples} rows: " + ", ".join(parts)


def measure(
    ref: DriftReference,
    counts: Sequence[np.ndarray],
    classes: Mapping[str, np.ndarray],
    samples: int,
    t: int,
    cfg: DriftConfig,
    rows: Mapping[str, int] | None = None,
) -> DriftReading:
    """PSI and KS of the window's ``counts`` (per feature) and ``classes`` against ``ref``:
    against the mix of its symbols' own shares when ``rows`` says how many rows each had."""
    proportions, expected = ref.expected(rows or {}, samples)
    values: dict[tuple[str, str], float] = {}
    ks_values: dict[str, float] = {}
    for name, p, c in zip(ref.feature_names, proportions, counts, strict=True):
        values[(FEATURES, name)] = psi(p, c)
        ks_values[name] = ks(p, c)
    for model, p in expected.items():
        if model in classes:
            values[(model, PREDICTED)] = psi(p, classes[model])
    worst = max(values.values(), default=float("nan"))
    return DriftReading(t, samples, values, ks_values,
                        level(worst, cfg.moderate_psi, cfg.significant_psi))  # fmt: skip


class _Slot:
    """Counts of one event-time slot: per feature bin, per model predicted class.

    Plain lists: a row increments ~30 counts, which costs far less on lists than on numpy
    arrays; a measurement (once per slot) sums them with numpy.
    """

    def __init__(self, bins: Sequence[int], models: Sequence[str]) -> None:
        self.n = 0
        self.features = [[0] * b for b in bins]
        self.classes = {m: [0] * len(CLASSES) for m in models}
        self.symbols: dict[str, int] = {}  # rows per symbol: which references to mix

    def to_state(self) -> dict[str, Any]:
        return {"n": self.n, "f": [list(c) for c in self.features],
                "c": {m: list(c) for m, c in self.classes.items()},
                "s": dict(sorted(self.symbols.items()))}  # fmt: skip

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> _Slot:
        slot = cls([], [])
        slot.n = int(data["n"])
        slot.features = [[int(v) for v in c] for c in data["f"]]
        slot.classes = {m: [int(v) for v in c] for m, c in data["c"].items()}
        slot.symbols = {s: int(n) for s, n in data.get("s", {}).items()}  # older state: none
        return slot


class DriftMonitor:
    """Rolling event-time window of one ensemble instance, measured at each slot boundary."""

    def __init__(self, ref: DriftReference | None, cfg: DriftConfig, problem: str = "") -> None:
        self.ref = ref
        self.cfg = cfg
        self.problem = problem
        self.slots: dict[int, _Slot] = {}
        self.current: int | None = None  # start of the newest slot seen
        self.first: int | None = None  # start of the first: a window is measured once full
        self.level = 0
        self.last: DriftReading | None = None
        #: ``bisect_right`` on lists: the bins ``bin_index`` gives, without numpy's per-call cost
        self._edges = [e.tolist() for e in ref.edges] if ref is not None else []

    def observe(self, features: FeaturesComputed, signal: SignalScored) -> DriftReading | None:
        """Count one scored row; the reading of the window before it when it opens a slot."""
        if self.ref is None:
            return None
        t = signal.event_time_ms
        start = t - t % self.cfg.slot_ms
        reading = None
        if self.current is None or start > self.current:
            if self.current is not None:
                reading = self._measure(start)
            self.current = start
            self.first = start if self.first is None else self.first
            self._evict(start)
        if start <= self.current - self.cfg.window_ms:
            return reading  # older than the window: nothing to count it in
        slot = self.slots.get(start)
        if slot is None:
            slot = self.slots[start] = self._new_slot()
        self._count(slot, features, signal)
        return reading

    def _new_slot(self) -> _Slot:
        assert self.ref is not None
        return _Slot(self.ref.bins, [*self.ref.classes])

    def _count(self, slot: _Slot, features: FeaturesComputed, signal: SignalScored) -> None:
        assert self.ref is not None
        slot.n += 1
        slot.symbols[signal.symbol] = slot.symbols.get(signal.symbol, 0) + 1
        # the reference's features are the row's first ones (a row may hold more)
        for counts, edges, value in zip(slot.features, self._edges, features.values, strict=False):
            counts[bisect_right(edges, value)] += 1
        for v in signal.votes:
            if v.model in slot.classes:
                slot.classes[v.model][CLASSES.index(v.action)] += 1
        if ENSEMBLE in slot.classes:
            slot.classes[ENSEMBLE][CLASSES.index(signal.action)] += 1

    def _evict(self, now: int) -> None:
        for start in [s for s in self.slots if s <= now - self.cfg.window_ms]:
            del self.slots[start]

    def _measure(self, end: int) -> DriftReading | None:
        assert self.ref is not None
        window = [s for start, s in sorted(self.slots.items()) if start > end - self.cfg.window_ms]
        samples = sum(s.n for s in window)
        full = self.first is not None and end - self.first >= self.cfg.window_ms
        if not full or samples < self.cfg.min_samples:
            return None
        counts = [
            np.sum(np.asarray([s.features[i] for s in window], dtype=np.int64), axis=0)
            for i in range(len(self.ref.edges))
        ]
        classes = {m: np.sum(np.asarray([s.classes[m] for s in window], dtype=np.int64), axis=0)
                   for m in self.ref.classes}  # fmt: skip
        rows: dict[str, int] = {}
        for s in window:
            for symbol, n in s.symbols.items():
                rows[symbol] = rows.get(symbol, 0) + n
        self.last = measure(self.ref, counts, classes, samples, end, self.cfg, rows)
        return self.last

    def crossing(self, reading: DriftReading) -> ModelEventKind | None:
        """The event kind when ``reading`` changes the level (and take the new level)."""
        if reading.level == self.level:
            return None
        self.level = reading.level
        recovered = reading.level == 0
        return ModelEventKind.DRIFT_RECOVERED if recovered else ModelEventKind.DRIFT_DETECTED

    def to_state(self) -> dict[str, Any]:
        """The window's counts, the current slot and level."""
        return {"current": self.current, "first": self.first, "level": self.level,
                "slots": {str(k): s.to_state() for k, s in self.slots.items()}}  # fmt: skip

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Inverse of :meth:`to_state`."""
        self.current = data["current"]
        self.first = data.get("first", self.current)
        self.level = int(data["level"])
        self.slots = {int(k): _Slot.from_state(v) for k, v in data["slots"].items()}


def drift_monitor(settings: Settings) -> Callable[[Mapping[str, str]], DriftMonitor]:
    """A monitor for a model set, its reference read from the set's manifests (a set the
    registry does not hold, or without references, is not measured, and the log says why).

    Each set's reference is read once: every partition's instance measures against it.
    """
    from models.registry import RegistryError, read_manifest

    references: dict[tuple[tuple[str, str], ...], tuple[DriftReference | None, str]] = {}

    def reference(versions: Mapping[str, str]) -> tuple[DriftReference | None, str]:
        try:
            refs = {m: read_manifest(settings.registry_dir, m, v).drift_reference
                    for m, v in versions.items()}  # fmt: skip
        except RegistryError as exc:
            ref, problem = None, str(exc)
        else:
            ref, problem = reference_of(refs, versions, settings.ensemble_weights)
        if ref is None:
            log.warning("drift is not measured for %s: %s", dict(versions), problem)
        return ref, problem

    def make(versions: Mapping[str, str]) -> DriftMonitor:
        key = tuple(sorted(versions.items()))
        if key not in references:
            references[key] = reference(versions)
        ref, problem = references[key]
        return DriftMonitor(ref, settings.drift, problem)

    return make


def voted_versions(signal: SignalScored) -> dict[str, str]:
    """The model versions that scored ``signal``."""
    return {v.model: v.version for v in signal.votes}


class DriftWatch:
    """One ensemble instance's drift, every row stamped with the level it is scored in.

    A row's level is the monitor's once the row is counted: a level changes only when a row
    opens a slot, measured from the slots before it, so it depends neither on the order of the
    rows within a slot nor on how they were batched, and the in-process runner and each
    topology instance (one per partition) give every row the same level. The versions that
    scored the row (its votes) pick the reference; another set starts its own monitor, from
    an empty window.
    """

    def __init__(self, monitor_for: Callable[[Mapping[str, str]], DriftMonitor]) -> None:
        self._monitor_for = monitor_for
        self.versions: dict[str, str] | None = None
        self.monitor: DriftMonitor | None = None

    def watch(self, versions: Mapping[str, str]) -> DriftMonitor:
        """The monitor of ``versions`` (a new one when the set changed)."""
        if self.monitor is None or dict(versions) != self.versions:
            self.monitor = self._monitor_for(versions)
            self.versions = dict(versions)
        return self.monitor

    def observe(self, features: FeaturesComputed, signal: SignalScored
                ) -> tuple[SignalScored, DriftReading | None, ModelEventKind | None]:  # fmt: skip
        """Count the row: the signal with its level, the reading it caused and the crossing."""
        monitor = self.watch(voted_versions(signal))
        reading = monitor.observe(features, signal)
        kind = None if reading is None else monitor.crossing(reading)
        level = DRIFT_LEVELS[monitor.level]
        return (signal if signal.model_drift is level else replace(signal, model_drift=level),
                reading, kind)  # fmt: skip

    def event(self, reading: DriftReading, kind: ModelEventKind, instance: int
              ) -> ModelEventRecorded:  # fmt: skip
        """The ``models.events`` record of a crossing :meth:`observe` reported."""
        assert self.monitor is not None and self.versions is not None
        return drift_event(reading, kind, self.versions, instance, self.monitor.cfg.worst)

    def to_state(self) -> dict[str, Any] | None:
        """The monitor's window and level (None before the first row)."""
        return None if self.monitor is None else self.monitor.to_state()

    def load_state(self, data: Mapping[str, Any] | None, versions: Mapping[str, str]) -> None:
        """Inverse of :meth:`to_state`: the window of ``versions``, the set served when the
        state was written."""
        if data:
            self.watch(versions).load_state(data)


def drift_event(
    reading: DriftReading, kind: ModelEventKind, versions: Mapping[str, str], instance: int,
    worst: int,
) -> ModelEventRecorded:  # fmt: skip
    """The ``models.events`` record of a level change (id from the instance and event time)."""
    label = ",".join(f"{m}={v}" for m, v in sorted(versions.items()))
    top = reading.worst(1)
    t = reading.event_time_ms
    return ModelEventRecorded(
        event_id=f"{ENSEMBLE}:{label}:{kind.value}:{t}:{instance}",
        model=ENSEMBLE,
        version=label,
        event_time_ms=t,
        kind=kind,
        detail=f"ensemble instance {instance}: {reading.describe(worst)}",
        metric_name=f"psi:{top[0][1]}" if top else "psi",
        metric=top[0][2] if top else None,
    )
