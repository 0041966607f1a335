"""Brokers: the embedded Tansu broker, the real-Kafka handle, and Faust settings for each.

Public API (import from here)::

    resolve_bootstrap(settings) -> BrokerHandle   # context manager; .bootstrap, .embedded
    faust_app_settings(bootstrap, *, embedded) -> dict[str, object]  # faust.App(id, **...)
    EmbeddedBroker(port=None)   # context manager; .bootstrap, .start(), .stop()
    BrokerError, BrokerBinaryMissingError, BrokerNotReadyError

Real Apache Kafka for tests and development is started by ``infra/kafka/kafka.sh``
(``make kafka``), not from Python. Tansu's protocol gaps are worked around only in
:mod:`streams.brokers.tansu_workarounds`.
"""

from streams.brokers.embedded import (
    BrokerBinaryMissingError,
    BrokerError,
    BrokerNotReadyError,
    EmbeddedBroker,
)
from streams.brokers.faust_settings import BrokerHandle, faust_app_settings, resolve_bootstrap

__all__ = [
    "BrokerBinaryMissingError",
    "BrokerError",
    "BrokerHandle",
    "BrokerNotReadyError",
    "EmbeddedBroker",
    "faust_app_settings",
    "resolve_bootstrap",
]
