"""The one-hop ceiling: one agent forwards every record of ``market.ticks`` to one topic.

It is the cheapest Faust stage that does what every stage of the topology must do at least
once per record: consume raw bytes in ``take_events`` batches (the same ``BATCH_MAX`` and
``BATCH_WITHIN`` as :mod:`streams.app`) and produce one record per input record. It runs with
the topology's worker settings (:func:`streams.brokers.faust_settings.faust_app_settings`), so
the difference between this figure and the topology's is the cost of the stages themselves.

Each record keeps its key, value bytes, headers, timestamp and partition index, so per-partition
order survives and the end-of-stream watermark the replay sends last on each partition is also
the last record out of it (that is how the benchmark knows the hop has drained).

Run as a worker: ``python -m tests.benchmarks.apps.passthrough`` with ``QT_KAFKA_BOOTSTRAP``,
``QT_KAFKA_EMBEDDED``, ``QT_TOPIC_PREFIX``, ``QT_PARTITIONS`` and ``QT_WEB_PORT`` set
(``QT_PRODUCER_LINGER_MS`` as the topology's workers read it, default 0).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, cast

import faust

from streams.app import BATCH_MAX, BATCH_WITHIN
from streams.brokers.faust_settings import faust_app_settings
from streams.topics import Topic, topic_name

#: Base name of the output topic (under the run's prefix).
OUTPUT_TOPIC = "bench.hop-out"
#: App id stem; the prefix makes each run a fresh consumer group.
APP_ID = "qt-bench-passthrough"


def app_id_for(prefix: str) -> str:
    """The Faust app id (= consumer group) of a run under ``prefix``."""
    return f"{APP_ID}-{prefix.rstrip('.')}" if prefix else APP_ID


def _headers_of(message: Any) -> list[tuple[str, bytes]]:
    """Message headers as a list of ``(key, bytes)`` pairs, whatever form Faust handed over."""
    raw = message.headers or ()
    items = raw.items() if isinstance(raw, Mapping) else raw
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def build_passthrough_app(
    bootstrap: str,
    prefix: str,
    *,
    embedded: bool,
    partitions: int,
    web_port: int,
    linger_ms: int = 0,
) -> faust.App:
    """The app on ``bootstrap``: ``<prefix>market.ticks`` -> ``<prefix>`` + :data:`OUTPUT_TOPIC`."""
    app = faust.App(
        app_id_for(prefix),
        **cast(dict[str, Any], faust_app_settings(bootstrap, embedded=embedded)),
        web_port=web_port,
        web_host="127.0.0.1",
        producer_linger=linger_ms / 1000.0,
        topic_partitions=partitions,
        stream_wait_empty=False,
    )
    source = app.topic(
        topic_name(Topic.MARKET_TICKS, prefix),
        partitions=partitions,
        key_serializer="raw",
        value_serializer="raw",
    )
    sink = app.topic(
        f"{prefix}{OUTPUT_TOPIC}",
        partitions=partitions,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def forward(stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
            for event in events:
                message = event.message
                await sink.send(
                    key=message.key,
                    value=message.value,
                    partition=message.partition,
                    timestamp=message.timestamp,
                    headers=_headers_of(message),
                )

    app.agent(source, name="passthrough")(forward)
    return app


def main() -> None:
    """Run one worker of the pass-through app, configured from the environment."""
    app = build_passthrough_app(
        os.environ["QT_KAFKA_BOOTSTRAP"],
        os.environ.get("QT_TOPIC_PREFIX", ""),
        embedded=os.environ.get("QT_KAFKA_EMBEDDED", "false").lower() == "true",
        partitions=int(os.environ.get("QT_PARTITIONS", "4")),
        web_port=int(os.environ.get("QT_WEB_PORT", "6066")),
        linger_ms=int(os.environ.get("QT_PRODUCER_LINGER_MS", "0")),
    )
    faust.Worker(
        app, loglevel=os.environ.get("QTBENCH_LOGLEVEL", "warning")
    ).execute_from_commandline()


if __name__ == "__main__":
    main()
