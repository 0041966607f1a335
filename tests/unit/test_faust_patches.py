"""streams.brokers.faust_patches: version guard, install/remove, the concurrency precondition.

The fix itself (F1) is proven on real brokers by tests/integration/test_startup_recovery.py;
these tests pin down what the module promises without a broker.
"""

from __future__ import annotations

from collections.abc import Iterator

import faust
import pytest
from faust.tables.recovery import Recovery

from streams.brokers import faust_app_settings, faust_patches


@pytest.fixture
def patched() -> Iterator[None]:
    """Patches installed for the test, and left installed afterwards (as every app has them)."""
    faust_patches.apply()
    yield
    faust_patches.apply()


def test_apply_refuses_another_faust_version(monkeypatch: pytest.MonkeyPatch) -> None:
    faust_patches.remove()
    monkeypatch.setattr(faust, "__version__", "0.16.0")
    with pytest.raises(faust_patches.UnsupportedFaustVersionError, match=r"0\.15\.3.*0\.16\.0"):
        faust_patches.apply()
    assert not faust_patches.is_applied()
    monkeypatch.undo()
    faust_patches.apply()


def test_the_installed_faust_is_the_patched_version() -> None:
    assert faust.__version__ == faust_patches.PATCHED_FAUST_VERSION


def test_apply_is_idempotent_and_remove_restores_faust(patched: None) -> None:
    wrapped = Recovery.on_recovery_completed
    faust_patches.apply()
    assert Recovery.on_recovery_completed is wrapped  # not wrapped twice
    faust_patches.remove()
    assert Recovery.on_recovery_completed is not wrapped
    assert Recovery.on_recovery_completed.__qualname__ == "Recovery.on_recovery_completed"


def test_app_settings_install_the_patches() -> None:
    faust_patches.remove()
    faust_app_settings("127.0.0.1:1", embedded=False)
    assert faust_patches.is_applied()
    assert Recovery.on_recovery_completed.__wrapped__ is not None  # type: ignore[attr-defined]


class _Consumer:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def stop_flow(self) -> None:
        self.log.append("stop_flow")


class _App:
    def __init__(self, log: list[str], agents: dict[str, object] | None = None) -> None:
        self.consumer = _Consumer(log)
        self.agents = agents or {}


class _Agent:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency


async def test_handover_stops_the_flow_before_faust_resumes_partitions(patched: None) -> None:
    log: list[str] = []

    async def original(self: object, generation_id: int = 0) -> None:
        log.append(f"original({generation_id})")

    handover = faust_patches._flow_stopped_during_handover(original)
    recovery = type("R", (), {"app": _App(log)})()
    await handover(recovery, 7)
    assert log == ["stop_flow", "original(7)"]


async def test_handover_refuses_agents_with_several_actors(patched: None) -> None:
    log: list[str] = []

    async def original(self: object, generation_id: int = 0) -> None:
        log.append("original")

    handover = faust_patches._flow_stopped_during_handover(original)
    app = _App(log, {"a.one": _Agent(1), "a.two": _Agent(2)})
    recovery = type("R", (), {"app": app})()
    with pytest.raises(faust_patches.FaustPreconditionError, match=r"a\.two.*2"):
        await handover(recovery, 0)
    assert log == []  # nothing resumed


def test_every_agent_of_the_topology_runs_one_actor() -> None:
    from streams.app import build_app
    from streams.config import Settings

    app = build_app(Settings(), "127.0.0.1:1", embedded=False)
    assert len(app.agents) >= 8
    assert faust_patches.agents_with_concurrency(app) == {}


def test_a_real_faust_agent_with_concurrency_is_found() -> None:
    app = faust.App("t-concurrency", broker="kafka://127.0.0.1:1")
    topic = app.topic("t-in")

    @app.agent(topic, concurrency=3)
    async def parallel(stream):  # type: ignore[no-untyped-def]
        async for _ in stream:
            pass

    found = faust_patches.agents_with_concurrency(app)
    assert list(found.values()) == [3]


async def test_partitions_without_a_committed_offset_are_sought_to_the_start() -> None:
    from faust.types import TP

    log: list[str] = []
    ticks = [TP("p.market.ticks", n) for n in range(4)]
    changelog = TP("app-state-features-changelog", 0)

    class Consumer:
        app = type("A", (), {"tables": type("T", (), {"changelog_topics": {changelog.topic}})()})

        def __init__(self) -> None:
            # what Faust's perform_seek leaves: an offset for partitions with one above 0 only
            self._committed_offset = {ticks[1]: 120, ticks[3]: None}

        def assignment(self) -> set[TP]:
            return {*ticks, changelog}

        async def seek(self, tp: TP, offset: int) -> None:
            log.append(f"seek {tp.partition} {offset}")

    async def original(self: object) -> None:
        log.append("committed")

    await faust_patches._uncommitted_sought_to_start(original)(Consumer())
    # partition 1 stays at its committed offset; the changelog is recovery's to position
    assert log == ["committed", "seek 0 0", "seek 2 0", "seek 3 0"]
