"""Tiny Faust apps that integration tests run as real worker subprocesses.

Each app is configured only through the environment, so a test can start
``python -m faust -A tests.integration.apps.<name> worker`` with its own broker, app id and
topic prefix (never through QT_* variables, which the project's settings reserve):

- ``QTTEST_BOOTSTRAP``  host:port of the broker
- ``QTTEST_EMBEDDED``   "1" when it is the embedded Tansu broker (applies the workarounds)
- ``QTTEST_PREFIX``     topic prefix and app-id suffix of this test, e.g. ``t3f9a0c1b2d.``
- ``QTTEST_DATADIR``    the worker's local data directory
- ``QTTEST_PARTITIONS`` partitions of the app's input topic and table, where the app says so
- ``QTTEST_FAUST_PATCHES`` "off" runs the worker on unpatched Faust (to see what
  ``streams.brokers.faust_patches`` fixes); anything else, or unset, keeps the patches
"""

from __future__ import annotations

import os

import faust

from streams.brokers import faust_app_settings, faust_patches


def partitions_from_env(default: int = 2) -> int:
    """``QTTEST_PARTITIONS``, for apps whose partition count a test chooses."""
    return int(os.environ.get("QTTEST_PARTITIONS", default))


def app_from_env(name: str, **overrides: object) -> faust.App:
    """A worker app for the broker, prefix and data dir given in the environment."""
    bootstrap = os.environ["QTTEST_BOOTSTRAP"]
    prefix = os.environ["QTTEST_PREFIX"]
    settings: dict[str, object] = {
        "datadir": os.environ["QTTEST_DATADIR"],
        "store": "memory://",
        "web_enabled": False,
        "topic_partitions": 2,
        **faust_app_settings(bootstrap, embedded=os.environ.get("QTTEST_EMBEDDED") == "1"),
        **overrides,
    }
    if os.environ.get("QTTEST_FAUST_PATCHES") == "off":
        faust_patches.remove()
    return faust.App(f"{prefix}{name}", **settings)


def add_kline(state: dict[str, float], offset: int, volume: float) -> dict[str, float] | None:
    """The new total after one kline, or None when this offset was already counted.

    The total keeps the source offset of the last kline it counted: after a SIGKILL a worker
    re-reads what it had processed but not committed, and the changelog already holds its
    effect (at-least-once delivery, idempotent state).
    """
    if offset <= state.get("offset", -1):
        return None
    return {
        "n": state.get("n", 0) + 1,
        "volume": state.get("volume", 0.0) + volume,
        "offset": offset,
    }
