"""Topic helpers for tests (a module, not conftest: several conftest.py files exist)."""

from __future__ import annotations

import time
from collections.abc import Iterable


class TopicSetupError(RuntimeError):
    """Topics could not be created or did not show up in the broker's metadata."""


def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    *,
    replication: int = 1,
    config: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Create ``names`` (existing ones are left alone) and wait until metadata lists them.

    Time retention is off unless ``config`` sets it: test records carry old event times, which
    a broker's time retention deletes at its next check, in the middle of a test.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    wanted = list(names)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(n, partitions, replication, config={"retention.ms": "-1", **(config or {})})
            for n in wanted
        ],
        request_timeout=timeout_s,
    )
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                msg = f"cannot create topic {name!r} on {bootstrap}: {exc}"
                raise TopicSetupError(msg) from exc
    wait_for_topics(bootstrap, wanted, partitions, timeout_s=timeout_s)


def wait_for_topics(
    bootstrap: str, names: Iterable[str], partitions: int = 1, *, timeout_s: float = 30.0
) -> None:
    """Block until every topic in ``names`` has ``partitions`` partitions with a leader."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = set(names)
    deadline = time.monotonic() + timeout_s
    missing = wanted
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=5).topics
        missing = {
            n
            for n in wanted
            if n not in topics
            or len(topics[n].partitions) < partitions
            or any(p.leader < 0 for p in topics[n].partitions.values())
        }
        if not missing:
            return
        time.sleep(0.1)
    raise TopicSetupError(f"topics not ready on {bootstrap} after {timeout_s} s: {sorted(missing)}")
