"""The k-way merge that puts a recorded topic's partitions back into event-time order."""

from __future__ import annotations

import random

from streams.adapters.replay.interleave import PartitionInterleave


def released(merge: PartitionInterleave[str]) -> list[tuple[int, int, str]]:
    return [(r.time_ms, r.partition, r.item) for r in merge.pop_ready()]


def test_nothing_is_released_while_an_open_partition_has_nothing_buffered() -> None:
    merge: PartitionInterleave[str] = PartitionInterleave([0, 1])
    merge.push(0, 60_000, "a0")
    merge.push(0, 120_000, "a1")
    assert released(merge) == []  # partition 1 may still send something earlier
    merge.push(1, 90_000, "b0")
    assert released(merge) == [(60_000, 0, "a0"), (90_000, 1, "b0")]
    merge.close(1)
    assert released(merge) == [(120_000, 0, "a1")]


def test_any_arrival_order_gives_one_event_time_order() -> None:
    records = {p: [(t * 60_000, f"{p}:{t}") for t in range(p, 50, p + 1)] for p in range(3)}
    expected = sorted((t, p, item) for p, rows in records.items() for t, item in rows)
    rng = random.Random(3)
    for _attempt in range(20):
        merge: PartitionInterleave[str] = PartitionInterleave(records)
        cursors = dict.fromkeys(records, 0)
        out: list[tuple[int, int, str]] = []
        while any(cursors[p] < len(records[p]) for p in records):
            p = rng.choice([p for p in records if cursors[p] < len(records[p])])
            merge.push(p, *records[p][cursors[p]])
            cursors[p] += 1
            if cursors[p] == len(records[p]):
                merge.close(p)
            out += released(merge)
        out += [(r.time_ms, r.partition, r.item) for r in merge.drain()]
        assert out == expected


def test_a_late_record_keeps_its_place_in_its_partition() -> None:
    merge: PartitionInterleave[str] = PartitionInterleave([0, 1])
    merge.push(0, 120_000, "a0")
    merge.push(0, 60_000, "late")  # a foreign producer's old timestamp
    merge.push(1, 180_000, "b0")
    out = list(merge.pop_ready()) + list(merge.drain())
    assert [(r.item, r.time_ms, r.late) for r in out] == [
        ("a0", 120_000, False), ("late", 120_000, True), ("b0", 180_000, False),
    ]  # fmt: skip


def test_buffered_counts_what_waits() -> None:
    merge: PartitionInterleave[str] = PartitionInterleave([0, 1])
    for t in range(5):
        merge.push(0, t, "x")
    assert merge.buffered(0) == 5 and merge.buffered(1) == 0
    merge.push(1, 2, "y")
    assert [r.item for r in merge.pop_ready()] == ["x", "x", "x", "y"]
    assert merge.buffered(0) == 2
