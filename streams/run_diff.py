"""Two runs compared decision by decision: what ``quantum-trader diff`` prints and gates on.

Each side is a run's decision log (:mod:`streams.decisions`): from a run folder's
``decisions.jsonl.gz``, or read from a topic prefix on a broker. Rows are aligned by kind and
deterministic id (a decision made on the same signal has the same id in both runs), compared
value by value, exactly (floats too: the topology is deterministic, so any difference is a
difference), and every mismatch becomes a :class:`Divergence`, sorted by event time and
pipeline step. The first one is where the runs parted; the rest mostly follow from it.

Pure: no Kafka, no files. :mod:`streams.commands.diff` loads the sides and prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.decisions import DecisionRow
from streams.vocabulary import DecisionKind

#: Marks a value one side does not have (a field of an approval that a rejection lacks).
ABSENT = "-"


@dataclass(frozen=True, slots=True)
class ValueChange:
    """One value that differs: its name and both sides' values (``None`` = absent)."""

    name: str
    a: Any
    b: Any


@dataclass(frozen=True, slots=True)
class Divergence:
    """One decision step that is not the same in both runs."""

    kind: DecisionKind
    id: str
    a: DecisionRow | None
    b: DecisionRow | None
    changes: tuple[ValueChange, ...] = ()

    @property
    def row(self) -> DecisionRow:
        """A side that has the step (A's when both do)."""
        row = self.a or self.b
        assert row is not None  # a divergence has at least one side
        return row

    @property
    def sort_key(self) -> tuple[int, int, str]:
        """Earliest event time of either side, then pipeline step, then id."""
        times = [r.event_time_ms for r in (self.a, self.b) if r is not None]
        return (min(times), self.kind.rank, self.id)

    @property
    def status(self) -> str:
        """``only in A``, ``only in B`` or ``changed``."""
        if self.b is None:
            return "only in A"
        if self.a is None:
            return "only in B"
        return "changed"


@dataclass(frozen=True, slots=True)
class KindCounts:
    """How the steps of one kind compare."""

    kind: DecisionKind
    a: int
    b: int
    same: int
    changed: int
    only_a: int
    only_b: int


@dataclass(frozen=True, slots=True)
class PnlSummary:
    """Closed trades and realised PnL of both runs."""

    trades_a: int
    trades_b: int
    net_pnl_a: float
    net_pnl_b: float
    fees_a: float
    fees_b: float
    trades_with_other_pnl: int  # trades in both runs whose net PnL differs

    @property
    def differs(self) -> bool:
        """Trade count, net PnL or fees differ."""
        return (self.trades_a, self.net_pnl_a, self.fees_a) != (
            self.trades_b, self.net_pnl_b, self.fees_b,
        )  # fmt: skip


@dataclass(frozen=True)
class RunDiff:
    """The comparison of run A with run B."""

    a_label: str
    b_label: str
    divergences: tuple[Divergence, ...]
    kinds: tuple[KindCounts, ...]
    pnl: PnlSummary
    settings: tuple[ValueChange, ...] = ()  # configuration that differs (when both have one)
    notes: tuple[str, ...] = ()  # what was not compared, and why
    trace_files: Mapping[str, str] = field(default_factory=dict)  # side ("A"/"B") -> span file

    @property
    def identical(self) -> bool:
        """No decision step differs."""
        return not self.divergences

    @property
    def first(self) -> Divergence | None:
        """Where the runs parted (``None`` when they did not)."""
        return self.divergences[0] if self.divergences else None


# ------------------------------------------------------------------ comparing


def index_rows(
    rows: Iterable[DecisionRow],
) -> tuple[dict[tuple[DecisionKind, str], DecisionRow], int]:
    """Rows by (kind, id), and how many repeated an id already seen (redelivered records)."""
    out: dict[tuple[DecisionKind, str], DecisionRow] = {}
    repeats = 0
    for row in rows:
        key = (row.kind, row.id)
        if key in out:
            repeats += 1
            continue
        out[key] = row
    return out, repeats


def value_changes(a: DecisionRow, b: DecisionRow) -> tuple[ValueChange, ...]:
    """Every value (and the event time, symbol and decision) that differs between two rows."""
    changes = [
        ValueChange(name, getattr(a, name), getattr(b, name))
        for name in ("event_time_ms", "symbol", "decision_id")
        if getattr(a, name) != getattr(b, name)
    ]
    for name in sorted(set(a.values) | set(b.values)):
        va, vb = a.values.get(name), b.values.get(name)
        if va != vb or (name in a.values) != (name in b.values):
            changes.append(ValueChange(name, va, vb))
    return tuple(changes)


def compare(
    a_rows: Iterable[DecisionRow],
    b_rows: Iterable[DecisionRow],
    kinds: Iterable[DecisionKind] = tuple(DecisionKind),
) -> tuple[tuple[Divergence, ...], tuple[KindCounts, ...]]:
    """Divergences (in log order) and per-kind counts of the steps of ``kinds``."""
    wanted = set(kinds)
    a_index, _ = index_rows(r for r in a_rows if r.kind in wanted)
    b_index, _ = index_rows(r for r in b_rows if r.kind in wanted)
    divergences: list[Divergence] = []
    tally: Counter[tuple[DecisionKind, str]] = Counter()
    for key in a_index.keys() | b_index.keys():
        a, b = a_index.get(key), b_index.get(key)
        changes = value_changes(a, b) if a is not None and b is not None else ()
        if a is not None and b is not None and not changes:
            tally[(key[0], "same")] += 1
            continue
        divergence = Divergence(key[0], key[1], a, b, changes)
        tally[(key[0], divergence.status)] += 1
        divergences.append(divergence)
    divergences.sort(key=lambda d: d.sort_key)
    a_counts = Counter(k for k, _ in a_index)
    b_counts = Counter(k for k, _ in b_index)
    counts = tuple(
        KindCounts(
            kind,
            a_counts[kind],
            b_counts[kind],
            tally[(kind, "same")],
            tally[(kind, "changed")],
            tally[(kind, "only in A")],
            tally[(kind, "only in B")],
        )
        for kind in DecisionKind
        if kind in wanted
    )
    return tuple(divergences), counts


def pnl_summary(a_rows: Sequence[DecisionRow], b_rows: Sequence[DecisionRow]) -> PnlSummary:
    """Trades and realised PnL of both sides, from their trade rows (unfilled trades count 0)."""

    def trades(rows: Sequence[DecisionRow]) -> dict[str, DecisionRow]:
        index, _repeats = index_rows(r for r in rows if r.kind is DecisionKind.TRADE)
        return {trade_id: row for (_kind, trade_id), row in index.items()}

    def total(rows: Mapping[str, DecisionRow], name: str) -> float:
        return sum(_number(r.values.get(name)) for r in rows.values())

    ta, tb = trades(a_rows), trades(b_rows)
    other = sum(
        1 for i in ta.keys() & tb.keys()
        if _number(ta[i].values.get("net_pnl")) != _number(tb[i].values.get("net_pnl"))
    )  # fmt: skip
    return PnlSummary(
        len(ta), len(tb), total(ta, "net_pnl"), total(tb, "net_pnl"), total(ta, "fees"),
        total(tb, "fees"), other,
    )  # fmt: skip


def _number(value: Any) -> float:
    """A value as a float: trade rows read back from ``trades.csv`` hold text."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def settings_changes(
    a: Mapping[str, Any] | None, b: Mapping[str, Any] | None
) -> tuple[ValueChange, ...]:
    """The settings two runs' ``report.json`` ``config`` sections disagree on (dotted names)."""
    if a is None or b is None:
        return ()
    fa, fb = _flatten(a), _flatten(b)
    return tuple(
        ValueChange(name, fa.get(name), fb.get(name))
        for name in sorted(fa.keys() | fb.keys())
        if fa.get(name) != fb.get(name)
    )


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= _flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def diff_runs(
    a_label: str,
    a_rows: Sequence[DecisionRow],
    b_label: str,
    b_rows: Sequence[DecisionRow],
    *,
    kinds: Iterable[DecisionKind] = tuple(DecisionKind),
    a_config: Mapping[str, Any] | None = None,
    b_config: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    trace_files: Mapping[str, str] | None = None,
) -> RunDiff:
    """Compare run A with run B (see the module doc)."""
    divergences, counts = compare(a_rows, b_rows, kinds)
    repeats = [
        f"{label} repeats {n:,} record id(s) (redelivered records; the first of each is compared)"
        for label, rows in (("A", a_rows), ("B", b_rows))
        if (n := index_rows(rows)[1])
    ]
    return RunDiff(
        a_label, b_label, divergences, counts, pnl_summary(a_rows, b_rows),
        settings_changes(a_config, b_config), (*notes, *repeats), dict(trace_files or {}),
    )  # fmt: skip


# ------------------------------------------------------------------ rendering


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def show(value: Any) -> str:
    """A value as the diff prints it: floats exactly (``repr``), absent as ``-``."""
    if value is None:
        return ABSENT
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def _values_table(d: Divergence) -> list[str]:
    """Both sides' values: the ones that differ, or all of a one-sided step's."""
    if d.a is not None and d.b is not None:
        rows = [(c.name, show(c.a), show(c.b)) for c in d.changes]
    else:
        present = d.row
        values = sorted(present.values.items())
        rows = [
            (name, show(v), ABSENT) if d.a is not None else (name, ABSENT, show(v))
            for name, v in values
        ]
    width = max((len(n) for n, _, _ in rows), default=4)
    a_width = max((len(a) for _, a, _ in rows), default=1)
    lines = [f"    {'value':<{width}}  {'A':<{a_width}}  B"]
    lines += [f"    {n:<{width}}  {a:<{a_width}}  {b}" for n, a, b in rows]
    return lines


def _trace_lines(diff: RunDiff, d: Divergence) -> list[str]:
    decision = d.row.decision_id
    lines = [f"  decision {decision}"]
    for side, row in (("A", d.a), ("B", d.b)):
        trace = row.trace_id if row is not None else None
        file = diff.trace_files.get(side)
        where = f"trace {trace}" if trace else "no trace id recorded"
        if file:
            where += f"; quantum-trader trace {decision} --file {file}"
        lines.append(f"  {side}: {where}")
    return lines


def describe(d: Divergence) -> str:
    """One line: when, step, id and what differs."""
    row = d.row
    what = ", ".join(c.name for c in d.changes[:6]) if d.changes else ""
    more = f" (+{len(d.changes) - 6})" if len(d.changes) > 6 else ""
    detail = f"{d.status}: {what}{more}" if what else d.status
    return f"{_when(d.sort_key[0])}  {d.kind.value:<7} {row.id}  {detail}"


def render_text(diff: RunDiff, limit: int = 10) -> str:
    """The human report: verdict, first divergence with both sides' values, counts, PnL."""
    lines = [f"A: {diff.a_label}", f"B: {diff.b_label}"]
    lines += [f"note: {n}" for n in diff.notes]
    if diff.settings:
        lines.append("settings that differ:")
        lines += [f"  {c.name}: A {show(c.a)}, B {show(c.b)}" for c in diff.settings]
    first = diff.first
    if first is not None:
        row = first.row
        lines.append(
            f"first divergence at {_when(first.sort_key[0])}: {first.kind.value} {row.id} "
            f"({row.symbol}), {first.status}"
        )
        lines += _values_table(first)
        lines += _trace_lines(diff, first)
    lines += _counts_table(diff.kinds)
    lines += _pnl_lines(diff.pnl)
    if len(diff.divergences) > 1 and limit > 0:
        shown = diff.divergences[:limit]
        lines.append(f"divergences (first {len(shown)} of {len(diff.divergences):,}):")
        lines += [f"  {describe(d)}" for d in shown]
    verdict = (
        "runs are identical, decision by decision"
        if diff.identical
        else f"runs differ: {len(diff.divergences):,} decision step(s)"
    )
    lines.append(verdict)
    return "\n".join(lines) + "\n"


def _counts_table(kinds: Sequence[KindCounts]) -> list[str]:
    head = ("step", "A", "B", "same", "changed", "only A", "only B")
    rows = [
        (k.kind.value, *(f"{n:,}" for n in (k.a, k.b, k.same, k.changed, k.only_a, k.only_b)))
        for k in kinds
    ]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{widths[0]}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*head), *(fmt.format(*r) for r in rows)]


def _pnl_lines(p: PnlSummary) -> list[str]:
    delta = p.net_pnl_b - p.net_pnl_a
    line = (
        f"closed trades A {p.trades_a:,}, B {p.trades_b:,}; net PnL A {p.net_pnl_a:,.2f}, "
        f"B {p.net_pnl_b:,.2f} (B - A {delta:+,.2f}); fees A {p.fees_a:,.2f}, B {p.fees_b:,.2f}"
    )
    lines = [line]
    if p.trades_with_other_pnl:
        lines.append(f"{p.trades_with_other_pnl:,} trade(s) in both runs closed with another PnL")
    return lines


def to_json(diff: RunDiff, limit: int = 100) -> dict[str, Any]:
    """The machine report (``--json``): verdict, counts, PnL, settings, divergences."""

    def side(row: DecisionRow | None) -> dict[str, Any] | None:
        return None if row is None else row.to_json()

    return {
        "identical": diff.identical,
        "a": diff.a_label,
        "b": diff.b_label,
        "notes": list(diff.notes),
        "settings": [{"name": c.name, "a": c.a, "b": c.b} for c in diff.settings],
        "counts": [
            {
                "kind": k.kind.value,
                "a": k.a,
                "b": k.b,
                "same": k.same,
                "changed": k.changed,
                "only_a": k.only_a,
                "only_b": k.only_b,
            }
            for k in diff.kinds
        ],
        "pnl": {
            "trades_a": diff.pnl.trades_a,
            "trades_b": diff.pnl.trades_b,
            "net_pnl_a": diff.pnl.net_pnl_a,
            "net_pnl_b": diff.pnl.net_pnl_b,
            "fees_a": diff.pnl.fees_a,
            "fees_b": diff.pnl.fees_b,
            "trades_with_other_pnl": diff.pnl.trades_with_other_pnl,
        },
        "divergences_total": len(diff.divergences),
        "divergences": [
            {
                "kind": d.kind.value,
                "id": d.id,
                "status": d.status,
                "changes": [{"name": c.name, "a": c.a, "b": c.b} for c in d.changes],
                "a": side(d.a),
                "b": side(d.b),
            }
            for d in diff.divergences[:limit]
        ],
    }
