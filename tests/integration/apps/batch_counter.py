"""Batch counter: the counter app's table, driven the way the topology drives its stages.

Same input, table and output as :mod:`tests.integration.apps.counter`, but the agent takes
batches with ``stream.take_events(BATCH_MAX, within=BATCH_WITHIN)`` (the topology's numbers,
from :mod:`streams.app`), writes the table for the whole batch and then sends, as
``streams/app.py`` does. The app runs with ``stream_wait_empty=False`` like the topology, and
with ``QTTEST_PARTITIONS`` partitions (default 2) for its input and its table, and
``QTTEST_WORK_S`` seconds of simulated work per batch.
"""

from __future__ import annotations

import asyncio
import os
import weakref

from faust.streams import _current_event

from streams.app import BATCH_MAX, BATCH_WITHIN
from tests.integration.apps import add_kline, app_from_env, partitions_from_env

_partitions = partitions_from_env()
#: Seconds of work per batch (QTTEST_WORK_S, default 0): a real stage scores models, merges
#: and sends for a while, during which the fetcher keeps filling the agent's queue.
_work_s = float(os.environ.get("QTTEST_WORK_S", "0"))
app = app_from_env("batch-counter", stream_wait_empty=False, topic_partitions=_partitions)
_prefix = os.environ["QTTEST_PREFIX"]
klines = app.topic(
    f"{_prefix}klines", key_serializer="raw", value_serializer="json", partitions=_partitions
)
totals_out = app.topic(f"{_prefix}totals", key_serializer="raw", value_serializer="json")
totals = app.Table("totals", default=dict, partitions=_partitions, key_type=str)


@app.agent(klines)
async def count(stream):  # type: ignore[no-untyped-def]
    """Update each symbol's total for a batch, then publish the new totals."""
    async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
        changed: dict[bytes, dict[str, float]] = {}
        for event in events:
            # A table write takes its changelog partition from the current event, which
            # take_events does not set; set it for this task only (the stream's own
            # current_event belongs to the task filling the next batch).
            _current_event.set(weakref.ref(event))
            symbol = event.key.decode()
            new = add_kline(totals[symbol], event.message.offset, float(event.value["volume"]))
            if new is not None:
                totals[symbol] = changed[event.key] = new
        if _work_s:
            await asyncio.sleep(_work_s)
        for key, value in changed.items():
            await totals_out.send(key=key, value=value)
