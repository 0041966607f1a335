"""Reconciliation findings as ``venue.events`` records: the gateway's real snapshot of the local
fake exchange (real python-binance client, signed requests) goes through the execution stage's
real dispatch and codecs; the finding comes out as a record of its own and, read back, is
ignored (never dead-lettered)."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from streams.adapters.venues.binance.fake_exchange import FakeExchange, serve
from streams.adapters.venues.binance.gateway import BinanceGateway
from streams.adapters.venues.binance.records import event_record
from streams.agents.base import Decoder, Emitter, RawEvent
from streams.agents.dispatch import dispatch
from streams.agents.execution import ExecutionHandler
from streams.config import BinanceConfig
from streams.contracts.codec import topic_codec
from streams.contracts.records import DeadLettered, VenueEventReceived
from streams.observability.metrics import Metrics, install_metrics
from streams.ordering import SOURCE_HEADER
from streams.stages import ExecutionStage
from streams.topics import Topic
from streams.vocabulary import ReconcileKind, VenueEventKind
from tests.unit.stages.sample import SAMPLE

KEY, SECRET = "test-key-0123456789abcdef", "test-secret-fedcba9876543210"
EVENTS = Topic.VENUE_EVENTS.value


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[Metrics]:
    m = Metrics()
    old = install_metrics(m)
    yield m
    install_metrics(old)


def klines(symbol: str, n: int = 50) -> list[list[str]]:
    with gzip.open(SAMPLE / f"{symbol}.csv.gz", "rt") as f:
        return list(csv.reader(f))[1 : n + 1]


def raw(records: list[VenueEventReceived], first_offset: int = 0) -> list[RawEvent]:
    codec, headers = topic_codec(Topic.VENUE_EVENTS), {SOURCE_HEADER: b"venue"}
    return [
        RawEvent(EVENTS, 0, first_offset + i, r.symbol.encode(), codec.encode(r), headers)
        for i, r in enumerate(records)
    ]


def venue_events(out: Emitter) -> list[VenueEventReceived]:
    return [i.value for i in out.items if i.topic is Topic.VENUE_EVENTS and i.value is not None]


async def test_a_position_behind_our_back_yields_one_finding_record_with_its_reason(
    fresh_metrics: Metrics,
) -> None:
    fake = FakeExchange(KEY, SECRET)
    fake.load_klines("ETHUSDT", klines("ETHUSDT"))
    async with serve(fake) as (rest, ws):
        cfg = BinanceConfig(rest_url=rest, user_stream_url=ws, request_timeout_s=1.0)
        gateway = BinanceGateway(cfg, SecretStr(KEY), SecretStr(SECRET))
        await gateway.start()
        try:
            fake.open_position("ETHUSDT", -0.5)
            snapshots = [event_record(s) for s in await gateway.snapshot(["ETHUSDT"])]
        finally:
            await gateway.close()
    assert [s.kind for s in snapshots] == [VenueEventKind.SNAPSHOT]

    handler = ExecutionHandler(ExecutionStage(venue="testnet"), partitions=1)
    out = Emitter("execution")
    assert dispatch(handler, Decoder(""), raw(snapshots), out) == 0  # none dead-lettered
    (finding,) = venue_events(out)
    assert finding.kind is VenueEventKind.FINDING
    assert finding.finding == ReconcileKind.UNKNOWN_POSITION_FLATTENED
    assert "no decision of ours opened" in finding.detail and finding.amount == -0.5
    assert (
        fresh_metrics.registry.get_sample_value(
            "qt_venue_reconcile_findings_total", {"kind": "UNKNOWN_POSITION_FLATTENED"}
        )
        == 1.0
    )
    snap = snapshots[0]
    assert finding.event_id == (
        f"finding/ETHUSDT/{snap.event_time_ms}/{ReconcileKind.UNKNOWN_POSITION_FLATTENED}/"
    )
    # ... and its fix went to the gateway
    (flatten,) = [i.value for i in out.items if i.topic is Topic.VENUE_COMMANDS]
    assert flatten.side == "BUY" and flatten.reduce_only

    # The finding comes back on venue.events: ignored, not dead-lettered, nothing sent.
    back = Emitter("execution")
    assert dispatch(handler, Decoder(""), raw([finding], first_offset=1), back) == 0
    records = [i for i in back.items if i.value is not None]
    assert records == [] and not any(isinstance(i.value, DeadLettered) for i in back.items)
    assert (
        fresh_metrics.registry.get_sample_value(
            "qt_venue_reconcile_findings_total", {"kind": "UNKNOWN_POSITION_FLATTENED"}
        )
        == 1.0
    )  # the record read back is not counted again
