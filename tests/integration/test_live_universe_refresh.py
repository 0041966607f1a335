"""The live universe refreshed while the ingest runs, on a real Kafka, against the local Binance.

The fake exchange serves the real klines of five futures symbols; between refreshes its 24h
ticker changes (one symbol's quote volume x1000 for 20 simulated minutes), so that symbol joins
the top 2 and the second of the start's selection leaves, then the other way round. Checked:
each change is a ``universe.events`` record (key = symbol, id and event time from the refresh's
grid time, verdict and reason), written before any kline of its time; the joiner is subscribed
and the leaver unsubscribed on the running connection (no reconnect, no other stream dropped);
the leaver's klines go on through its wind-down, and ``market.ticks`` has every kline of each
symbol's time in the universe exactly once, in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.adapters.live.ingest import LiveIngest
from streams.adapters.live.rest import binance_client
from streams.adapters.live.run import rest_client, select_universe_now, universe_tracker
from streams.adapters.live.sink import kafka_live_sink
from streams.contracts.codec import topic_codec
from streams.contracts.records import TickReceived, UniverseChanged
from streams.stages import FeaturesStage
from streams.topics import Topic
from streams.vocabulary import UniverseChangeKind, UniverseVerdict
from tests.fakes.binance import FakeBinance
from tests.fakes.live_support import MINUTE, SYMBOLS, T0, live_config, recorded
from tests.integration.test_live_kafka import PARTITIONS, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def m(n: int) -> int:
    return T0 + n * MINUTE


def universe_events(bootstrap: str, topic: str) -> list[tuple[bytes, int, UniverseChanged]]:
    """(key, timestamp, record) of every record of the one-partition ``topic``, in order."""
    from confluent_kafka import Consumer, TopicPartition

    codec = topic_codec(Topic.UNIVERSE_EVENTS)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}.check",
                         "enable.auto.commit": False})  # fmt: skip
    out: list[tuple[bytes, int, Any]] = []
    try:
        end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
        consumer.assign([TopicPartition(topic, 0, 0)])
        while len(out) < end:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            out.append((msg.key(), msg.timestamp()[1], codec.decode_record(msg.value())))
    finally:
        consumer.close()
    return out


class Ordered:
    """The Kafka sink, noting the order of what the ingest sends (ticks and universe changes)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.sent: list[tuple[str, int]] = []

    def send_tick(self, tick: TickReceived) -> None:
        self.sent.append(("tick", tick.event_time_ms))
        self.sink.send_tick(tick)

    def send_universe(self, record: UniverseChanged) -> None:
        self.sent.append(("universe", record.event_time_ms))
        self.sink.send_universe(record)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)


def minutes_of(ticks: list[TickReceived], symbol: str) -> list[int]:
    return [t.event_time_ms for t in ticks if t.symbol == symbol]


async def test_symbols_join_and_leave_with_events_on_the_topic_and_no_stream_dropped(
    kafka_bootstrap: str, unique_prefix: str
) -> None:
    data = recorded(SYMBOLS, m(-180), m(100))  # REST has 3 hours of history before T0
    sink = Ordered(kafka_live_sink(kafka_bootstrap, unique_prefix, partitions=PARTITIONS))
    server = FakeBinance(data, m(30), 600.0)  # 1 simulated minute per 100 ms
    await server.start()
    universe = {"size": 2, "min_listing_days": 0, "min_range": 0, "refresh_minutes": 10,
                "wind_down_minutes": 15}  # fmt: skip
    cfg = live_config(server, universe=universe, rotate_after_s=3600.0, idle_timeout_s=2.0)
    client = binance_client("futures", cfg.rest_url, cfg.rest_timeout_s)
    try:
        start = await select_universe_now(cfg)
        kept, leaver = start.symbols
        joiner = next(s for s in SYMBOLS if s not in start.symbols)
        # The market changes: the joiner trades 1000x more from 40 to 60 (simulated minutes).
        server.volume_factor = {(joiner, m(40)): 1000.0, (joiner, m(60)): 1.0}
        server.ticker_delay_s = 0.25  # 2.5 simulated minutes: klines close meanwhile
        ingest = LiveIngest(
            cfg, start.symbols, sink, rest_client(client, cfg),
            starts=dict.fromkeys(start.symbols, m(20)), until_ms=m(80), end_of_stream=True,
            universe=universe_tracker(cfg.universe, start),
        )  # fmt: skip
        summary = await asyncio.wait_for(ingest.run(), 90.0)
    finally:
        await client.close_connection()
        await server.stop()

    # -- the events, as written to universe.events
    events = universe_events(kafka_bootstrap, f"{unique_prefix}universe.events")
    got = [(e.event_time_ms, e.symbol, e.change) for _k, _t, e in events]
    J, L = UniverseChangeKind.JOINED, UniverseChangeKind.LEFT
    assert got == [
        (start.at_ms, kept, J), (start.at_ms, leaver, J),  # the start's selection, rank order
        (m(40), joiner, J), (m(40), leaver, L),  # joins ranked first; the old second leaves
        (m(60), leaver, J), (m(60), joiner, L),  # and back once the volume is gone
    ]  # fmt: skip
    for key, timestamp, e in events:
        assert key == e.symbol.encode() and timestamp == e.event_time_ms
        assert e.event_id == f"universe:{e.event_time_ms}:{e.symbol}"
        assert e.universe_size == 2 and e.server_time_ms >= e.event_time_ms
    for i, (kind, at) in enumerate(sink.sent):  # a change precedes every tick of its time
        if kind == "universe":
            assert not [t for k, t in sink.sent[:i] if k == "tick" and t >= at], at
    by_id = {e.event_id: e for _k, _t, e in events}
    left = by_id[f"universe:{m(40)}:{leaver}"]
    assert left.verdict is UniverseVerdict.BELOW_TOP_N and left.rank == 3
    assert left.reason == "BELOW_TOP_N: rank 3 by 24h quote volume, top 2 kept"
    assert by_id[f"universe:{m(40)}:{joiner}"].rank == 1
    assert summary.universe_refreshes == 4  # at 40, 50, 60 and 70 (none at the end, 80)
    from prometheus_client.exposition import generate_latest

    from streams.observability.ingest import ingest_registry

    exposition = generate_latest(ingest_registry(ingest)).decode()
    for line in (
        'qt_live_universe_refreshes_total{market="futures"} 4.0',
        'qt_live_universe_symbols{state="member"} 2.0',
        'qt_live_universe_symbols{state="winding_down"} 0.0',  # the joiner's ended at 75
    ):
        assert line in exposition, line

    # -- a restart reads the membership back: the universe it left, the joiner winding down
    from streams.adapters.live.run import read_universe
    from streams.config import Settings

    restarted = universe_tracker(cfg.universe, start)
    restarted.resume(read_universe(kafka_bootstrap, Settings(topic_prefix=unique_prefix)), m(70))
    assert restarted.current is not None and set(restarted.current.symbols) == {kept, leaver}
    assert restarted.winding_down == {joiner: m(75)}

    # -- the streams: changed on the one running session, nothing reconnected
    assert summary.reconnects == 0 and server.connections == 1
    assert [(r["method"], r["params"]) for r in server.requests_seen] == [
        ("SUBSCRIBE", [f"{joiner.lower()}@kline_1m"]),
        ("UNSUBSCRIBE", [f"{leaver.lower()}@kline_1m"]),  # its wind-down ended at 55
        ("SUBSCRIBE", [f"{leaver.lower()}@kline_1m"]),  # joined again at 60
        ("UNSUBSCRIBE", [f"{joiner.lower()}@kline_1m"]),  # wind-down over at 75
    ]

    # -- market.ticks: each symbol's minutes while streamed, once each, in order
    records = read_topic(kafka_bootstrap, f"{unique_prefix}market.ticks")
    ticks = [
        v for part in records.values() for _k, _t, _h, v in part if isinstance(v, TickReceived)
    ]
    ticks.sort(key=lambda t: (t.event_time_ms, t.symbol))
    assert minutes_of(ticks, kept) == [m(n) for n in range(20, 80)]
    outsider = next(s for s in SYMBOLS if s not in (kept, leaver, joiner))
    assert minutes_of(ticks, outsider) == []  # never in the universe: never subscribed
    out = minutes_of(ticks, leaver)
    assert out == sorted(set(out))
    assert {m(n) for n in range(20, 54)} | {m(n) for n in range(60, 80)} <= set(out)
    assert not {m(n) for n in range(56, 59)} & set(out)  # unsubscribed after its wind-down
    came = minutes_of(ticks, joiner)
    assert came == sorted(set(came)) and min(came) >= m(39)  # starts with the others
    assert {m(n) for n in range(40, 74)} <= set(came) and max(came) < m(77)
    # ... but warm: its first kline carries the recorded history before it (the warm-up's
    # 180 minutes), and so does the leaver's return
    warm = cfg.warmup_minutes * MINUTE
    carried = [(t.symbol, t.event_time_ms, [h.open_time_ms for h in t.history])
               for t in ticks if t.history]  # fmt: skip

    def before(symbol: str, first: int) -> list[int]:
        return [t for t in sorted(data[symbol]) if first - warm <= t < first]

    back = min(t for t in out if t >= m(60))
    assert carried == sorted(
        [(joiner, min(came), before(joiner, min(came))), (leaver, back, before(leaver, back))],
        key=lambda c: (c[1], c[0]),
    )
    assert [len(h) for _s, _t, h in carried] == [cfg.warmup_minutes] * 2  # none missing
    assert summary.sequencer.history == {s: len(h) for s, _t, h in carried}
    for t in ticks:  # the history is the recorded klines, value for value
        for h in t.history:
            assert [h.open, h.high, h.low, h.close, h.volume] == [
                float(x) for x in data[t.symbol][h.open_time_ms][:5]
            ]
    # the features stage, on the topic as written: the joiner has a row from its first kline
    # (more than the 128 bars of warm-up in its history), not two hours later
    stage, state = FeaturesStage(), None
    for t in ticks:
        if t.symbol == joiner:
            state, row = stage.on_tick(state, t)
            assert row is not None, t.event_time_ms
    # no kline is invented: every tick is the recorded one
    for t in ticks:
        assert (t.open, t.close) == (float(data[t.symbol][t.event_time_ms][0]),
                                     float(data[t.symbol][t.event_time_ms][3]))  # fmt: skip


def test_a_restarted_live_run_winds_down_a_symbol_its_new_selection_dropped(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Any
) -> None:
    """``live --join --universe 2`` twice (run_live, the command's path): the second run reads
    the first one's universe back from ``universe.events``, so the symbol its selection drops
    LEFT and keeps its stream (resumed after its last tick: no gap), the new one JOINED."""
    from rich.console import Console

    from streams.adapters.live.run import LivePlan, run_live
    from streams.config import Settings
    from tests.fakes.live_support import serving_in_thread

    data = recorded(SYMBOLS, T0, m(100))
    server = FakeBinance(data, m(30), 60.0)  # 1 simulated minute per second
    universe = {"size": 2, "min_listing_days": 0, "min_range": 0, "wind_down_minutes": 120}
    with serving_in_thread(server):
        cfg = live_config(server, universe=universe, rotate_after_s=3600.0, idle_timeout_s=5.0)
        settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=unique_prefix,
                            live=cfg, runs_dir=tmp_path)  # fmt: skip

        def run(until: int) -> tuple[Any, Any]:
            start = asyncio.run(select_universe_now(cfg))
            plan = LivePlan(start.symbols, since_ms=m(20), until_ms=until, join=True,
                            universe=start)  # fmt: skip
            return start, run_live(settings, plan, Console(stderr=True))[0]

        first, _ = run(m(40))
        kept, leaver = first.symbols
        joiner = next(s for s in SYMBOLS if s not in first.symbols)
        server.volume_factor = {(joiner, T0): 1000.0}  # from now on the joiner leads
        second, summary = run(m(50))
    assert set(second.symbols) == {joiner, kept}
    events = universe_events(kafka_bootstrap, f"{unique_prefix}universe.events")
    J, L = UniverseChangeKind.JOINED, UniverseChangeKind.LEFT
    assert [(e.event_time_ms, e.symbol, e.change) for _k, _t, e in events] == [
        (first.at_ms, kept, J), (first.at_ms, leaver, J),
        (second.at_ms, joiner, J), (second.at_ms, leaver, L),
    ]  # fmt: skip
    assert [c["symbol"] for c in live_changes(summary)] == [joiner, leaver]
    records = read_topic(kafka_bootstrap, f"{unique_prefix}market.ticks")
    ticks = [
        v for part in records.values() for _k, _t, _h, v in part if isinstance(v, TickReceived)
    ]
    assert minutes_of(sorted(ticks, key=lambda t: t.event_time_ms), leaver) == [
        m(n) for n in range(20, 50)
    ]  # through the restart: resumed after its last tick, streamed while winding down
    came = minutes_of(sorted(ticks, key=lambda t: t.event_time_ms), joiner)
    assert came and min(came) >= m(40) and came == list(range(min(came), m(50), MINUTE))


def live_changes(summary: Any) -> list[dict[str, Any]]:
    from streams.adapters.live.run import live_report

    return list(live_report(summary)["universe_changes"])
