"""The B5 rule of the embedded-broker workarounds: when the next Fetch waits long."""

from __future__ import annotations

from streams.brokers.tansu_workarounds import (
    FETCH_MAX_WAIT_MS,
    STARVED_FETCH_WAIT_MS,
    next_fetch_wait_ms,
    starved_partitions,
)


def test_a_partition_behind_its_high_watermark_without_records_is_starved() -> None:
    requested = [("bars", 120), ("ticks", 40), ("idle", 7), ("new", 0)]
    highwaters = {"bars": 32_407, "ticks": 900, "idle": 7, "new": None}
    got = {"ticks": object()}  # records came back for ticks only
    assert starved_partitions(requested, highwaters.get, got) == ["bars"]


def test_caught_up_or_served_partitions_are_not_starved() -> None:
    requested = [("a", 10), ("b", 10)]
    assert starved_partitions(requested, {"a": 10, "b": 99}.get, {"b": object()}) == []


def test_the_wait_is_long_only_right_after_a_starved_answer() -> None:
    assert next_fetch_wait_ms(1, FETCH_MAX_WAIT_MS) == STARVED_FETCH_WAIT_MS
    assert next_fetch_wait_ms(0, FETCH_MAX_WAIT_MS) == FETCH_MAX_WAIT_MS
    assert STARVED_FETCH_WAIT_MS > FETCH_MAX_WAIT_MS


def test_apply_installs_the_fetch_round_and_remove_restores_it() -> None:
    from aiokafka.consumer.fetcher import Fetcher

    from streams.brokers import tansu_workarounds

    tansu_workarounds.remove()  # start clean whatever ran before
    stock = Fetcher._proc_fetch_request
    tansu_workarounds.apply("127.0.0.1:1")
    try:
        assert Fetcher._proc_fetch_request is not stock
        assert tansu_workarounds.is_embedded(["127.0.0.1:1"])
    finally:
        tansu_workarounds.remove()
    assert Fetcher._proc_fetch_request is stock
    assert not tansu_workarounds.is_embedded(["127.0.0.1:1"])
