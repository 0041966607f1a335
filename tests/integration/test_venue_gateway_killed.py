"""A gateway killed between the exchange's acceptance of an order and any record of it.

On real Kafka: ``quantum-trader venue`` (its own process) takes a PLACE command from
``venue.commands``; the local fake exchange accepts the order and, before it answers or streams
anything about it, the test kills that process (SIGKILL). Nothing about the order reached
``venue.events`` and the command's offset is not committed. A second gateway process is started:
it gets the command again, finds the order by its client id instead of sending it again, and
the fill comes back through the trades replay. Applied by the execution stage's venue state
machine, ``venue.events`` books the fill exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams import kafka_io
from streams.adapters.venues.binance.fake_exchange import FakeExchange, serve
from streams.adapters.venues.binance.messages import ExchangeEvent, OrderUpdate
from streams.adapters.venues.binance.records import command_record, event_from_record
from streams.adapters.venues.binance.venue import BinanceVenue
from streams.adapters.venues.interface import ExitPlan, Fill, OrderIntent
from streams.app import ensure_topics
from streams.config import Settings
from streams.contracts.codec import serializer_for, topic_codec
from streams.contracts.records import VenueEventReceived
from streams.instruments import INSTRUMENTS, split_ladder
from streams.topics import Topic, topic_name
from streams.vocabulary import Side
from tests.integration.test_binance_fake_exchange import KEY, SECRET, klines

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SYMBOL = "BTCUSDT"
CLI = Path(sys.executable).parent / "quantum-trader"


class ExchangeThread:
    """The fake exchange served on its own event loop, beside the test."""

    def __init__(self, fake: FakeExchange) -> None:
        self.fake = fake
        self.urls: tuple[str, str] | None = None
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._up = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._run(),))

    async def _run(self) -> None:
        async with serve(self.fake) as urls:
            self.urls = urls
            self._up.set()
            await self._stop.wait()

    def __enter__(self) -> ExchangeThread:
        self._thread.start()
        assert self._up.wait(30), "the fake exchange did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def entry_plan(fake: FakeExchange) -> ExitPlan:
    inst = INSTRUMENTS[SYMBOL]
    ref = float(fake.price(SYMBOL))
    offsets = tuple(ref * x for x in (0.002, 0.0035, 0.005))
    return ExitPlan(
        f"{SYMBOL}:1700000000000:decision", SYMBOL, Side.LONG, ref, ref * 2 * inst.step_size,
        10, 20, (0.4, 0.4, 0.2), split_ladder(20, (0.4, 0.4, 0.2)), offsets,
        tuple(ref + o for o in offsets), ref * 0.004, ref * 0.996, 0.003, inst,
    )  # fmt: skip


@pytest.fixture
def exchange() -> Iterator[ExchangeThread]:
    fake = FakeExchange(KEY, SECRET)
    fake.load_klines(SYMBOL, klines(SYMBOL))
    with ExchangeThread(fake) as ex:
        yield ex


def gateway(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``quantum-trader venue`` as its own process."""
    with log.open("ab") as out:
        return subprocess.Popen([str(CLI), "venue"], env=env, stdout=out, stderr=out)


def read_events(bootstrap: str, topic: str, group: str) -> Iterator[ExchangeEvent | None]:
    """``venue.events`` as exchange events, in order (None while nothing new arrives)."""
    consumer = kafka_io.consumer(kafka_io.ConsumerOptions(bootstrap, group))
    consumer.subscribe([topic])
    decode = topic_codec(Topic.VENUE_EVENTS).decode_record
    try:
        while True:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                yield None
                continue
            record = decode(msg.value() or b"")
            assert isinstance(record, VenueEventReceived)
            yield event_from_record(record)
    finally:
        consumer.close()


def test_a_gateway_killed_after_acceptance_places_no_duplicate(
    kafka_bootstrap: str, unique_prefix: str, exchange: ExchangeThread, tmp_path: Path
) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=unique_prefix)
    ensure_topics(kafka_bootstrap, settings)
    assert exchange.urls is not None
    rest, ws = exchange.urls
    env = {
        **os.environ,
        "QT_MODE": "testnet",
        "QT_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "QT_TOPIC_PREFIX": unique_prefix,
        "QT_BINANCE_API_KEY": KEY,
        "QT_BINANCE_API_SECRET": SECRET,
        "QT_BINANCE__REST_URL": rest,
        "QT_BINANCE__USER_STREAM_URL": ws,
    }
    fake = exchange.fake
    log = tmp_path / "venue.log"
    first = gateway(env, log)
    killed = threading.Event()

    def kill_the_gateway(client_id: str) -> None:  # on the fake's loop, before it answers
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed.set()

    fake.on_accept = kill_the_gateway
    venue = BinanceVenue()
    plan = entry_plan(fake)
    venue.submit(OrderIntent(plan, 1_700_000_000_000))
    (entry,) = venue.take_commands()
    producer = kafka_io.producer(kafka_io.ProducerOptions(kafka_bootstrap))
    tracker = kafka_io.DeliveryTracker()
    kafka_io.produce(
        producer,
        topic_name(Topic.VENUE_COMMANDS, unique_prefix),
        SYMBOL.encode(),
        serializer_for(Topic.VENUE_COMMANDS)(
            command_record(entry, 1_700_000_000_000, plan.decision_id)
        ),
        on_delivery=tracker,
    )
    kafka_io.flush(producer, tracker, timeout_s=30)

    deadline = time.monotonic() + 120
    while not killed.is_set() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert killed.is_set(), f"the gateway never placed the order: {log.read_text()[-2000:]}"
    fake.on_accept = None
    assert fake.sent_orders == 1

    second = gateway(env, log)
    fills: list[Fill] = []
    acked = False
    try:
        events = read_events(
            kafka_bootstrap, topic_name(Topic.VENUE_EVENTS, unique_prefix), unique_prefix + "read"
        )
        for ev in events:
            if ev is not None:
                acked |= (
                    isinstance(ev, OrderUpdate)
                    and ev.client_id == entry.client_id
                    and ev.exec_type == "QUERY"
                )
                fills += [e for e in venue.on_exchange_event(ev) if isinstance(e, Fill)]
            if (acked and fills) or time.monotonic() > deadline or second.poll() is not None:
                break
        time.sleep(2.0)  # a second copy of the fill (stream and replay) would come now
        for ev in events:
            if ev is None:
                break
            fills += [e for e in venue.on_exchange_event(ev) if isinstance(e, Fill)]
        events.close()
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(60)
    text = log.read_text(errors="replace")
    assert acked, f"the restarted gateway never reported the order: {text[-2000:]}"
    # the order is on the exchange once: the restarted gateway looked it up, did not resend it
    ours = [o for o in fake.orders.values() if o.client_id == entry.client_id]
    assert len(ours) == 1 and fake.sent_orders == 1
    posts = [r for r in fake.requests if r[:2] == ("POST", "/fapi/v1/order")]
    assert len(posts) == 1, posts
    # the fill the first gateway never heard of is booked once, at the exchange's price
    (trade,) = [t for t in fake.trades if t["orderId"] == ours[0].order_id]
    assert [(f.price, f.quantity) for f in fills] == [(float(trade["price"]), float(trade["qty"]))]
    assert KEY not in text and SECRET not in text
