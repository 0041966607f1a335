"""The event-time merge releases records in one order, whatever the arrival interleaving."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.ordering import EventTimeMerge, OrderingError, SortKey


def test_nothing_released_until_every_source_has_passed_the_time():
    m: EventTimeMerge[str] = EventTimeMerge(["a", "b"])
    m.add("a", SortKey(60, 1, "ETH"), "eth@60")
    assert list(m.pop_ready()) == []  # b has said nothing yet
    m.add("b", SortKey(60, 1, "BTC"), "btc@60")
    assert list(m.pop_ready()) == []  # both at 60: more records at 60 may follow
    m.advance("a", 120)
    assert list(m.pop_ready()) == []  # b still at 60
    m.advance("b", 61)
    assert list(m.pop_ready()) == ["btc@60", "eth@60"]  # key order, not arrival order


def test_rank_orders_feedback_before_decisions_of_the_same_time():
    m: EventTimeMerge[str] = EventTimeMerge(["decisions", "fills"])
    m.add("decisions", SortKey(120, 1, "BTC"), "decision")
    m.add("fills", SortKey(120, 0, "BTC"), "close")
    m.advance("decisions", 121)
    m.advance("fills", 121)
    assert list(m.pop_ready()) == ["close", "decision"]


def test_a_source_outside_the_watermark_set_never_blocks():
    m: EventTimeMerge[str] = EventTimeMerge(["a"])
    m.add("operator", SortKey(30, 0, "halt"), "halt")
    m.add("a", SortKey(60, 1, "x"), "x")
    m.advance("a", 61)
    assert list(m.pop_ready()) == ["halt", "x"]


def test_a_record_behind_its_watermark_is_refused():
    m: EventTimeMerge[str] = EventTimeMerge(["a"])
    m.advance("a", 100)
    with pytest.raises(OrderingError, match="behind its watermark"):
        m.add("a", SortKey(99, 0), "late")


def test_watermarks_never_go_back():
    m: EventTimeMerge[str] = EventTimeMerge(["a"])
    m.advance("a", 100)
    m.advance("a", 50)
    assert m.low_watermark == 100


def test_state_round_trip_keeps_order_and_watermarks():
    m: EventTimeMerge[str] = EventTimeMerge(["a", "b"])
    for t, k in [(60, "z"), (60, "a"), (0, "q")]:
        m.add("a", SortKey(t, 1, k), f"{k}{t}") if t >= 60 else m.add("b", SortKey(t, 1, k), k)
    restored = EventTimeMerge.from_dict(m.to_dict())
    restored.advance("a", 1000)
    restored.advance("b", 1000)
    assert list(restored.pop_ready()) == ["q", "a60", "z60"]


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2)), min_size=1, max_size=40),
    st.integers(0, 10**6),
)
def test_any_interleaving_of_in_order_sources_gives_the_same_output(records, seed):
    # Each of three sources emits its records in time order; the wire interleaves them arbitrarily.
    per_source = {
        s: sorted((t * 60, f"{s}-{i}") for i, (t, src) in enumerate(records) if src == s)
        for s in range(3)
    }

    def run(order_seed: int) -> list[str]:
        rng = random.Random(order_seed)
        m: EventTimeMerge[str] = EventTimeMerge([str(s) for s in range(3)])
        cursors = {s: 0 for s in range(3)}
        out: list[str] = []
        while any(cursors[s] < len(per_source[s]) for s in range(3)):
            s = rng.choice([s for s in range(3) if cursors[s] < len(per_source[s])])
            t, name = per_source[s][cursors[s]]
            cursors[s] += 1
            m.add(str(s), SortKey(t, s, name), name)
            out.extend(m.pop_ready())
        for s in range(3):
            m.advance(str(s), 10**9)
        out.extend(m.pop_ready())
        return out

    first = run(seed)
    assert first == run(seed + 1)
    everything = sorted(name for v in per_source.values() for _, name in v)
    assert sorted(first) == everything  # nothing lost, nothing duplicated
