"""Tiny Faust apps that integration tests run as real worker subprocesses.

Each app is configured only through the environment, so a test can start
``python -m faust -A tests.integration.apps.<name> worker`` with its own broker, app id and
topic prefix (never through QT_* variables, which the project's settings reserve):

- ``QTTEST_BOOTSTRAP``  host:port of the broker
- ``QTTEST_EMBEDDED``   "1" when it is the embedded Tansu broker (applies the workarounds)
- ``QTTEST_PREFIX``     topic prefix and app-id suffix of this test, e.g. ``t3f9a0c1b2d.``
- ``QTTEST_DATADIR``    the worker's local data directory
"""

from __future__ import annotations

import os

import faust

from streams.brokers import faust_app_settings


def app_from_env(name: str) -> faust.App:
    """A worker app for the broker, prefix and data dir given in the environment."""
    bootstrap = os.environ["QTTEST_BOOTSTRAP"]
    prefix = os.environ["QTTEST_PREFIX"]
    return faust.App(
        f"{prefix}{name}",
        datadir=os.environ["QTTEST_DATADIR"],
        store="memory://",
        web_enabled=False,
        topic_partitions=2,
        **faust_app_settings(bootstrap, embedded=os.environ.get("QTTEST_EMBEDDED") == "1"),
    )
