"""The gateway as a process: ``venue.commands`` in, ``venue.events`` out (``quantum-trader venue``).

The execution stage (in the Faust worker) owns the venue's state and decides; this process owns
the exchange connection and does the I/O (docs/venues.md):

- every ``VenueCommand`` is executed in offset order (the gateway looks its client id up before
  sending, so a command redelivered after a crash places nothing twice), its immediate answers
  (acks, rejections) are produced to ``venue.events``, and only once the broker has them is its
  offset committed;
- the user-data stream's events are produced as they arrive, keyed by symbol, so each reaches the
  execution instance that holds the symbol;
- nothing blocks the event loop (the user stream's reading and pings share it): records are
  produced without waiting, and the waits for the broker (flush, commit) run on a thread;
- on start, on every user-stream (re)connect and every ``reconcile_every_s``: the account's
  trades since the last replay's newest (what a dropped stream missed) and one snapshot per symbol
  (position, open orders, open algo orders); the execution stage compares them with its state
  and fixes what differs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from streams import kafka_io
from streams.adapters.venues.binance.errors import VenueError
from streams.adapters.venues.binance.gateway import BinanceGateway
from streams.adapters.venues.binance.messages import ExchangeEvent
from streams.adapters.venues.binance.records import command_from_record, event_record
from streams.config import Settings
from streams.contracts.codec import serializer_for, topic_codec
from streams.contracts.records import VenueCommand
from streams.ordering import SOURCE_HEADER
from streams.topics import Topic, topic_name

log = logging.getLogger(__name__)
SOURCE = b"venue"
#: A periodic reconciliation waits while more of the request weight than this is in use:
#: its ~135 weight a round must not push orders behind the rate limiter.
RECONCILE_MAX_WEIGHT_SHARE = 0.5


class VenueService:
    """One gateway between the topology's venue topics and one Binance account."""

    def __init__(self, settings: Settings, gateway: BinanceGateway, bootstrap: str) -> None:
        self.settings = settings
        self.gateway = gateway
        prefix = settings.topic_prefix
        self.commands_topic = topic_name(Topic.VENUE_COMMANDS, prefix)
        self.events_topic = topic_name(Topic.VENUE_EVENTS, prefix)
        idempotent = not settings.kafka_embedded  # Tansu has no idempotent producer
        self.producer = kafka_io.producer(
            kafka_io.ProducerOptions(bootstrap, idempotence=idempotent)
        )
        self.tracker = kafka_io.DeliveryTracker()
        self.consumer = kafka_io.consumer(
            kafka_io.ConsumerOptions(bootstrap, f"{settings.app_id}{prefix}-venue")
        )
        self.encode = serializer_for(Topic.VENUE_EVENTS)
        self.decode = topic_codec(Topic.VENUE_COMMANDS).decode_record
        self.commands_done = 0
        self.connects = 0  # reconciliations done (at start, after every stream connect)
        self.last_activity = time.monotonic()  # a command executed or an event produced
        self.events_sent = 0
        # Commands and reconciliations take turns (a snapshot never races an order in flight);
        # stream events wait only for a reconciliation (never published before a snapshot they
        # predate), never for an order request, which the rate limiter may hold back.
        self._lock = asyncio.Lock()
        self._reconciling = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: connect, reconcile, stream, execute commands."""
        await self.gateway.start()
        self.consumer.subscribe([self.commands_topic])
        tasks = [
            asyncio.create_task(self.gateway.user_stream(self.publish, self.on_connect, stop)),
            asyncio.create_task(self._periodic(stop)),
        ]
        try:
            await self._connected(tasks[0], stop)
            await self._commands(stop)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.consumer.close()
            kafka_io.flush(self.producer, self.tracker, timeout_s=10)
            await self.gateway.close()
            del self.producer, self.consumer  # librdkafka stops when its clients are gone

    async def _connected(self, stream: asyncio.Task[None], stop: asyncio.Event) -> None:
        """Orders go out only once their fills can be heard (and the first reconcile is done)."""
        while not self.connects and not stream.done() and not stop.is_set():
            await asyncio.sleep(0.02)
        if stream.done():
            stream.result()  # the stream failed at once (keys, endpoint): raise its error here

    async def _commands(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            msg = await loop.run_in_executor(None, self.consumer.poll, 0.2)
            if msg is None:
                continue
            if msg.error():
                log.warning("venue: %s", kafka_io.describe(msg.error()))
                continue
            try:
                record = self.decode(msg.value() or b"")
            except Exception as exc:  # a bad record is skipped, loudly, never executed
                log.error(
                    "venue: undecodable command at %s/%s: %s", msg.partition(), msg.offset(), exc
                )
                self.consumer.commit(message=msg, asynchronous=False)
                continue
            assert isinstance(record, VenueCommand)
            async with self._lock:
                self._produce(await self.gateway.execute(command_from_record(record)))
            await asyncio.to_thread(kafka_io.flush, self.producer, self.tracker, 10)
            # after its answers are on the broker
            await asyncio.to_thread(self.consumer.commit, message=msg, asynchronous=False)
            self.commands_done += 1
            self.last_activity = time.monotonic()

    async def publish(self, events: list[ExchangeEvent]) -> None:
        """User-stream events to ``venue.events`` (in arrival order)."""
        async with self._reconciling:
            self._produce(events)

    async def on_connect(self) -> None:
        """After every (re)connect of the user stream: reconcile."""
        await self.reconcile(connected=True)
        self.connects += 1

    async def reconcile(self, connected: bool = False) -> None:
        """Missed trades, then a snapshot per symbol, to ``venue.events`` (stream events wait:
        a snapshot is never followed by an event it predates)."""
        async with self._lock, self._reconciling:
            for symbol in self._symbols():
                self._produce(await self.gateway.missed_trades(symbol, connected))
            self._produce(await self.gateway.snapshot(self._symbols()))

    def quiet_for(self) -> float:
        """Seconds since the last command or event (a bounded run waits for quiet to end)."""
        return time.monotonic() - self.last_activity

    def _symbols(self) -> Iterable[str]:
        return [s for s in self.settings.symbols if s in self.gateway.filters]

    async def _periodic(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.settings.binance.reconcile_every_s)
            if self.gateway.limiter.weight_share() > RECONCILE_MAX_WEIGHT_SHARE:
                log.info("venue: reconciliation deferred: the request weight is for orders now")
                continue
            try:
                await self.reconcile()
            except VenueError:
                raise
            except Exception:  # one failed round is logged; the next one tries again
                log.exception(
                    "venue: reconciliation failed; retrying in %s s",
                    self.settings.binance.reconcile_every_s,
                )

    def _produce(self, events: Iterable[ExchangeEvent]) -> None:
        for ev in events:
            rec = event_record(ev)
            kafka_io.produce(
                self.producer,
                self.events_topic,
                rec.symbol.encode(),
                self.encode(rec),
                headers=[(SOURCE_HEADER, SOURCE)],
                on_delivery=self.tracker,
            )
            self.events_sent += 1
            self.last_activity = time.monotonic()
        self.producer.poll(0)  # delivery callbacks, without waiting


def describe_endpoints(settings: Settings) -> dict[str, Any]:
    """Where the venue connects (no secrets): for the start-up line."""
    return {"rest": settings.binance.rest_url, "user_stream": settings.binance.user_stream_url}
