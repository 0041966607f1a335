"""Which broker a worker talks to, and the faust.App settings that go with it.

``streams/app.py`` does::

    with resolve_bootstrap(settings) as broker:
        app = faust.App(settings.app_id, **faust_app_settings(broker.bootstrap,
                                                              embedded=broker.embedded))

With ``QT_KAFKA_BOOTSTRAP`` set the handle just carries it; otherwise it starts the embedded
Tansu broker on loopback and stops it when the ``with`` block ends.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from streams.brokers import faust_patches, tansu_workarounds
from streams.brokers.embedded import BrokerError, EmbeddedBroker, is_tansu

#: Real Kafka: notice a SIGKILLed worker in 10 s instead of Faust's 60 s (faster failover in
#: tests and restarts); heartbeats at a third of it, as Kafka recommends.
SESSION_TIMEOUT_S = 10.0
HEARTBEAT_INTERVAL_S = 3.0


class _HasBootstrap(Protocol):
    """The part of :class:`streams.config.Settings` this module reads."""

    @property
    def kafka_bootstrap(self) -> str | None: ...


def broker_urls(bootstrap: str) -> list[str]:
    """``"h1:9092,h2:9092"`` -> ``["kafka://h1:9092", "kafka://h2:9092"]`` (Faust's form)."""
    servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
    if not servers:
        raise BrokerError(f"empty bootstrap server list: {bootstrap!r}")
    return [s if s.startswith("kafka://") else f"kafka://{s}" for s in servers]


def faust_app_settings(bootstrap: str, *, embedded: bool) -> dict[str, object]:
    """Keyword settings for ``faust.App`` to use the broker at ``bootstrap``.

    ``embedded=True`` also installs the Tansu workarounds for this bootstrap (process-wide,
    but only for apps connecting to it) and merges the settings they need: a short session
    timeout and at-least-once processing (Tansu has no transactions). On real Kafka,
    ``processing_guarantee`` is left to the caller, so exactly-once stays possible.

    Every call also makes sure :mod:`streams.brokers.faust_patches` is installed (the Faust
    fixes every broker needs; it refuses a Faust version it was not written for).
    """
    faust_patches.apply()
    settings: dict[str, object] = {
        "broker": broker_urls(bootstrap),
        "broker_session_timeout": SESSION_TIMEOUT_S,
        "broker_heartbeat_interval": HEARTBEAT_INTERVAL_S,
        # Durability: a record is acknowledged only once the (single or all in-sync) replica has it.
        "producer_acks": -1,
        # A new app id replays its input topics from the start instead of skipping them.
        "consumer_auto_offset_reset": "earliest",
    }
    if embedded:
        tansu_workarounds.apply(bootstrap)
        settings.update(tansu_workarounds.faust_overrides())
    return settings


class BrokerHandle:
    """The broker a process uses: a configured one, or an embedded one it owns and stops.

    ``embedded`` is True for any Tansu broker (so the workarounds apply), also one configured
    through QT_KAFKA_BOOTSTRAP (e.g. started by `quantum-trader broker`); ``owns_broker`` only
    when this handle started it.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        embedded: bool = False,
        embedded_broker: EmbeddedBroker | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.embedded = embedded or embedded_broker is not None
        self._embedded_broker = embedded_broker

    @property
    def owns_broker(self) -> bool:
        """True when this handle started (and will stop) the broker."""
        return self._embedded_broker is not None

    def close(self) -> None:
        """Stop the embedded broker, if this handle started one; idempotent."""
        if self._embedded_broker is not None:
            self._embedded_broker.stop()

    def __enter__(self) -> BrokerHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "embedded" if self.embedded else "kafka"
        kind += ", owned" if self.owns_broker else ""
        return f"BrokerHandle({self.bootstrap!r}, {kind})"


def resolve_bootstrap(settings: _HasBootstrap) -> BrokerHandle:
    """The configured ``kafka_bootstrap``, or a freshly started embedded broker on loopback.

    The embedded broker is running when this returns; close the handle (or use it as a
    context manager) to stop it. Raises :class:`BrokerError` subclasses when it cannot start.
    """
    if settings.kafka_bootstrap:
        # One metadata request: a configured Tansu (e.g. `quantum-trader broker`) still needs
        # the workarounds; an unreachable broker is left to the worker to report.
        return BrokerHandle(settings.kafka_bootstrap, embedded=is_tansu(settings.kafka_bootstrap))
    broker = EmbeddedBroker()
    bootstrap = broker.start()
    return BrokerHandle(bootstrap, embedded_broker=broker)
