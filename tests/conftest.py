"""Shared pytest fixtures: brokers and topic isolation. Keep these names stable.

Fixtures
--------
``kafka_bootstrap`` (session) -> str
    A real Apache Kafka. ``QT_KAFKA_BOOTSTRAP`` if set (nothing is started or stopped);
    otherwise ``infra/kafka/kafka.sh start`` on 127.0.0.1:``KAFKA_TEST_PORT`` (default 19192,
    apart from the development broker on 19092), once per session. Sessions running at the same
    time share that broker through lease files; the last one out stops it, and only if a test
    session started it. Skips when Java or Maven is missing (point QT_KAFKA_BOOTSTRAP at a
    broker instead). Mark tests that use it ``@pytest.mark.kafka``.
``embedded_bootstrap`` (session) -> str
    The embedded Tansu broker on a free loopback port, stopped at the end of the session.
    Mark tests ``@pytest.mark.embedded``. Remember its limits (streams/brokers/tansu_workarounds).
``unique_prefix`` -> str
    A topic prefix like ``t3f9a0c1b2d.`` for this test; pass it as QT_TOPIC_PREFIX / app id
    suffix so tests never see each other's topics or consumer groups.
``topic_creator`` -> the :func:`create_topics` function below.

Helpers (``from tests.kafka_topics import create_topics, wait_for_topics``)
-------------------------------------------------------------------------
``create_topics(bootstrap, names, partitions=1)`` creates topics through confluent-kafka's
AdminClient and returns once the broker's metadata lists them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = ROOT / "infra" / "kafka" / "kafka.sh"
KAFKA_TEST_PORT = int(os.environ.get("KAFKA_TEST_PORT", "19192"))

# Test helpers live in modules under tests/ (e.g. tests.integration.apps.harness), imported by
# their full name from tests and from worker subprocesses alike; pytest's own rootdir handling
# does not put the repository root on sys.path, so do it here.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from tests.kafka_topics import TopicSetupError, create_topics, wait_for_topics  # noqa: E402

__all__ = ["TopicSetupError", "create_topics", "wait_for_topics"]


# --- real Kafka, shared between concurrent test sessions through leases ---------------------


def _kafka_state_dir(port: int) -> Path:
    return Path(os.environ.get("KAFKA_HOME", ROOT / ".kafka")) / str(port)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_leases(lease_dir: Path) -> list[Path]:
    """Lease files of sessions still running; stale ones (dead pids) are removed."""
    live = []
    for lease in lease_dir.glob("*.lease"):
        if _pid_alive(int(lease.stem)):
            live.append(lease)
        else:
            lease.unlink(missing_ok=True)
    return live


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _kafka_sh(action: str, port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_PORT": str(port)}
    return subprocess.run(
        ["bash", str(KAFKA_SH), action],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # the first start resolves jars from Maven Central
        check=False,
    )


def _start_test_kafka(port: int) -> None:
    """Take a lease on the test broker, starting it (and marking it ours) if needed."""
    state = _kafka_state_dir(port)
    lease_dir = state.parent / f"{port}.leases"
    with _locked(state.parent / f"{port}.lock"):
        lease_dir.mkdir(parents=True, exist_ok=True)
        if _kafka_sh("status", port).returncode != 0:
            result = _kafka_sh("start", port)
            if result.returncode != 0:
                pytest.fail(
                    f"could not start Kafka on 127.0.0.1:{port}:\n{result.stderr[-3000:]}",
                    pytrace=False,
                )
            (lease_dir / "started-by-tests").touch()
        (lease_dir / f"{os.getpid()}.lease").touch()


def _release_test_kafka(port: int) -> None:
    """Drop our lease; the last session out stops the broker if a test session started it."""
    state = _kafka_state_dir(port)
    lease_dir = state.parent / f"{port}.leases"
    with _locked(state.parent / f"{port}.lock"):
        (lease_dir / f"{os.getpid()}.lease").unlink(missing_ok=True)
        marker = lease_dir / "started-by-tests"
        if not _live_leases(lease_dir) and marker.exists():
            _kafka_sh("stop", port)
            marker.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Apache Kafka (see the module docstring)."""
    configured = os.environ.get("QT_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            pytest.skip(f"no '{tool}' to run Apache Kafka; set QT_KAFKA_BOOTSTRAP to a broker")
    _start_test_kafka(KAFKA_TEST_PORT)
    try:
        yield f"127.0.0.1:{KAFKA_TEST_PORT}"
    finally:
        _release_test_kafka(KAFKA_TEST_PORT)


@pytest.fixture(scope="session")
def embedded_bootstrap() -> Iterator[str]:
    """Bootstrap of an embedded Tansu broker shared by the session."""
    from streams.brokers import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture
def unique_prefix() -> str:
    """A fresh topic prefix (``t<10 hex>.``) so each test owns its topics and groups."""
    return f"t{secrets.token_hex(5)}."


@pytest.fixture
def topic_creator() -> Callable[..., None]:
    """:func:`create_topics`, for tests that prefer a fixture to an import."""
    return create_topics
