"""Pass-through: every record of ``<prefix>pass-in`` goes to ``<prefix>pass-out`` unchanged.

Key, value bytes and headers are forwarded as they are; the smoke test checks all three.
"""

from __future__ import annotations

import os

from tests.integration.apps import app_from_env

app = app_from_env("passthrough")
_prefix = os.environ["QTTEST_PREFIX"]
source = app.topic(f"{_prefix}pass-in", key_serializer="raw", value_serializer="raw")
sink = app.topic(f"{_prefix}pass-out", key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def forward(stream):  # type: ignore[no-untyped-def]
    """Send each event on with its key, value and headers."""
    async for event in stream.events():
        await sink.send(key=event.key, value=event.value, headers=event.headers)
