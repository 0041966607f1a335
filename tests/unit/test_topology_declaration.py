"""streams/topology.py is the one declaration: app, runner, merges, demo and docs derive from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams import topology, topology_docs
from streams.agents.base import Emitter
from streams.config import PROJECT_ROOT, Settings, SupervisorPolicy
from streams.contracts.records import ModelEventKind, ModelEventRecorded, TradeClosed
from streams.topics import Topic
from streams.topology import STAGES, InputSpec, Partitioning, Shift, StageSpec

N = 4
SAMPLE = PROJECT_ROOT / "data" / "sample" / "um_futures_1m_2025"


# -- a fake stage: one model event per closed trade ---------------------------------------------
class AuditHandler:
    """Consumes closed trades, produces one ``models.events`` record each."""

    name = "audit"
    inputs = (Topic.TRADES_CLOSED,)

    def on_record(self, topic: str, partition: int, source: str, record: Any, out: Emitter) -> None:
        trade: TradeClosed = record
        event = ModelEventRecorded(
            event_id=f"audit:{trade.trade_id}",
            model="audit",
            version="1",
            event_time_ms=trade.event_time_ms,
            kind=ModelEventKind.OTHER,
            detail=f"closed {trade.trade_id}",
        )
        out.record_to(Topic.MODELS_EVENTS, 0, "audit", event, trade.event_time_ms, "audit/0")

    def on_watermark(self, topic: str, partition: int, source: str, wm: int, out: Emitter) -> None:
        pass

    def end_batch(self, out: Emitter) -> None:
        pass


def build_audit(context: topology.BuildContext) -> AuditHandler:
    return AuditHandler()


AUDIT = StageSpec(
    name="audit",
    inputs=(InputSpec(Topic.TRADES_CLOSED),),
    outputs=(Topic.MODELS_EVENTS,),
    partitioning=Partitioning.SINGLE,
    state="none",
    doc="one model event per closed trade",
    handler=f"{__name__}:build_audit",
)


@pytest.fixture
def with_audit(monkeypatch: pytest.MonkeyPatch) -> tuple[StageSpec, ...]:
    stages = (*STAGES, AUDIT)
    monkeypatch.setattr(topology, "STAGES", stages)
    return stages


# -- the declaration reproduces the topology the golden tests pin ------------------------------
def test_merge_sources_are_the_ones_each_stage_waits_for() -> None:
    lag, bar = 300_000, 60_000
    shifts = {Shift.FEEDBACK_LAG: lag, Shift.BAR: bar}
    strategy = topology.merge_sources(topology.stage_spec("strategy"), 2, N, shifts)
    assert strategy == {
        "market.features/2:features/2": (0, False),
        "signals.supervised/2:supervisor/2": (0, False),
        "learning.rewards/2:learning/0": (lag, True),
    }
    risk = topology.merge_sources(topology.stage_spec("risk"), 0, N, shifts)
    assert risk == {
        **{f"decisions.sized/0:strategy/{p}": (0, False) for p in range(N)},
        **{f"trades.closed/0:execution/{p}": (lag, True) for p in range(N)},
        **{f"market.bars/0:features/{p}": (0, False) for p in range(N)},
    }  # operator commands never hold risk back: no source of their own
    execution = topology.merge_sources(topology.stage_spec("execution"), 1, N, shifts)
    assert execution == {
        "orders.intents/1:exits/1": (bar, True),
        "market.ticks/1:replay": (0, False),
    }


def test_progress_goes_to_the_outputs_someone_reads() -> None:
    def targets(name: str, instance: int) -> list[tuple[Topic, list[int]]]:
        return topology.progress_targets(topology.stage_spec(name), instance, N)

    assert targets("features", 1) == [(Topic.MARKET_FEATURES, [1]), (Topic.MARKET_BARS, [0])]
    assert targets("strategy", 3) == [(Topic.DECISIONS_SIZED, [0])]
    assert targets("risk", 0) == [(Topic.ORDERS_APPROVED, list(range(N)))]  # not rejections
    assert targets("execution", 2) == [(Topic.TRADES_CLOSED, [0])]  # fills: nobody reads them
    assert targets("learning", 0) == [(Topic.LEARNING_REWARDS, list(range(N)))]


def test_drain_marks_are_the_writers_of_every_shifted_input() -> None:
    marks = topology.drain_marks(N)
    assert set(marks) == {
        *((Topic.TRADES_CLOSED.value, f"execution/{p}") for p in range(N)),
        *((Topic.ORDERS_INTENTS.value, f"exits/{p}") for p in range(N)),
        (Topic.LEARNING_REWARDS.value, "learning/0"),
    }


def test_every_topic_is_declared_once_and_every_stage_input_is_a_declared_topic() -> None:
    assert sorted(s.topic for s in topology.TOPICS) == sorted(Topic)
    declared = {s.topic for s in topology.TOPICS}
    for stage in STAGES:
        assert set(stage.input_topics) <= declared and set(stage.outputs) <= declared
    assert len({s.name for s in STAGES}) == len(STAGES)


def test_portfolio_stages_read_only_single_partition_inputs() -> None:
    # Two workers split the per-symbol partitions: a single-instance stage reading one would wait
    # for the partitions another worker holds (risk's bars come from market.bars, not ticks).
    for stage in STAGES:
        if stage.partitioning is not Partitioning.SINGLE:
            continue
        per_symbol = [t for t in stage.input_topics if topology.partitions_of(t, N) > 1]
        assert per_symbol == [], stage.name


# -- docs ----------------------------------------------------------------------------------------
def test_readme_topology_sections_are_generated_from_the_declaration() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert topology_docs.render_readme(readme) == readme, (
        "README's topology drifted: run `quantum-trader topology --write-readme README.md`"
    )


def test_a_new_stage_shows_up_in_the_docs(with_audit: tuple[StageSpec, ...]) -> None:
    table = topology_docs.markdown_table()
    assert "| audit | `trades.closed` | `models.events` | **one partition** | none |" in table
    assert "execution -->|trades.closed| audit" in topology_docs.mermaid()
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert topology_docs.render_readme(readme) != readme  # the drift test would now fail


def test_render_readme_refuses_a_readme_without_markers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="marker"):
        topology_docs.render_readme("# no markers here\n")


# -- the app and the runner pick a new stage up ---------------------------------------------------
def test_a_new_stage_becomes_an_agent_of_the_app(with_audit: tuple[StageSpec, ...]) -> None:
    from streams.app import build_app

    app = build_app(Settings(), "127.0.0.1:9", embedded=False, web_port=16066, stages=with_audit)
    assert {"features", "risk", "execution", "audit"} <= set(app.agents)
    assert list(app.agents["audit"].channel.topics) == ["trades.closed"]


def test_the_runner_drives_a_new_stage(with_audit: tuple[StageSpec, ...]) -> None:
    from models.scorer import EnsembleScorer
    from streams.adapters.market_files import TimeWindow, parse_time_bound
    from streams.runner import run

    settings = Settings(supervisor=SupervisorPolicy(gate="confidence", min_confidence=0.5))
    records: list[Any] = []
    window = TimeWindow(parse_time_bound("2025-05-21"), parse_time_bound("2025-05-22T12:00"))
    scorer = EnsembleScorer.from_registry(settings.registry_dir)
    run(SAMPLE, scorer, records.append, settings, window=window, stages=with_audit)
    trades = [r.trade_id for r in records if isinstance(r, TradeClosed)]
    audits = [r.event_id for r in records if isinstance(r, ModelEventRecorded)]
    assert trades, "the window must trade to be a test"
    assert audits == [f"audit:{t}" for t in trades]


def test_the_runner_refuses_a_topology_without_a_stage_it_needs() -> None:
    from models.scorer import EnsembleScorer
    from streams.runner import Pipeline, RunError

    stages = tuple(s for s in STAGES if s.name != "risk")
    scorer = EnsembleScorer.from_registry(Settings().registry_dir)
    with pytest.raises(RunError, match="risk"):
        Pipeline(Settings(), scorer, lambda r: None, stages=stages)


def test_the_topics_created_before_a_worker_are_the_ones_faust_would_create() -> None:
    """ensure_topics pre-creates Faust's changelogs and leader topic (a worker that creates them
    itself on a just-started broker can form its group before they are in the metadata)."""
    from streams.agents.durable import faust_topics
    from streams.app import build_app

    settings = Settings(topic_prefix="p.", partitions=3)
    app = build_app(settings, "127.0.0.1:9", embedded=False, web_port=16067, stages=STAGES)
    changelogs = {
        t.changelog_topic.get_topic_name(): t.changelog_topic.partitions
        for t in app.tables.values()
    }
    leader = app._leader_assignor._leader_topic  # what Faust declares at start
    expected = changelogs | {leader.get_topic_name(): leader.partitions}
    assert faust_topics(settings.app_id, "p.", 3, STAGES) == expected
    assert {1, 3} == set(changelogs.values())  # single-instance stages have one partition
