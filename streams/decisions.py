"""A run's decision log: every signal, veto, size, risk verdict, order, fill and closed trade.

``quantum-trader diff`` compares two runs decision by decision, so a run folder keeps, beside
``report.json`` and ``trades.csv``, one compact row per step of every decision
(``decisions.jsonl.gz``): its kind (:class:`~streams.vocabulary.DecisionKind`), its
deterministic id (``signal_id``, ``decision_id``, ``order_id``, ``fill_id``, ``trade_id``), its
event time and symbol, the decision it belongs to, the W3C trace id it travelled with (Kafka
runs only) and the values that make it what it is, flattened to dotted names
(``votes.lightgbm.confidence``). Feature vectors and free text that repeat other fields are left
out; every number is kept exactly (JSON writes floats with ``repr``).

Rows are sorted by ``(event_time_ms, kind in pipeline order, id)``, so the file of a run is
byte-identical whichever path (in-process runner or Kafka topology) produced it, apart from the
trace ids, which :func:`decisions_sha256` leaves out.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from pathlib import Path
from typing import Any, Final

from streams.contracts.base import AvroRecord
from streams.contracts.records import (
    DecisionSized,
    FillExecuted,
    OrderApproved,
    OrderPlanned,
    OrderRejected,
    SignalScored,
    SignalSupervised,
    TradeClosed,
)
from streams.ids import decision_id as decision_id_of
from streams.topics import Topic
from streams.vocabulary import DecisionKind, ModelDrift, TradingMode

DECISIONS_FILE: Final = "decisions.jsonl.gz"
#: First line of the file: what it is and its layout version.
FILE_HEADER: Final = {"format": "quantum-trader decisions", "version": 1}

#: The topics a decision log is made of (what `diff` reads from a topic prefix).
DECISION_TOPICS: Final = (
    Topic.SIGNALS_ENSEMBLE,
    Topic.SIGNALS_SUPERVISED,
    Topic.DECISIONS_SIZED,
    Topic.ORDERS_APPROVED,
    Topic.RISK_REJECTIONS,
    Topic.ORDERS_INTENTS,
    Topic.EXECUTION_FILLS,
    Topic.TRADES_CLOSED,
)

Scalar = str | int | float | bool | None


class DecisionLogError(Exception):
    """A decision log cannot be read (missing, not gzip, not our format)."""


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One step of one decision, as the run made it."""

    kind: DecisionKind
    id: str
    event_time_ms: int
    symbol: str
    decision_id: str
    values: Mapping[str, Scalar | list[Scalar]] = field(default_factory=dict)
    trace_id: str | None = None

    @property
    def sort_key(self) -> tuple[int, int, str]:
        """Position in the log: event time, then pipeline step, then id."""
        return (self.event_time_ms, self.kind.rank, self.id)

    def to_json(self, with_trace: bool = True) -> dict[str, Any]:
        """The row as one JSON object (the file's line)."""
        out: dict[str, Any] = {
            "kind": self.kind.value, "id": self.id, "event_time_ms": self.event_time_ms,
            "symbol": self.symbol, "decision_id": self.decision_id, "values": dict(self.values),
        }  # fmt: skip
        if with_trace and self.trace_id is not None:
            out["trace_id"] = self.trace_id
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DecisionRow:
        """Inverse of :meth:`to_json`; raises ``KeyError``/``ValueError`` on a malformed row."""
        return cls(
            kind=DecisionKind(data["kind"]),
            id=str(data["id"]),
            event_time_ms=int(data["event_time_ms"]),
            symbol=str(data["symbol"]),
            decision_id=str(data["decision_id"]),
            values=dict(data["values"]),
            trace_id=data.get("trace_id"),
        )


# ------------------------------------------------------------------ records -> rows


def _versions(prefix: str, versions: Mapping[str, str]) -> dict[str, Scalar]:
    return {f"{prefix}.{model}": version for model, version in sorted(versions.items())}


def _signal(r: SignalScored) -> dict[str, Any]:
    values: dict[str, Any] = {
        "action": r.action.value, "confidence": r.confidence,
        "probabilities": list(r.probabilities),
    }  # fmt: skip
    for vote in sorted(r.votes, key=lambda v: v.model):
        base = f"votes.{vote.model}"
        values |= {f"{base}.version": vote.version, f"{base}.action": vote.action.value,
                   f"{base}.confidence": vote.confidence}  # fmt: skip
    return values | _unless_default("model_drift", r.model_drift, ModelDrift.STABLE)


def _unless_default(key: str, value: StrEnum, default: StrEnum) -> dict[str, Any]:
    """``{key: value}`` only when it is not the contract's default: a run where nothing
    drifted or turned defensive keeps the rows (and the hash) it had before these fields."""
    return {} if value is default else {key: value.value}


def _veto(r: SignalSupervised) -> dict[str, Any]:
    values: dict[str, Any] = {
        "vetoed": r.vetoed, "final_action": r.final_action.value,
        "rules": [v.rule.value for v in r.veto_reasons],
    }  # fmt: skip
    for v in r.veto_reasons:
        values |= {f"veto.{v.rule.value}.observed": v.observed,
                   f"veto.{v.rule.value}.threshold": v.threshold}  # fmt: skip
    return values | _unless_zero("health_veto_share", r.health_veto_share)


def _unless_zero(key: str, value: float) -> dict[str, Any]:
    """``{key: value}`` only when it is not the contract's default 0 (as above)."""
    return {key: value} if value else {}


def _size(r: DecisionSized) -> dict[str, Any]:
    return {
        "side": r.side.value, "confidence": r.confidence, "price": r.price,
        "atr_pct": r.atr_pct, "regime": r.regime.value, "strategy": r.strategy,
        "size_multiplier": r.size_multiplier, "risk_fraction": r.risk_fraction,
        "margin_usd": r.margin_usd, **_versions("model_versions", r.model_versions),
        **_unless_default("model_drift", r.model_drift, ModelDrift.STABLE),
        **_unless_zero("health_veto_share", r.health_veto_share),
    }  # fmt: skip


def _approved(r: OrderApproved) -> dict[str, Any]:
    return {
        "verdict": "APPROVED", "order_id": r.order_id,
        "approved_margin_usd": r.approved_margin_usd, "max_leverage": r.max_leverage,
        "equity_usd": r.equity_usd, "open_positions": r.open_positions,
        **_unless_default("trading_mode", r.trading_mode, TradingMode.NORMAL),
        **({"mode_reasons": list(r.mode_reasons)} if r.mode_reasons else {}),
    }  # fmt: skip


def _rejected(r: OrderRejected) -> dict[str, Any]:
    return {
        "verdict": "REJECTED", "rule": r.rule.value, "detail": r.detail,
        "observed": r.observed, "limit": r.limit,
    }  # fmt: skip


def _order(r: OrderPlanned) -> dict[str, Any]:
    values: dict[str, Any] = {
        "side": r.side.value, "entry_type": r.entry_type.value, "entry_price": r.entry_price,
        "qty": r.qty, "leverage": r.leverage, "margin_usd": r.margin_usd,
    }  # fmt: skip
    for leg in r.legs:
        base = f"legs.{leg.leg_id.removeprefix(r.order_id).lstrip(':')}"
        values |= {f"{base}.kind": leg.kind.value, f"{base}.price": leg.price,
                   f"{base}.fraction": leg.fraction, f"{base}.callback": leg.callback}  # fmt: skip
    return values


def _fill(r: FillExecuted) -> dict[str, Any]:
    return {
        "order_id": r.order_id, "leg_kind": r.leg_kind.value, "side": r.side.value,
        "qty": r.qty, "price": r.price, "fee": r.fee, "is_partial": r.is_partial,
        "liquidity": r.liquidity.value, "slippage_bps": r.slippage_bps,
    }  # fmt: skip


def _trade(r: TradeClosed) -> dict[str, Any]:
    return {
        "side": r.side.value, "opened_ms": r.opened_ms, "qty": r.qty,
        "entry_price": r.entry_price, "exit_price": r.exit_price, "leverage": r.leverage,
        "margin_usd": r.margin_usd, "gross_pnl": r.gross_pnl, "fees": r.fees,
        "net_pnl": r.net_pnl, "return_pct": r.return_pct, "exit_reason": r.exit_reason.value,
        "strategy": r.strategy, "regime": r.regime.value, "size_multiplier": r.size_multiplier,
        "confidence": r.confidence, **_versions("model_versions", r.model_versions),
    }  # fmt: skip


def _decision_of_signal(r: SignalScored | SignalSupervised) -> str:
    """The decision a signal would have led to (``signal_id:decision``), made or not."""
    return decision_id_of(r.signal_id)


@dataclass(frozen=True, slots=True)
class _Step:
    """How one record type becomes a row: its step, its id, its decision, its values."""

    kind: DecisionKind
    id_of: Callable[[Any], str]
    decision_of: Callable[[Any], str]
    values_of: Callable[[Any], dict[str, Any]]


_by_decision = attrgetter("decision_id")
_STEPS: Mapping[type[AvroRecord], _Step] = {
    SignalScored: _Step(DecisionKind.SIGNAL, attrgetter("signal_id"), _decision_of_signal, _signal),
    SignalSupervised: _Step(DecisionKind.VETO, attrgetter("signal_id"), _decision_of_signal, _veto),
    DecisionSized: _Step(DecisionKind.SIZE, _by_decision, _by_decision, _size),
    OrderApproved: _Step(DecisionKind.VERDICT, _by_decision, _by_decision, _approved),
    OrderRejected: _Step(DecisionKind.VERDICT, _by_decision, _by_decision, _rejected),
    OrderPlanned: _Step(DecisionKind.ORDER, attrgetter("order_id"), _by_decision, _order),
    FillExecuted: _Step(DecisionKind.FILL, attrgetter("fill_id"), _by_decision, _fill),
    TradeClosed: _Step(DecisionKind.TRADE, attrgetter("trade_id"), _by_decision, _trade),
}


def decision_row(record: AvroRecord, trace_id: str | None = None) -> DecisionRow | None:
    """The log row of ``record``; ``None`` for records that are no step of a decision."""
    step = _STEPS.get(type(record))
    if step is None:
        return None
    r: Any = record
    return DecisionRow(step.kind, step.id_of(r), r.event_time_ms, r.symbol, step.decision_of(r),
                       step.values_of(r), trace_id)  # fmt: skip


def trace_id_of(headers: Iterable[tuple[str, bytes | str | None]] | None) -> str | None:
    """The W3C trace id in a Kafka record's ``traceparent`` header (``None`` if absent)."""
    for key, value in headers or ():
        if key != "traceparent" or value is None:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        parts = text.split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            return parts[1]
    return None


# ------------------------------------------------------------------ the file


def canonical(rows: Iterable[DecisionRow]) -> list[DecisionRow]:
    """``rows`` in log order."""
    return sorted(rows, key=lambda r: r.sort_key)


def _line(row: DecisionRow, with_trace: bool = True) -> str:
    return json.dumps(row.to_json(with_trace), sort_keys=True, separators=(",", ":"))


def decisions_sha256(rows: Iterable[DecisionRow]) -> str:
    """sha256 of the log's rows without trace ids: equal exactly when two runs decided alike."""
    digest = hashlib.sha256()
    for row in canonical(rows):
        digest.update(_line(row, with_trace=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def write_decisions(path: Path, rows: Iterable[DecisionRow]) -> int:
    """Write the log (gzip, fixed mtime so equal logs are equal files); returns the row count."""
    ordered = canonical(rows)
    text = io.StringIO()
    text.write(json.dumps(FILE_HEADER, sort_keys=True) + "\n")
    for row in ordered:
        text.write(_line(row) + "\n")
    with path.open("wb") as raw, gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as gz:
        gz.write(text.getvalue().encode("utf-8"))
    return len(ordered)


def read_decisions(path: Path) -> Iterator[DecisionRow]:
    """The rows of a log written by :func:`write_decisions`; clear errors for anything else."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            header = handle.readline()
            if _json(header, path, 1) != FILE_HEADER:
                raise DecisionLogError(f"{path}: not a decision log (first line {header[:80]!r})")
            for number, line in enumerate(handle, start=2):
                try:
                    yield DecisionRow.from_json(_json(line, path, number))
                except (KeyError, ValueError, TypeError) as exc:
                    raise DecisionLogError(f"{path}, line {number}: malformed row ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise DecisionLogError(f"cannot read {path}: {exc}") from exc


def _json(line: str, path: Path, number: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DecisionLogError(f"{path}, line {number}: not JSON ({exc.msg})") from exc


def rows_of(records: Sequence[tuple[AvroRecord, str | None]]) -> list[DecisionRow]:
    """The rows of ``(record, trace id)`` pairs, records that are no decision step skipped."""
    return [row for record, trace in records if (row := decision_row(record, trace)) is not None]


# ------------------------------------------------------------------ where a run's log comes from


@dataclass(frozen=True)
class RunLog:
    """One side of a comparison: its rows and what is known about the run."""

    label: str
    rows: list[DecisionRow]
    config: Mapping[str, Any] | None = None  # report.json's ``config`` (run folders)
    trace_file: Path | None = None  # the run's span file, when it has one
    complete: bool = True  # False: only closed trades were available (an older run folder)


def load_run_folder(run_dir: Path) -> RunLog:
    """The log of a run folder; an older folder without one yields its closed trades only,
    from ``trades.csv``."""
    from streams.report import REPORT_FILE, TRADES_FILE, ReportError, load_report, read_trades_csv

    if not (run_dir / REPORT_FILE).is_file():
        raise DecisionLogError(f"{run_dir} is not a run folder (no {REPORT_FILE})")
    try:
        report = load_report(run_dir)
    except ReportError as exc:
        raise DecisionLogError(str(exc)) from exc
    traces = run_dir / "traces.jsonl"
    trace_file = traces if traces.is_file() else None
    config = report.get("config")
    if (run_dir / DECISIONS_FILE).is_file():
        rows = list(read_decisions(run_dir / DECISIONS_FILE))
        return RunLog(str(run_dir), rows, config, trace_file)
    try:
        trades = read_trades_csv(run_dir / TRADES_FILE)
    except ReportError as exc:
        raise DecisionLogError(str(exc)) from exc
    return RunLog(str(run_dir), [trade_row_of_csv(t) for t in trades], config, trace_file, False)


def trade_row_of_csv(row: Mapping[str, str]) -> DecisionRow:
    """A trade row from a ``trades.csv`` line (values as written: floats in ``repr``)."""
    skip = {"trade_id", "symbol", "event_time_ms"}
    values: dict[str, Scalar | list[Scalar]] = {k: v for k, v in row.items() if k not in skip}
    trade_id = row["trade_id"]  # a trade is named after the decision that opened it
    return DecisionRow(
        DecisionKind.TRADE, trade_id, int(row["event_time_ms"]), row["symbol"], trade_id, values
    )


def trade_row_as_csv(row: DecisionRow) -> DecisionRow:
    """A trade row with its values as ``trades.csv`` writes them (to compare with an older run)."""
    versions = sorted(
        (k.removeprefix("model_versions."), v) for k, v in row.values.items()
        if k.startswith("model_versions.")
    )  # fmt: skip
    values: dict[str, Scalar | list[Scalar]] = {
        k: repr(v) if isinstance(v, float) else str(v)
        for k, v in row.values.items()
        if not k.startswith("model_versions.")
    }
    values["model_versions"] = ";".join(f"{m}={v}" for m, v in versions)
    # trades.csv has no decision id: both sides take the trade's, as trade_row_of_csv does
    return DecisionRow(row.kind, row.id, row.event_time_ms, row.symbol, row.id, values,
                       row.trace_id)  # fmt: skip


def read_topic_prefix(bootstrap: str, prefix: str) -> RunLog:
    """The log of a run whose topics live under ``prefix`` on a broker (records read once)."""
    from confluent_kafka.admin import AdminClient

    from streams import kafka_io
    from streams.contracts.codec import topic_codec
    from streams.contracts.errors import ContractError
    from streams.demo import topic_messages
    from streams.topics import topic_name

    admin = AdminClient({"bootstrap.servers": bootstrap})
    rows: list[DecisionRow] = []
    undecodable = 0
    for base in DECISION_TOPICS:
        name = topic_name(base, prefix)
        partitions = kafka_io.topic_partitions(admin, bootstrap, name, timeout_s=15)
        codec = topic_codec(base)
        for msg in topic_messages(bootstrap, name, len(partitions)):
            try:
                record = codec.decode_record(msg.value() or b"")
            except ContractError:
                undecodable += 1
                continue
            row = decision_row(record, trace_id_of(msg.headers()))
            if row is not None:
                rows.append(row)
    label = f"topics '{prefix}*' on {bootstrap}"
    if undecodable:
        label += f" ({undecodable} undecodable records skipped)"
    return RunLog(label, canonical(rows))
