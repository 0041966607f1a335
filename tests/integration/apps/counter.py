"""Counter: per symbol, the number of klines and the running volume, kept in a Faust table.

``<prefix>klines`` (key symbol, JSON value with ``volume``) -> table ``totals`` (changelog
``<app id>-totals-changelog``) -> ``<prefix>totals`` (key symbol, the table's new value).

The table also keeps the source offset of the last kline it counted, and skips a kline at or
below it: after a SIGKILL the worker re-reads what it had processed but not committed, and the
changelog already holds its effect (at-least-once delivery, idempotent state).
"""

from __future__ import annotations

import os

from tests.integration.apps import add_kline, app_from_env

app = app_from_env("counter")
_prefix = os.environ["QTTEST_PREFIX"]
klines = app.topic(f"{_prefix}klines", key_serializer="raw", value_serializer="json", partitions=2)
totals_out = app.topic(f"{_prefix}totals", key_serializer="raw", value_serializer="json")
# str keys: Faust decodes changelog keys as JSON on recovery, so raw bytes keys would not
# survive a restart (recovery logs "Expecting value" per record and never completes).
totals = app.Table("totals", default=dict, partitions=2, key_type=str)


@app.agent(klines)
async def count(stream):  # type: ignore[no-untyped-def]
    """Update the symbol's total and publish it."""
    async for event in stream.events():
        symbol = event.key.decode()
        new = add_kline(totals[symbol], event.message.offset, float(event.value["volume"]))
        if new is None:
            continue
        totals[symbol] = new
        await totals_out.send(key=event.key, value=new)
