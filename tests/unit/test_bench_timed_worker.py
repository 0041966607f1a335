"""The topology suite's timed worker wraps what the worker really calls (it once wrapped a
function the worker had stopped using, and the suite failed at start)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streams.agents.base import Decoder, Emitter
from streams.agents.durable import DictStore, RawEvent, StageRuntime
from streams.config import Settings
from streams.contracts.codec import topic_codec
from streams.contracts.records import TickKind, TickReceived
from streams.ordering import SOURCE_HEADER, WATERMARK_HEADER
from streams.topics import Topic
from streams.topology import stage_spec


@pytest.fixture
def restore_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.agents.durable
    import streams.app

    monkeypatch.setattr(streams.agents.durable, "dispatch", streams.agents.durable.dispatch)
    monkeypatch.setattr(streams.app.Sender, "send_all", streams.app.Sender.send_all)


@pytest.mark.usefixtures("restore_wrapped")
def test_the_timers_see_each_batch_of_a_stage_and_its_send(tmp_path: Path) -> None:
    from streams.agents.features import build
    from streams.agents.registry import BuildContext
    from streams.app import Sender
    from tests.benchmarks.apps.timed_worker import install

    batches = install(tmp_path / "stats.json")
    runtime = StageRuntime(
        stage_spec("features"), lambda: build(BuildContext(Settings())), DictStore(), Decoder("")
    )
    tick = TickReceived(symbol="BTCUSDT", event_time_ms=1_747_785_600_000, open=1.0, high=2.0,
                        low=0.5, close=1.5, volume=3.0, source="test", kind=TickKind.KLINE_1M,
                        interval_ms=60_000)  # fmt: skip
    value = topic_codec(Topic.MARKET_TICKS).encode(tick)
    events = [
        RawEvent("market.ticks", 0, 0, b"BTCUSDT", value, {SOURCE_HEADER: b"replay"}),
        RawEvent("market.ticks", 0, 1, None, b"", {SOURCE_HEADER: b"replay",
                                                   WATERMARK_HEADER: b"1747785660000"}),
    ]  # fmt: skip
    [out] = runtime.handle(events)
    [(n, marks, dispatch_ns, _, items_out)] = batches["features"]
    assert (n, marks) == (2, 1) and dispatch_ns > 0 and items_out == len(out.items)

    class Quiet(Sender):
        def __init__(self) -> None:  # no Faust app: an empty output has nothing to send
            pass

    empty = Emitter("features")
    assert asyncio.run(Quiet().send_all(empty)) == []  # the deliveries, handed back
    assert batches["features"][-1][3] > 0  # the send's time, on the batch just recorded
