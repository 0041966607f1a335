"""Stage state survives crashes: the whole topology over an in-memory log, killed again and again.

Real handlers, codecs and models (:mod:`tests.unit.memory_log`); Kafka's rules: a restarted
worker resumes from the committed offsets with the state its last flush stored, and what it sent
before the crash stays in the log. However often it crashes, the trades are the in-process
runner's, and readers that keep one copy per ``qt-seq`` see every record exactly once.
"""

from __future__ import annotations

from collections import Counter

import pytest

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.agents.base import Decoder, Emitter
from streams.agents.dispatch import dispatch
from streams.agents.durable import (
    DictStore,
    Instance,
    StateFormatError,
    decode_state,
    encode_state,
)
from streams.agents.features import FeaturesHandler
from streams.config import Settings
from streams.contracts.codec import topic_codec
from streams.contracts.records import TradeClosed, TradingModeChanged
from streams.demo import SAMPLE_DATA
from streams.ordering import SOURCE_HEADER, WATERMARK_HEADER, Redeliveries
from streams.report import ReportBuilder, trades_sha256
from streams.topics import Topic
from streams.vocabulary import TradingMode
from tests.unit.memory_log import run_topology

#: The golden test's day for two symbols (2,880 bars, 14 trades in the runner).
SYMBOLS = ("BTCUSDT", "SOLUSDT")
WINDOW = TimeWindow(parse_time_bound("2025-05-21T00:00"), parse_time_bound("2025-05-22T00:00"))


def settings() -> Settings:
    return Settings(
        partitions=2,
        feedback_lag_ms=300_000,
        supervisor={"gate": "confidence", "min_confidence": 0.5},
    )


def halt_window() -> list:  # type: ignore[type-arg]
    """An operator HALT 17:00-17:58, after two trades closed (it changes the runner's trades)."""
    from streams.contracts.records import CommandKind, ControlCommand

    def command(kind: CommandKind, at: str) -> ControlCommand:
        t = parse_time_bound(at)
        return ControlCommand(command_id=f"{kind.value}-{t}", command=kind, event_time_ms=t,
                              issued_at_ms=t, issued_by="test", reason="test")  # fmt: skip

    return [
        command(CommandKind.HALT, "2025-05-21T17:00"),
        command(CommandKind.RESUME, "2025-05-21T17:58"),
    ]


def runner_records(commands: list, model_events: list | None = None) -> list:  # type: ignore[type-arg]
    """Every record the in-process runner sends for the window."""
    from models.scorer import EnsembleScorer
    from streams.runner import run

    s = settings()
    records: list = []  # type: ignore[type-arg]
    run(SAMPLE_DATA, EnsembleScorer.from_registry(s.registry_dir), records.append, s,
        symbols=SYMBOLS, window=WINDOW, commands=commands,
        model_events=model_events or ())  # fmt: skip
    return records


def runner_hash(commands: list, model_events: list | None = None) -> str:  # type: ignore[type-arg]
    return trades_sha256([r for r in runner_records(commands, model_events)
                          if isinstance(r, TradeClosed)])  # fmt: skip


@pytest.fixture(scope="module")
def runner_trades() -> str:
    from models.scorer import EnsembleScorer
    from streams.runner import run

    s = settings()
    builder = ReportBuilder(s.risk.starting_equity_usd)
    run(
        SAMPLE_DATA, EnsembleScorer.from_registry(s.registry_dir), builder, s,
        symbols=SYMBOLS, window=WINDOW,
    )  # fmt: skip
    assert builder.trades, "the window must trade for this test to bite"
    return trades_sha256(builder.trades)


def test_a_halt_scheduled_ahead_holds_through_crashes_and_changes_trades_as_the_runner(
    runner_trades: str,
) -> None:
    commands = halt_window()
    records = runner_records(commands)
    expected = trades_sha256([r for r in records if isinstance(r, TradeClosed)])
    assert expected != runner_trades, "the HALT must change the trades for this test to bite"
    log, crashes = run_topology(settings(), SAMPLE_DATA, WINDOW, symbols=SYMBOLS,
                                crash_chance=1 / 8, commands=commands)  # fmt: skip
    assert crashes > 0
    assert trades_sha256(list(log.records(Topic.TRADES_CLOSED))) == expected
    # the mode changes are events, the same in both: HALT at the command, NORMAL at the RESUME
    modes = [r for r in records if isinstance(r, TradingModeChanged)]
    assert [(m.mode, m.cause) for m in modes] == [
        (TradingMode.HALT, commands[0].command_id), (TradingMode.NORMAL, commands[1].command_id)
    ]  # fmt: skip
    assert list(log.records(Topic.POLICY_MODES)) == modes


def test_a_rollback_scheduled_ahead_swaps_every_partition_at_its_event_time_through_crashes(
    runner_trades: str,
) -> None:
    """The record on ``models.events`` reaches both partitions' ensemble instances (through the
    swaps relay and ``models.swaps``), survives crashes as their pending state, and swaps at the
    same row as the in-process runner's ensemble does."""
    from models.promotion import rollback_event
    from streams.contracts.records import ModelEventRecorded
    from streams.stages import partition_for
    from streams.vocabulary import ModelEventKind

    at = parse_time_bound("2025-05-21T17:00")
    events = [rollback_event("xgboost", "v1", "v2", at, "test")]
    expected = runner_hash([], events)
    assert expected != runner_trades, "the swap must change the trades for this test to bite"
    log, crashes = run_topology(settings(), SAMPLE_DATA, WINDOW, symbols=SYMBOLS,
                                crash_chance=1 / 8, model_events=events)  # fmt: skip
    assert crashes > 0
    assert trades_sha256(list(log.records(Topic.TRADES_CLOSED))) == expected
    served: dict[tuple[int, bool], set[str]] = {}
    for s in log.records(Topic.SIGNALS_ENSEMBLE):
        key = (partition_for(s.symbol, 2), s.event_time_ms >= at)
        served.setdefault(key, set()).update(v.version for v in s.votes if v.model == "xgboost")
    assert served == {(0, False): {"v2"}, (0, True): {"v1"}, (1, False): {"v2"}, (1, True): {"v1"}}
    loaded = [e for e in log.records(Topic.MODELS_EVENTS)
              if isinstance(e, ModelEventRecorded) and e.kind is ModelEventKind.LOADED]  # fmt: skip
    assert sorted((e.event_id[-2:], e.event_time_ms) for e in loaded) == [(":0", at), (":1", at)]


def test_drift_sizes_the_same_decisions_defensive_as_the_runner_through_crashes(
    runner_trades: str,
) -> None:
    """Model health in the policy layer is data: each partition's ensemble instance stamps its
    signals with the drift level it measured (kept in its state across crashes), and the risk
    stage sizes those decisions DEFENSIVE exactly where the runner's per-partition monitors do.
    Short windows and low thresholds make one symbol per partition drift within the day."""
    from models.scorer import EnsembleScorer
    from streams.config import DriftConfig
    from streams.runner import run
    from streams.vocabulary import ModelDrift, TradingMode

    base = settings()
    touchy = base.model_copy(update={
        "drift": DriftConfig(window_ms=2 * 3_600_000, slot_ms=900_000, min_samples=60,
                             moderate_psi=0.02, significant_psi=0.05),
        "risk": base.risk.model_copy(update={"defensive_on_drift": True}),
    })  # fmt: skip
    builder = ReportBuilder(touchy.risk.starting_equity_usd)
    run(SAMPLE_DATA, EnsembleScorer.from_registry(touchy.registry_dir), builder, touchy,
        symbols=SYMBOLS, window=WINDOW)  # fmt: skip
    expected = trades_sha256(builder.trades)
    assert expected != runner_trades, "drift must change the trades for this test to bite"
    log, crashes = run_topology(touchy, SAMPLE_DATA, WINDOW, symbols=SYMBOLS,
                                crash_chance=1 / 8)  # fmt: skip
    assert crashes > 0
    assert trades_sha256(list(log.records(Topic.TRADES_CLOSED))) == expected
    levels = {s.model_drift for s in log.records(Topic.SIGNALS_ENSEMBLE)}
    assert ModelDrift.SIGNIFICANT in levels and ModelDrift.STABLE in levels
    modes = [a.trading_mode for a in log.records(Topic.ORDERS_APPROVED)]
    assert TradingMode.DEFENSIVE in modes


def ids(log, topic: Topic, field: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [getattr(r, field) for r in log.records(topic)]


@pytest.mark.parametrize("crash_chance", [0.0, 1 / 40, 1 / 8])
def test_crashes_anywhere_give_the_runners_trades_and_one_copy_of_each_record(
    runner_trades: str, crash_chance: float
) -> None:
    log, crashes = run_topology(
        settings(), SAMPLE_DATA, WINDOW, symbols=SYMBOLS, crash_chance=crash_chance
    )
    assert (crashes > 0) == (crash_chance > 0)
    trades = list(log.records(Topic.TRADES_CLOSED))
    assert trades_sha256(trades) == runner_trades
    for topic, field in [
        (Topic.ORDERS_APPROVED, "order_id"),
        (Topic.EXECUTION_FILLS, "fill_id"),
        (Topic.TRADES_CLOSED, "trade_id"),
        (Topic.DECISIONS_SIZED, "decision_id"),
    ]:
        seen = ids(log, topic, field)
        assert seen and len(seen) == len(set(seen)), f"{topic}: {Counter(seen).most_common(2)}"
    if crashes:
        # The crashes really re-sent records: the readers' dedupe is what kept one copy.
        copies = log.count(Topic.MARKET_FEATURES) - len(list(log.records(Topic.MARKET_FEATURES)))
        assert copies > 0


def test_redeliveries_keep_one_copy_per_source_and_pass_foreign_records() -> None:
    seen = Redeliveries()
    assert seen.fresh("t", 0, b"features/0", b"1")
    assert seen.fresh("t", 0, b"features/0", b"2")
    assert not seen.fresh("t", 0, b"features/0", b"2")  # re-sent after a crash
    assert not seen.fresh("t", 0, b"features/0", b"1")
    assert seen.fresh("t", 0, b"features/1", b"1")  # another source numbers on its own
    assert seen.fresh("t", 1, b"features/0", b"1")  # and so does another partition
    assert seen.fresh("t", 0, b"another-client", None)  # no number: always new
    assert seen.fresh("t", 0, b"x", b"soon")  # not a number: the reader judges it


def test_a_stored_state_of_another_format_or_stage_is_refused_with_the_reason() -> None:
    blob = encode_state(Instance(FeaturesHandler()).to_document())
    assert decode_state(blob)["stage"] == "features"
    with pytest.raises(StateFormatError, match="unreadable"):
        decode_state(b"not zlib")
    with pytest.raises(StateFormatError, match="format 99"):
        decode_state(encode_state({"format": 99}))
    from streams.agents.exits import ExitPlannerHandler
    from streams.stages import ExitPlannerStage

    exits = ExitPlannerHandler(ExitPlannerStage.from_settings(settings()))
    with pytest.raises(StateFormatError, match="offered to 'exits'"):
        Instance.from_document(exits, decode_state(blob))
    assert DictStore().load(3) is None


def test_a_document_is_stored_in_parts_and_a_torn_write_keeps_the_previous_one() -> None:
    from streams.agents.durable import assemble_state, state_head_key, state_parts

    store = DictStore(part_bytes=10)
    store.save(1, b"first document, 33 bytes long...")
    assert store.load(1) == b"first document, 33 bytes long..."
    # A crash after the new parts but before the new head: the old head reads the old slot.
    torn = state_parts(1, b"second, never finished", store.data[state_head_key(1)], 10)
    store.data.update(torn[:-1])
    assert store.load(1) == b"first document, 33 bytes long..."
    store.data.update(torn[-1:])
    assert store.load(1) == b"second, never finished"
    store.save(1, b"third")
    assert store.load(1) == b"third" and store.load(0) is None
    del store.data[b"1/0/0"]
    with pytest.raises(StateFormatError, match="missing parts"):
        assemble_state(1, store.data.get)


def test_replayed_ticks_name_their_writer_so_merges_move_on_without_watermarks() -> None:
    from streams.agents.execution import ExecutionHandler
    from streams.agents.merging import source_id
    from streams.stages import ExecutionStage
    from streams.topology import INGEST
    from tests.unit.memory_log import MemoryLog, replay

    log = MemoryLog(partitions=1)
    replay(log, SAMPLE_DATA, TimeWindow(WINDOW.start_ms, WINDOW.start_ms + 30 * 60_000),
           ("BTCUSDT",))  # fmt: skip
    ticks = [e for e in log.log[("market.ticks", 0)] if WATERMARK_HEADER not in e.headers]
    assert ticks and all(e.headers[SOURCE_HEADER] == INGEST.encode() for e in ticks)
    # Without the replay's explicit watermarks, the ticks alone advance the venue's merge.
    venue = ExecutionHandler(ExecutionStage.from_settings(settings()), partitions=1)
    dispatch(venue, Decoder(""), ticks, Emitter("execution"))
    merge = venue.merges[0].to_dict()
    assert merge["watermarks"][source_id("market.ticks", 0, INGEST)] == ticks_time(ticks[-1])


def ticks_time(event) -> int:  # type: ignore[no-untyped-def]
    return int(topic_codec(Topic.MARKET_TICKS).decode_record(event.value).event_time_ms)


def test_an_operator_command_ahead_of_the_stream_does_not_make_earlier_trades_late() -> None:
    """A HALT stamped hours ahead (sent before the data) must not floor risk's feedback."""
    from streams.agents.risk import RiskHandler
    from streams.config import RiskLimits
    from streams.contracts.records import CommandKind, ControlCommand
    from streams.stages import RiskStage
    from tests.unit.stages.factories import T0, trade_closed

    risk = RiskHandler(RiskStage(RiskLimits()), partitions=1, feedback_lag_ms=300_000)
    halt = ControlCommand(
        command_id="halt", command=CommandKind.HALT, event_time_ms=T0 + 10 * 3_600_000,
        issued_at_ms=T0, issued_by="test", reason="ahead of the stream",
    )  # fmt: skip
    out = Emitter("risk")
    risk.on_record("control.commands", 0, "?", halt, out)
    trade = trade_closed("ETHUSDT:1:decision", -10.0, T0)  # closes long before the HALT
    risk.on_record("trades.closed", 0, "execution/0", trade, out)  # raised OrderingError before
    buffered = [b[4][0] for b in risk.merges[0].to_dict(lambda item: item)["buffer"]]
    assert buffered == ["trades.closed", "control.commands"]


def test_dead_letters_of_two_instances_are_numbered_under_their_own_sources() -> None:
    """Two instances' dead letters share one topic; a shared source would make one a 'copy'."""
    from streams.agents.base import RawEvent
    from streams.agents.durable import StageRuntime
    from streams.agents.features import FeaturesHandler
    from streams.topology import stage_spec

    runtime = StageRuntime(stage_spec("features"), FeaturesHandler, DictStore(), Decoder(""))
    bad = [RawEvent("market.ticks", p, 0, b"BTCUSDT", b"not avro", {}) for p in (0, 1)]
    letters = [i for out in runtime.handle(bad) for i in out.items if i.value is not None]
    assert {i.source for i in letters} == {"features/0", "features/1"}
    seen = Redeliveries()
    kept = [
        i for i in letters if seen.fresh("deadletter", 0, i.source.encode(), str(i.seq).encode())
    ]
    assert len(kept) == 2
