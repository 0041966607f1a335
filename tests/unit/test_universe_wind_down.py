"""Wind-down of a symbol that left the live universe, through the whole topology.

The risk stage reads ``universe.events``: after a LEFT it refuses the symbol's new entries
(``LEFT_UNIVERSE``) while its open positions run to their exits; a JOINED allows it again. The
in-memory topology (real handlers, codecs and models, crashes anywhere: tests/unit/memory_log.py)
must give the in-process runner's trades for the same universe events, so the rule's state lives
in risk's stored state and a restart keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from streams.adapters.market_files import parse_time_bound
from streams.contracts.base import AvroRecord
from streams.contracts.records import OrderRejected, UniverseChanged
from streams.demo import SAMPLE_DATA
from streams.report import ReportBuilder, trades_sha256
from streams.topics import Topic
from streams.vocabulary import RiskRule, UniverseChangeKind, UniverseVerdict
from tests.unit.memory_log import run_topology
from tests.unit.test_durable_state import SYMBOLS, WINDOW, settings

LEFT_AT = parse_time_bound("2025-05-21T17:23")
JOINED_AT = parse_time_bound("2025-05-21T23:00")


def changes() -> list[UniverseChanged]:
    """SOLUSDT leaves at 17:23 and joins again at 23:00 (BTCUSDT stays)."""

    def change(kind: UniverseChangeKind, at: int, verdict: UniverseVerdict) -> UniverseChanged:
        return UniverseChanged(
            event_id=f"universe:{at}:SOLUSDT", symbol="SOLUSDT", event_time_ms=at, change=kind,
            verdict=verdict, universe_size=1, reason=f"{verdict.value}: test",
        )  # fmt: skip

    return [
        change(UniverseChangeKind.LEFT, LEFT_AT, UniverseVerdict.BELOW_TOP_N),
        change(UniverseChangeKind.JOINED, JOINED_AT, UniverseVerdict.SELECTED),
    ]


@dataclass
class Run:
    builder: ReportBuilder
    rejections: list[OrderRejected] = field(default_factory=list)

    def __call__(self, record: AvroRecord) -> None:
        self.builder.add(record)
        if isinstance(record, OrderRejected):
            self.rejections.append(record)


def runner(universe: list[UniverseChanged]) -> Run:
    from models.scorer import EnsembleScorer
    from streams.runner import run

    s = settings()
    sink = Run(ReportBuilder(s.risk.starting_equity_usd))
    run(SAMPLE_DATA, EnsembleScorer.from_registry(s.registry_dir), sink, s,
        symbols=SYMBOLS, window=WINDOW, universe=universe)  # fmt: skip
    return sink


@pytest.fixture(scope="module")
def wound_down() -> Run:
    return runner(changes())


def test_the_runner_refuses_entries_only_while_the_symbol_is_out(wound_down: Run) -> None:
    plain = runner([])
    assert trades_sha256(plain.builder.trades) != trades_sha256(wound_down.builder.trades)
    refused = [r for r in wound_down.rejections if r.rule is RiskRule.LEFT_UNIVERSE]
    assert refused, "SOLUSDT must have wanted entries while it was out"
    assert {r.symbol for r in refused} == {"SOLUSDT"}
    assert all(LEFT_AT <= r.event_time_ms < JOINED_AT for r in refused)
    assert all("winding down: BELOW_TOP_N" in r.detail for r in refused)
    sol = [t for t in wound_down.builder.trades if t.symbol == "SOLUSDT"]
    # the position entered on the decision before the leave ran to its exit in the wind-down
    assert [t.exit_reason.value for t in sol if t.opened_ms <= LEFT_AT < t.event_time_ms] == [
        "STOP_LOSS"
    ]
    assert not [t for t in sol if LEFT_AT < t.opened_ms <= JOINED_AT]  # no entry while out
    assert [t for t in sol if t.opened_ms > JOINED_AT]  # and entries again once it joined


@pytest.mark.parametrize("crash_chance", [0.0, 1 / 8])
def test_the_topology_with_crashes_gives_the_runners_trades(
    wound_down: Run, crash_chance: float
) -> None:
    log, crashes = run_topology(
        settings(), SAMPLE_DATA, WINDOW, symbols=SYMBOLS, crash_chance=crash_chance,
        universe=changes(),
    )  # fmt: skip
    assert (crashes > 0) == (crash_chance > 0)
    assert trades_sha256(list(log.records(Topic.TRADES_CLOSED))) == trades_sha256(
        wound_down.builder.trades
    )
    rules = [r.rule for r in log.records(Topic.RISK_REJECTIONS)]
    assert RiskRule.LEFT_UNIVERSE in rules
