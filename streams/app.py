"""The Faust application: topics, agents and the worker entry point.

Nothing happens at import time: :func:`build_app` creates the app for a broker and settings,
declares every topic with its partition count, and registers one agent per stage from
``streams/agents/``. ``quantum-trader worker`` calls :func:`run_worker`.

Topics, their partition counts and the stages come from the declaration in
``streams/topology.py``; nothing here names a topic or a stage.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import faust

from streams import kafka_io
from streams.agents.base import (
    Decoder,
    Emitter,
    InvalidWatermarkError,
    RawEvent,
    parse_watermark,
)
from streams.agents.durable import (
    StageRuntime,
    app_name,
    assemble_state,
    faust_topics,
    state_head_key,
    state_partitions,
    state_parts,
    state_table_name,
)
from streams.brokers.faust_settings import faust_app_settings, resolve_bootstrap
from streams.config import Settings, get_settings
from streams.contracts.codec import TopicCodec, topic_codec
from streams.observability.health import TP, HealthRegistry
from streams.observability.metrics import CONTENT_TYPE, metrics
from streams.observability.tracing import trace_headers
from streams.ordering import END_OF_STREAM, SEQ_HEADER, SOURCE_HEADER, WATERMARK_HEADER
from streams.topics import Topic, topic_name
from streams.topology import (
    STAGES,
    TOPICS,
    StageSpec,
    partitions_of,
    wanted_topics,
)

log = logging.getLogger(__name__)

#: Largest batch an agent takes, and how long it waits to fill one (seconds).
BATCH_MAX = 500
BATCH_WITHIN = 0.002
#: How long a clean stop waits for each stage's last state flush (seconds).
STOP_FLUSH_TIMEOUT_S = 10.0
#: A stage waits at least this many times its last flush's encoding time before the next one:
#: a flush re-encodes whole documents, and a merge buffering a backlog made them take longer
#: than QT_STATE_FLUSH_MS (the demo's worker spent 90% of its time storing state).
FLUSH_COST_FACTOR = 20.0


def ensure_topics(
    bootstrap: str, settings: Settings, *, timeout_s: float = 30.0, keep_forever: bool = True
) -> list[str]:
    """Create every topic of the topology that is missing; refuse wrong partition counts.

    Faust only creates its internal topics; the topology's topics must exist with the right
    partition counts before a worker starts (auto-created topics get the broker default).
    ``keep_forever`` (the default): no time retention, see :func:`streams.kafka_io.ensure_topics`;
    every record carries its event time, so a replay of history into topics a worker created
    with the broker's retention would be deleted before the run is read.

    Faust's own topics (the state changelogs, its leader topic) are created here too, before any
    worker joins: created by the worker at its start, a topic could still be missing from the
    broker's metadata when the group formed, and Faust's assignor leaves it out ("Ignoring
    missing topic": the table never recovers and the worker stalls, seen on a just-started
    broker).
    """
    internal = faust_topics(settings.app_id, settings.topic_prefix, settings.partitions, STAGES)
    wanted = wanted_topics(settings.topic_prefix, settings.partitions) | internal
    changelogs = [name for name in internal if name.endswith("-changelog")]
    return kafka_io.ensure_topics(
        bootstrap, wanted, replication_factor=settings.replication_factor,
        keep_forever=keep_forever, timeout_s=timeout_s, compacted=changelogs,
    )  # fmt: skip


def _headers_of(message: Any) -> dict[str, bytes]:
    raw = message.headers or ()
    items = raw.items() if isinstance(raw, Mapping) else raw
    return {k: (v if isinstance(v, bytes) else str(v).encode()) for k, v in items}


class Sender:
    """Encodes and sends what handlers emitted, to the prefixed Faust topics."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self._topics = {
            t: app.topic(
                topic_name(t, settings.topic_prefix),
                partitions=partitions_of(t, settings.partitions),
                key_serializer="raw",
                value_serializer="raw",
            )
            for t in (spec.topic for spec in TOPICS)
        }
        self._codecs: dict[Topic, TopicCodec] = {}

    def topic(self, topic: Topic) -> faust.TopicT:
        """The Faust topic of ``topic``."""
        return self._topics[topic]

    def _encode(self, topic: Topic, value: Any) -> bytes:
        codec = self._codecs.get(topic)
        if codec is None:
            codec = self._codecs[topic] = topic_codec(topic)
        return codec.encode(value)

    async def send_all(self, out: Emitter) -> list[Awaitable[Any]]:
        """Send every record and watermark of ``out`` in order (at-least-once).

        Returns the sends' delivery futures (done when the broker acknowledged each).
        """
        deliveries: list[Awaitable[Any]] = []
        for item in out.items:
            headers = [(SOURCE_HEADER, item.source.encode())]
            if item.watermark is not None:
                headers.append((WATERMARK_HEADER, str(item.watermark).encode()))
                value = b""
            elif item.encoded is not None:
                value = item.encoded
            else:
                value = self._encode(item.topic, item.value)
            if item.seq is not None:
                headers.append((SEQ_HEADER, str(item.seq).encode()))
            if item.span_context is not None:
                headers.extend(trace_headers(item.span_context))
            ts = item.timestamp_ms / 1000.0 if item.timestamp_ms is not None else None
            delivery = await self._topics[item.topic].send(
                key=item.key.encode() if item.key else None,
                value=value,
                partition=item.partition,
                timestamp=ts,
                headers=headers,
            )
            deliveries.append(delivery)
        return deliveries


def batch_progress(raw: Sequence[RawEvent]) -> tuple[dict[TP, int], int | None]:
    """Last offset per partition of a batch, and the highest in-band watermark in it."""
    positions: dict[TP, int] = {}
    watermark: int | None = None
    for e in raw:
        tp = (e.topic, e.partition)
        if e.offset > positions.get(tp, -1):
            positions[tp] = e.offset
        header = e.headers.get(WATERMARK_HEADER)
        if header is None:
            continue
        try:
            wm = parse_watermark(header)
        except InvalidWatermarkError:
            continue  # dispatch dead-lettered it; it says nothing about progress
        if wm < END_OF_STREAM:
            watermark = wm if watermark is None else max(watermark, wm)
    return positions, watermark


class TableStore:
    """A stage's :class:`~streams.agents.durable.StateStore`: its Faust table.

    Each instance's document is written under its own partition's keys with an explicit
    changelog partition, so partition ``p``'s state recovers wherever partition ``p`` of the
    inputs goes. Documents are split into parts (:func:`~streams.agents.durable.state_parts`)
    below the brokers' 1 MB message limit.
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    def load(self, partition: int) -> bytes | None:
        """The document recovered (or last written) for ``partition``."""
        data = self._table.data
        return assemble_state(partition, lambda key: _bytes_or_none(data.get(key)))

    def save(self, partition: int, blob: bytes) -> None:
        """Write ``blob`` locally and to the changelog (sent with the producer's next flush)."""
        data = self._table.data
        current = _bytes_or_none(data.get(state_head_key(partition)))
        for key, value in state_parts(partition, blob, current):
            data[key] = value
            self._table.send_changelog(partition, key, value)


def _bytes_or_none(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


class DurableAgent:
    """One stage's agent: batches through its :class:`StageRuntime`, state flushed on time.

    A batch's input events are acked only at the flush that stores the state they produced,
    and that flush first waits for the batch's outputs to reach the broker: Faust's commit
    (which flushes the producer, so the changelog write lands first) can then only commit
    offsets whose effects are in the table. ``QT_STATE_FLUSH_MS`` trades changelog volume
    against how much a restart re-reads; a stage whose flushes got slow waits
    :data:`FLUSH_COST_FACTOR` times a flush's duration instead, so storing state never takes
    more than a twentieth of its time.
    """

    def __init__(
        self,
        app: faust.App,
        runtime: StageRuntime,
        sender: Sender,
        health: HealthRegistry,
        flush_every_s: float,
        prefix: str,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.sender = sender
        self.health = health
        self.flush_every_s = flush_every_s
        self.inputs = {topic_name(t, prefix) for t in runtime.spec.input_topics}
        self.lock = asyncio.Lock()
        self._held: list[Any] = []
        self._deliveries: list[Awaitable[Any]] = []
        self._last_flush = time.monotonic()
        self._flush_interval_s = flush_every_s

    async def run(self, stream: Any) -> None:
        """The agent body: every batch handled, sent and held for the next flush."""
        name = self.runtime.name
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
            started = time.perf_counter()
            events = self._still_assigned(batch)
            raw = [
                RawEvent(
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    e.message.key,
                    e.message.value,
                    _headers_of(e.message),
                )
                for e in events
            ]
            async with self.lock:
                try:
                    for out in self.runtime.handle(raw):
                        self._deliveries.extend(await self.sender.send_all(out))
                    progress = batch_progress(raw)
                except Exception as exc:
                    # Faust would restart the agent with its state half-applied: report the
                    # crash (liveness fails, the process gets replaced) and re-raise.
                    self.health.crashed(name, exc)
                    log.exception("stage %s crashed handling a batch of %d", name, len(raw))
                    raise
                for event in events:
                    event.message.incref()  # acked by the flush that stores its effects
                self._held.extend(events)
                if self.flush_due():
                    await self._flush_locked()
            if raw:
                elapsed = time.perf_counter() - started
                metrics().stage_latency(name, elapsed / len(raw), len(raw))
                self.health.processed(name, *progress)

    def flush_due(self) -> bool:
        """Whether held events wait longer than the flush interval (an idle stage's last batch)."""
        return bool(self._held) and time.monotonic() - self._last_flush >= self._flush_interval_s

    def _still_assigned(self, events: list[Any]) -> list[Any]:
        """The events this worker may still handle: fetched under the current assignment.

        A batch gathered across a rebalance can carry events of a partition that went to
        another worker, which restores the instance from the table and handles them itself:
        handling them here too would send a second, different copy under the same ``qt-seq``
        numbers and write a state document the new owner never reads. Between the revocation
        and the next assignment the consumer still reports the old assignment, so an event
        is kept only while the flow runs and only from the current generation (Faust's own
        test for its streams). A dropped event is never acked: Faust seeks every partition it
        assigns back to its committed offset, so what this worker still owns comes again.
        """
        app = self.app
        try:
            assigned = app.consumer.assignment()
            generation = app.consumer_generation_id
            active = app.flow_control.is_active()
        except Exception:  # not started: nothing to judge by
            return events
        kept = []
        for e in events:
            m = e.message
            if active and m.generation_id == generation and m.tp in assigned:
                kept.append(e)
            else:
                m.incref()  # take_events acks the batch: this one must not count as handled
        return kept

    async def flush(self) -> None:
        """Store the changed state and ack what it covers (the flush timer, a rebalance)."""
        async with self.lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        if not self._held:
            return
        started = time.perf_counter()
        # Outputs first: a state that says "sent" must never outlive outputs that were not.
        deliveries, self._deliveries = self._deliveries, []
        await asyncio.gather(*deliveries)
        encoding = time.perf_counter()
        self.runtime.flush()
        # The encoding holds the event loop; waiting for the broker above does not.
        encoded_s = time.perf_counter() - encoding
        self._flush_interval_s = max(self.flush_every_s, FLUSH_COST_FACTOR * encoded_s)
        held, self._held = self._held, []
        consumer = self.app.consumer
        for event in held:
            event.message.ack(consumer)
        metrics().state_flush(self.runtime.name, time.perf_counter() - started)

    async def on_revoked(self, revoked: Iterable[Any]) -> None:
        """Store what this worker has, then drop the instances of partitions it lost.

        Faust seeks every partition it assigns back to its committed offset; the instance
        restored from the table skips what it had already applied.
        """
        async with self.lock:
            await self._flush_locked()
            lost = {
                self.runtime.instance_of(tp.partition) for tp in revoked if tp.topic in self.inputs
            }
            self.runtime.forget(lost)


def consumer_highwaters(app: faust.App) -> dict[TP, int | None]:
    """Log end offset of every partition the worker's consumer holds (empty when none)."""
    try:
        consumer = app.consumer
        return {(tp.topic, tp.partition): consumer.highwater(tp) for tp in consumer.assignment()}
    except Exception:  # not started, or between generations during a rebalance
        return {}


def watch_gateway(health: HealthRegistry, settings: Settings, stages: Sequence[StageSpec]) -> None:
    """On testnet, a worker running a reader of ``venue.events`` is not ready while the gateway
    is silent (paper: no gateway, nothing watched): the partitions the gateway's per-symbol
    snapshots go to count from the worker's start, also before their first record."""
    if settings.mode == "testnet" and any(Topic.VENUE_EVENTS in s.input_topics for s in stages):
        partitions = partitions_of(Topic.VENUE_EVENTS, settings.partitions)
        health.watch_feed(
            topic_name(Topic.VENUE_EVENTS, settings.topic_prefix),
            "gateway",
            settings.binance.gateway_silent_after_s,
            "QT_BINANCE__GATEWAY_SILENT_AFTER_S",
            expected={kafka_io.partition_for(s, partitions) for s in settings.symbols},
        )


def add_observability_views(app: faust.App, health: HealthRegistry) -> None:
    """``/health``, ``/ready`` and ``/metrics`` on the worker's web port, and a refresh timer."""

    def refresh() -> None:
        health.refresh(consumer_highwaters(app))

    @app.page("/health")
    async def liveness(view: Any, request: Any) -> Any:
        refresh()
        verdict = health.liveness()
        return view.json(verdict.body, status=verdict.status)

    @app.page("/ready")
    async def readiness(view: Any, request: Any) -> Any:
        refresh()
        verdict = health.readiness()
        return view.json(verdict.body, status=verdict.status)

    @app.page("/metrics")
    async def prometheus(view: Any, request: Any) -> Any:
        refresh()
        # Via headers: aiohttp refuses a content_type argument with parameters (version, charset).
        return view.bytes(metrics().exposition(), headers={"Content-Type": CONTENT_TYPE})

    # Stalls are measured from when input became pending: evaluate often, not only on scrapes.
    @app.timer(interval=min(1.0, health.stall_after_s / 4))
    async def refresh_health() -> None:
        refresh()


def build_app(
    settings: Settings,
    bootstrap: str,
    *,
    embedded: bool,
    web_port: int | None = None,
    stages: Sequence[StageSpec] = STAGES,
) -> faust.App:
    """The Faust app of the declared topology on ``bootstrap``, with health and metrics views.

    One agent per stage of ``stages`` (default: the declaration in ``streams/topology.py``),
    reading its declared inputs.
    """
    app = faust.App(
        app_name(settings.app_id, settings.topic_prefix),
        **cast(dict[str, Any], faust_app_settings(bootstrap, embedded=embedded)),
        web_port=web_port if web_port is not None else settings.web_port,
        web_host=settings.web_host,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        stream_wait_empty=False,
        producer_linger=settings.producer_linger_ms / 1000.0,
    )
    from streams.agents.registry import model_versions, stage_builders

    health = HealthRegistry(settings.stall_after_s)
    health.expect_models()
    watch_gateway(health, settings, stages)
    metrics().set_starting_equity(settings.risk.starting_equity_usd)
    add_observability_views(app, health)
    sender = Sender(app, settings)
    decoder = Decoder(settings.topic_prefix)
    builders = stage_builders(settings, stages)
    # One instance of each stage now: a stage that cannot be built fails the start, not a record.
    health.models_loaded(model_versions([builders[spec.name]() for spec in stages]))
    agents: list[DurableAgent] = []
    for spec in stages:
        inputs = spec.input_topics
        health.register(spec.name, (topic_name(t, settings.topic_prefix) for t in inputs))
        table = app.Table(
            state_table_name(spec.name),
            partitions=state_partitions(spec, settings.partitions),
            key_type=bytes,
            value_type=bytes,
        )
        runtime = StageRuntime(spec, builders[spec.name], TableStore(table), decoder)
        flush_s = settings.state_flush_ms / 1000
        agent = DurableAgent(app, runtime, sender, health, flush_s, settings.topic_prefix)
        agents.append(agent)
        channel = (
            sender.topic(inputs[0])
            if len(inputs) == 1
            else app.topic(
                *(topic_name(t, settings.topic_prefix) for t in inputs),
                key_serializer="raw",
                value_serializer="raw",
            )
        )
        app.agent(channel, name=spec.name)(_named(agent.run, spec.name))
    add_state_flushing(app, agents, settings.state_flush_ms / 1000)
    return app


def _named(run: Callable[[Any], Any], name: str) -> Callable[[Any], Any]:
    """``run`` as a function named ``name`` (Faust names an agent after its function)."""

    async def agent(stream: Any) -> None:
        await run(stream)

    agent.__name__ = name
    return agent


def add_state_flushing(app: faust.App, agents: Sequence[DurableAgent], every_s: float) -> None:
    """A timer that flushes idle stages' state, and the flush-then-forget of a rebalance."""

    @app.timer(interval=every_s)
    async def flush_state() -> None:
        # A busy stage flushes after its batches; this catches the ones that went quiet.
        for agent in agents:
            if agent.flush_due():
                await agent.flush()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_partitions_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        for agent in agents:
            await agent.on_revoked(revoked)
        # Faust flushed its producer before this signal: the documents just stored are still
        # in its buffer, and the partitions' next owner recovers the changelog as it is when
        # the group re-forms. A document missing there would restore older state than the
        # committed offsets assume (inputs between the two never re-read: lost signals).
        await app.producer.flush()

    stop = app.on_stop

    async def flush_then_stop() -> None:
        # A clean stop (SIGTERM, Ctrl-C) stores what each stage handled since its last flush:
        # Faust's own stop revokes and stops the tables first, and the timer never fires
        # again, so the last second's state (a run's end of stream, say) was never stored and
        # the next start handled those inputs again. Bounded: a broker already gone must not
        # hold the stop (the inputs are then handled again, as after a crash).
        for agent in agents:
            try:
                await asyncio.wait_for(agent.flush(), STOP_FLUSH_TIMEOUT_S)
            except Exception as exc:  # the stop goes on; a restart re-reads what was not stored
                log.warning("state of %s not stored at stop: %r", agent.runtime.name, exc)
        await stop()

    app.on_stop = flush_then_stop  # type: ignore[method-assign]


def run_worker(loglevel: str = "info", web_port: int | None = None) -> None:
    """Run one worker of the topology until it is stopped (Ctrl-C / SIGTERM)."""
    from streams.observability import trace_file
    from streams.observability.tracing import setup_tracing

    settings = get_settings()
    provider = setup_tracing(settings.app_id, trace_file(settings))
    atexit.register(provider.shutdown)  # flushes the last spans on a clean stop (SIGTERM)
    with resolve_bootstrap(settings) as broker:
        embedded = broker.embedded or settings.kafka_embedded
        ensure_topics(broker.bootstrap, settings)
        app = build_app(settings, broker.bootstrap, embedded=embedded, web_port=web_port)
        worker = faust.Worker(app, loglevel=loglevel)
        worker.execute_from_commandline()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="one Faust worker of the topology")
    parser.add_argument("--loglevel", default="info")
    parser.add_argument("--web-port", type=int, default=None)
    args = parser.parse_args()
    run_worker(loglevel=args.loglevel, web_port=args.web_port)
