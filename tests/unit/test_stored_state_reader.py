"""Reading stage state back from its changelog, on documents the real handlers stored.

The whole topology runs over the in-memory log (:mod:`tests.unit.memory_log`: real handlers,
codecs and models, real flushes through :class:`~streams.agents.durable.StageRuntime`) with a
store that also keeps every table write in changelog order. Folding those writes with
:class:`~streams.agents.durable.StateChangelog` must give exactly the documents the stages
stored, at the end and at any cut of the log (a reader that catches a flush half-written sees
the previous document, never a torn one), and the dashboard's views built from them must be the
strategy stage's Q-tables and bandit arms and the risk stage's portfolio, value for value.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.agents.durable import (
    DictStore,
    Instance,
    StateChangelog,
    StateFormatError,
    app_name,
    decode_state,
    encode_state,
    state_changelog_topic,
    state_head_key,
    state_parts,
)
from streams.config import Settings
from streams.contracts.records import RewardComputed
from streams.dashboard.model import ReadModel
from streams.demo import SAMPLE_DATA
from streams.stages.portfolio import PortfolioState
from streams.stages.strategy import StrategyState
from streams.topics import Topic
from streams.vocabulary import Learner

SYMBOLS = ("BTCUSDT", "SOLUSDT")
WINDOW = TimeWindow(parse_time_bound("2025-05-21T00:00"), parse_time_bound("2025-05-22T00:00"))


class ChangelogStore(DictStore):
    """A :class:`DictStore` that also keeps its writes in order, per partition: a changelog."""

    def __init__(self, part_bytes: int = 4096) -> None:
        super().__init__(part_bytes)
        self.changelog: dict[int, list[tuple[bytes, bytes]]] = {}
        self.saved: dict[int, list[bytes]] = {}

    def save(self, partition: int, blob: bytes) -> None:
        current = self.data.get(state_head_key(partition))
        writes = state_parts(partition, blob, current, self.part_bytes)
        self.data.update(writes)
        self.changelog.setdefault(partition, []).extend(writes)
        self.saved.setdefault(partition, []).append(blob)


def fold(store: ChangelogStore, cut: dict[int, int] | None = None) -> StateChangelog:
    out = StateChangelog()
    for partition, writes in store.changelog.items():
        end = len(writes) if cut is None else cut[partition]
        for offset, (key, value) in enumerate(writes[:end]):
            out.add(offset, key, value, timestamp_ms=1_000 + offset)
    return out


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.unit import memory_log

    stores: dict[str, ChangelogStore] = {}

    def store(part_bytes: int = 4096) -> ChangelogStore:
        s = ChangelogStore(512)  # small parts: most documents in several
        stores[f"#{len(stores)}"] = s
        return s

    settings = Settings(
        partitions=2,
        feedback_lag_ms=300_000,
        supervisor={"gate": "confidence", "min_confidence": 0.5},
    )
    mp = pytest.MonkeyPatch()
    mp.setattr(memory_log, "DictStore", store)
    try:
        log, _ = memory_log.run_topology(settings, SAMPLE_DATA, WINDOW, symbols=SYMBOLS)
    finally:
        mp.undo()
    from streams.topology import STAGES

    by_stage = dict(zip([s.name for s in STAGES], stores.values(), strict=True))
    return settings, log, by_stage


def test_the_changelog_names_follow_the_faust_app() -> None:
    assert app_name("quantum-trader", "") == "quantum-trader"
    assert app_name("quantum-trader", "demo-1a2b.") == "quantum-trader-demo-1a2b"
    topic = state_changelog_topic("quantum-trader", "demo-1a2b.", "strategy")
    assert topic == "quantum-trader-demo-1a2b-state-strategy-changelog"


def test_folding_the_changelog_gives_every_stages_stored_documents(topology: Any) -> None:
    _settings, _log, stores = topology
    for stage, store in stores.items():
        docs = fold(store).documents()
        assert sorted(docs) == sorted(store.saved), stage
        for partition, doc in docs.items():
            assert doc.document == decode_state(store.load(partition) or b""), stage
            assert doc.document["stage"] == stage
            assert doc.head.offset == len(store.changelog[partition]) - 1  # the last head
            assert doc.head.size_bytes == len(store.saved[partition][-1])
    # the strategy documents are stored in several parts
    assert min(d.head.parts for d in fold(stores["strategy"]).documents().values()) > 1


def test_a_reader_cut_anywhere_sees_a_whole_stored_document(topology: Any) -> None:
    _settings, _log, stores = topology
    store = stores["strategy"]
    rng = random.Random(5)
    for _ in range(40):
        cut = {p: rng.randrange(len(w) + 1) for p, w in store.changelog.items()}
        docs = fold(store, cut).documents()
        for partition, doc in docs.items():
            heads_read = sum(
                1 for key, _v in store.changelog[partition][: cut[partition]] if b"/" not in key
            )
            # exactly the document of the last head read: complete, never a mix of two flushes
            assert encode_state(doc.document) == encode_state(
                decode_state(store.saved[partition][heads_read - 1])
            )


def test_sizes_only_fold_and_a_corrupt_document_is_refused(topology: Any) -> None:
    _settings, _log, stores = topology
    store = stores["features"]
    sizes = StateChangelog(keep_documents=False)
    for offset, (key, value) in enumerate(store.changelog[0]):
        sizes.add(offset, key, value, 5)
    assert sizes.heads()[0].size_bytes == len(store.saved[0][-1])
    assert sizes.heads()[0].written_ms == 5
    with pytest.raises(StateFormatError, match="sizes only"):
        sizes.documents()
    broken = StateChangelog()
    for offset, (key, value) in enumerate(store.changelog[0]):
        broken.add(offset, key, value if b"/" not in key else value[:-1] + b"!")
    with pytest.raises(StateFormatError, match="sha256"):
        broken.documents()


def test_the_learning_view_is_the_strategy_stages_stored_state(topology: Any) -> None:
    settings, log, stores = topology
    model = ReadModel(10_000.0, settings.sizing, settings.selector, settings.risk)
    model.apply_all(log.records(Topic.LEARNING_REWARDS))
    assert model.learning()["source"]["kind"] == "rewards"  # no stored state yet: the rebuild
    for partition, writes in stores["strategy"].changelog.items():
        for offset, (key, value) in enumerate(writes):
            model.apply_state_record("strategy", offset, key, value, 7)
        assert partition in (0, 1)
    view = model.learning()
    assert view["source"]["kind"] == "state"
    labels = [repr(m) for m in settings.sizing.multipliers]
    symbols: set[str] = set()
    for partition in stores["strategy"].saved:
        handler = decode_state(stores["strategy"].load(partition) or b"")["handler"]
        for symbol, data in handler["symbols"].items():
            symbols.add(symbol)
            state = StrategyState.from_dict(data)
            cells = view["qtables"][symbol]
            for key, values in state.qtable.q.items():
                assert "/d" in key  # the full state, drawdown bucket included
                for i, q in enumerate(values):
                    n = state.qtable.visits[key][i]
                    assert cells[key].get(labels[i]) == ({"q": q, "n": n} if n else None)
            arms = {k: {"count": a.count, "value": a.value} for k, a in state.selector.arms.items()}
            assert view["bandits"][symbol] == arms
            info = view["symbols"][symbol]
            assert (info["partition"], info["regime"]) == (partition, state.regime.value)
            assert info["pending_sizing"] == len(state.pending_sizing)
    assert symbols == set(SYMBOLS)
    # every sizing reward the stage applied is one visit of its table
    rewards = [r for r in log.records(Topic.LEARNING_REWARDS) if isinstance(r, RewardComputed)]
    sizing = Counter(r.symbol for r in rewards if r.learner is Learner.SIZING)
    assert sizing, "the window must trade for this test to bite"
    for symbol in SYMBOLS:
        visits = sum(c["n"] for cells in view["qtables"][symbol].values() for c in cells.values())
        assert visits + view["symbols"][symbol]["pending_sizing"] >= sizing[symbol] >= visits


def test_the_overview_takes_the_risk_stages_stored_portfolio(topology: Any) -> None:
    settings, log, stores = topology
    model = ReadModel(10_000.0, settings.sizing, settings.selector, settings.risk)
    model.apply_all(log.records(Topic.TRADES_CLOSED))
    assert model.overview()["trading_mode"]["source"] == "commands"
    assert model.overview()["risk"] is None
    store = stores["risk"]
    for offset, (key, value) in enumerate(store.changelog[0]):
        model.apply_state_record("risk", offset, key, value, 9)
    handler = decode_state(store.load(0) or b"")["handler"]
    portfolio = PortfolioState.from_dict(handler["portfolio"]["portfolio"])
    o = model.overview()
    assert o["trading_mode"] == {
        "mode": "NORMAL",
        "detail": "entries allowed",
        "source": "state",
        "pending": False,
    }
    assert o["equity_usd"] == portfolio.equity
    assert o["equity_source"].startswith("the risk stage's stored state")
    risk = o["risk"]
    assert risk["day_start_equity_usd"] == portfolio.day_start_equity
    assert risk["week_start_equity_usd"] == portfolio.week_start_equity
    assert risk["reserved_positions"] == len(portfolio.positions)
    assert model.state_summary()["risk"]["last_flush_ms"] == 9

    # a HALT the stage stored is the overview's trading mode, with its reason
    from streams.agents.registry import stage_builders
    from streams.topology import STAGES

    spec = next(s for s in STAGES if s.name == "risk")
    inst = Instance.from_document(stage_builders(settings, [spec])["risk"](), decode_state(
        store.load(0) or b""))  # fmt: skip
    inst.handler.state.portfolio.halted = True  # type: ignore[attr-defined]
    inst.handler.state.portfolio.halt_reason = "operator: test"  # type: ignore[attr-defined]
    store.save(0, encode_state(inst.to_document()))
    start = len(store.changelog[0]) - len(state_parts(0, store.saved[0][-1], None, 512))
    for offset, (key, value) in enumerate(store.changelog[0][start:], start):
        model.apply_state_record("risk", offset, key, value, 10)
    mode = model.overview()["trading_mode"]
    assert (mode["mode"], mode["detail"]) == ("HALTED", "kill switch: operator: test")
    assert model.overview()["kill_switch"]["halted"]
