"""Pure parts of the incident replay: the cut at a range's start, which stored document may
seed a stage, how a warm document moves to a fresh prefix, and ``--set`` overrides."""

from __future__ import annotations

import pytest

from streams.agents.base import RawEvent
from streams.config import Settings, with_overrides
from streams.incident import (
    InputCut,
    before_start,
    covers_only_the_past,
    in_arrival_order,
    rebase_document,
)
from streams.ordering import WATERMARK_HEADER

START = 1_000_000


def test_a_watermark_at_the_start_precedes_it_but_a_record_at_the_start_does_not() -> None:
    assert before_start(START - 1, False, START)
    assert not before_start(START, False, START)
    assert before_start(START, True, START)  # "nothing before the start follows"
    assert not before_start(START + 1, True, START)


def event(offset: int, t: int, partition: int = 0) -> RawEvent:
    return RawEvent(
        "rec.decisions.sized", partition, offset, None, b"", {WATERMARK_HEADER: str(t).encode()}
    )


def test_a_merged_partition_is_clean_only_up_to_its_first_record_past_the_start() -> None:
    cut = InputCut("rec.decisions.sized/0")
    for offset, t in enumerate([10, 20, START + 5, 30, START + 9, 40]):
        cut.add(event(offset, t), before_start(t, False, START))
    assert [e.offset for e in cut.events] == [0, 1, 3, 5]  # every record before the start
    assert cut.clean_through == 1  # a document that applied offset 3 also applied offset 2

    cuts = {cut.key: cut}
    assert covers_only_the_past({"applied": {cut.key: 1}}, cuts)
    assert not covers_only_the_past({"applied": {cut.key: 3}}, cuts)
    assert not covers_only_the_past({"applied": {"rec.other/0": 0}}, cuts)


def test_partitions_interleave_by_event_time_each_in_its_own_order() -> None:
    a, b = InputCut("a/0"), InputCut("a/1")
    for offset, t in enumerate([5, 1, 9]):
        a.add(event(offset, t, 0), True)
    for offset, t in enumerate([2, 7]):
        b.add(event(offset, t, 1), True)
    order = [(e.partition, e.offset) for e in in_arrival_order([a, b])]
    assert order == [(1, 0), (0, 0), (0, 1), (1, 1), (0, 2)]


def test_a_rebased_document_applied_nothing_of_the_new_topics_and_keeps_its_numbering() -> None:
    document = {
        "format": 1, "stage": "risk", "handler": {"x": 1},
        "applied": {"rec.decisions.sized/0": 41},
        "seen": {"rec.decisions.sized/0:strategy/1": 7, "other/0:x": 2},
        "sent": {"orders.approved|risk/0": 12},
    }  # fmt: skip
    rebased = rebase_document(document, "rec.", "new.")
    assert rebased["applied"] == {}
    assert rebased["seen"] == {"new.decisions.sized/0:strategy/1": 7, "other/0:x": 2}
    assert rebased["sent"] == document["sent"] and rebased["handler"] == document["handler"]
    assert rebase_document(document, "", "new.")["seen"]["new.other/0:x"] == 2


def test_overrides_are_validated_like_the_environment() -> None:
    changed = with_overrides(Settings(), ["risk.max_leverage=10", "seed=3"])
    assert (changed.risk.max_leverage, changed.seed) == (10.0, 3)
    for bad in ("risk.nope=1", "nope=1", "risk.max_leverage=ten", "risk.max_leverage"):
        with pytest.raises(ValueError, match=r"max_leverage|nope|expected"):
            with_overrides(Settings(), [bad])
