"""Prometheus metrics and health of the live ingest (``quantum-trader live``), read at scrape time.

The ingest is its own process (the worker may run beside it or elsewhere), so it has its own
registry and HTTP endpoints (``QT_LIVE__METRICS_PORT``, default 6067):

* ``/metrics``: the ``qt_live_*`` families of :data:`INGEST_METRICS`, produced by
  :class:`IngestCollector` from the ingest's own counters when Prometheus scrapes (no second
  copy of any count to keep in step);
* ``/health``: 200 while the ingest loop runs without a failure;
* ``/ready``: 200 only while every connection is up and no stream has been silent beyond its
  idle watchdog (``QT_LIVE__IDLE_TIMEOUT_S``), 503 otherwise, with the body saying which.

Wall-clock time is right here: this is about the process and its connections. The lag to the
exchange is in exchange time: the newest event time any message carried minus the close of the
newest kline produced to ``market.ticks``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from streams.observability.metrics import MetricSpec

if TYPE_CHECKING:
    from aiohttp import web

    from streams.adapters.live.ingest import LiveIngest

#: The ingest's metric set; the contract with infra/ like the worker's ``AGREED``.
INGEST_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("qt_live_ready", "gauge", ("market",),
               "1 = every connection up and no stream silent beyond its idle watchdog"),
    MetricSpec("qt_live_exchange_lag_seconds", "gauge", ("market",),
               "exchange clock minus the close of the newest kline produced"),
    MetricSpec("qt_live_connected", "gauge", ("connection",), "1 = the connection is open"),
    MetricSpec("qt_live_messages_total", "counter", ("connection",), "websocket messages"),
    MetricSpec("qt_live_reconnects_total", "counter", ("connection",),
               "sessions that ended and were replaced (drops, stalls, rotations)"),
    MetricSpec("qt_live_idle_timeouts_total", "counter", ("connection",),
               "sessions replaced because a stream stayed silent beyond the watchdog"),
    MetricSpec("qt_live_stream_last_message_timestamp_seconds", "gauge", ("stream",),
               "wall clock (unix s) of the stream's last message"),
    MetricSpec("qt_live_ticks_total", "counter", ("market",), "klines produced to market.ticks"),
    MetricSpec("qt_live_backfilled_total", "counter", ("market",),
               "klines that came over REST, not the stream"),
    MetricSpec("qt_live_duplicates_total", "counter", ("market",), "klines dropped as seen"),
    MetricSpec("qt_live_warmup_klines_total", "counter", ("symbol",),
               "history klines fetched for a joiner's warm-up (sent with its first kline)"),
    MetricSpec("qt_live_missing_klines_total", "counter", ("symbol",),
               "minutes the exchange has no kline for (counted, never invented)"),
    MetricSpec("qt_live_rest_requests_total", "counter", ("market",), "REST requests made"),
    MetricSpec("qt_live_rest_rate_limited_total", "counter", ("market",),
               "REST answers 429/418 waited out (Retry-After)"),
    MetricSpec("qt_live_dead_letters_total", "counter", ("market",),
               "messages that were no usable kline (dead-lettered)"),
    MetricSpec("qt_live_universe_refreshes_total", "counter", ("market",),
               "universe selections recomputed on the exchange clock (--universe)"),
    MetricSpec("qt_live_universe_symbols", "gauge", ("state",),
               "symbols of the live universe: member, or winding_down (left, still streamed)"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Readiness:
    """``/ready``'s verdict and why."""

    ready: bool
    down: tuple[str, ...]  # connections not open
    silent: tuple[str, ...]  # streams past the idle watchdog

    def as_dict(self) -> dict[str, Any]:
        """JSON body of ``/ready``."""
        return {"ready": self.ready, "down": list(self.down), "silent": list(self.silent)}


def readiness(ingest: LiveIngest, now: float | None = None) -> Readiness:
    """Every connection open, no stream silent longer than the idle timeout."""
    now = time.monotonic() if now is None else now
    timeout = ingest.config.idle_timeout_s
    down = tuple(c.name for c in ingest.summary.connections if not c.connected)
    silent = tuple(
        s for c in ingest.summary.connections for s in c.stale_streams(now, timeout, now - timeout)
    )
    return Readiness(not down and not silent, down, silent)


def exchange_lag_s(clock_ms: int | None, last_open_ms: int | None) -> float | None:
    """Exchange time since the newest produced kline closed (``None`` before either is known)."""
    if clock_ms is None or last_open_ms is None:
        return None
    return max(0.0, (clock_ms - (last_open_ms + 60_000)) / 1000)


class IngestCollector:
    """A prometheus_client collector over one :class:`LiveIngest` (or none: families only)."""

    def __init__(
        self,
        ingest: LiveIngest | None,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ingest = ingest
        self._wall = wall
        self._mono = mono

    def collect(self) -> Iterator[Metric]:
        """One family per spec of :data:`INGEST_METRICS`, samples from the ingest's counts."""
        families = {spec.name: _family(spec) for spec in INGEST_METRICS}
        if self.ingest is not None:
            self._fill(families, self.ingest)
        yield from families.values()

    def _fill(self, f: dict[str, Any], ingest: LiveIngest) -> None:
        market, s = ingest.config.market, ingest.summary
        f["qt_live_ready"].add_metric([market], float(readiness(ingest, self._mono()).ready))
        lag = exchange_lag_s(ingest.sequencer.clock_ms, s.last_event_ms)
        if lag is not None:
            f["qt_live_exchange_lag_seconds"].add_metric([market], lag)
        offset = self._wall() - self._mono()  # monotonic -> unix seconds
        for c in s.connections:
            f["qt_live_connected"].add_metric([c.name], float(c.connected))
            f["qt_live_messages_total"].add_metric([c.name], c.messages)
            f["qt_live_reconnects_total"].add_metric([c.name], c.reconnects)
            f["qt_live_idle_timeouts_total"].add_metric([c.name], c.idle_timeouts)
            for stream, at in sorted(c.last_message.items()):
                f["qt_live_stream_last_message_timestamp_seconds"].add_metric([stream], at + offset)
        for name, value in (
            ("qt_live_ticks_total", s.ticks), ("qt_live_backfilled_total", s.backfilled),
            ("qt_live_duplicates_total", s.sequencer.duplicates),
            ("qt_live_rest_requests_total", s.rest.requests),
            ("qt_live_rest_rate_limited_total", s.rest.rate_limited),
            ("qt_live_dead_letters_total", s.dead_letters),
        ):  # fmt: skip
            f[name].add_metric([market], value)
        for symbol, n in sorted(s.sequencer.missing.items()):
            f["qt_live_missing_klines_total"].add_metric([symbol], n)
        for symbol, n in sorted(s.sequencer.history.items()):
            f["qt_live_warmup_klines_total"].add_metric([symbol], n)
        tracker = ingest.universe
        if tracker is not None:
            f["qt_live_universe_refreshes_total"].add_metric([market], s.universe_refreshes)
            members = tracker.current.symbols if tracker.current is not None else ()
            f["qt_live_universe_symbols"].add_metric(["member"], len(members))
            f["qt_live_universe_symbols"].add_metric(["winding_down"], len(tracker.winding_down))


def _family(spec: MetricSpec) -> Any:
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


def ingest_registry(ingest: LiveIngest | None) -> CollectorRegistry:
    """A registry holding only the ingest's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(ingest))
    return registry


def ingest_metric_names() -> frozenset[str]:
    """The names a scrape of the ingest shows (counters with ``_total``), as PromQL sees them."""
    names = set()
    for family in ingest_registry(None).collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return frozenset(names)


def health_app(ingest: LiveIngest, registry: CollectorRegistry) -> web.Application:
    """The aiohttp app of ``/metrics``, ``/health`` and ``/ready`` (see the module doc)."""
    from aiohttp import web

    from streams.observability.metrics import CONTENT_TYPE

    async def metrics_view(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def health_view(request: web.Request) -> web.Response:
        failure = ingest.failure
        body = {"alive": failure is None, "error": None if failure is None else str(failure)}
        return web.json_response(body, status=200 if failure is None else 503)

    async def ready_view(request: web.Request) -> web.Response:
        verdict = readiness(ingest)
        return web.json_response(verdict.as_dict(), status=200 if verdict.ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/health", health_view)
    app.router.add_get("/ready", ready_view)
    return app


async def serve_health(ingest: LiveIngest, host: str, port: int) -> web.AppRunner:
    """Start :func:`health_app` on ``host:port`` (0: any free port); ``await runner.cleanup()``."""
    from aiohttp import web

    runner = web.AppRunner(health_app(ingest, ingest_registry(ingest)), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a :func:`serve_health` runner listens on."""
    for site in runner.sites:
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
    raise RuntimeError("the health server is not listening")
