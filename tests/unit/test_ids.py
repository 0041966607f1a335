"""Deterministic ids and per-decision seeded generators."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streams.errors import InvalidInputError
from streams.ids import decision_id, fill_id, order_id, rng_for, signal_id, stage_id


def test_lineage_is_readable_and_deterministic() -> None:
    sig = signal_id("BTCUSDT", 1_716_249_600_000)
    dec = decision_id(sig)
    assert dec == "BTCUSDT:1716249600000:decision"
    assert order_id(dec, "tp2") == "BTCUSDT:1716249600000:decision:tp2"
    assert fill_id(order_id(dec, "entry"), 3) == "BTCUSDT:1716249600000:decision:entry#3"


@pytest.mark.parametrize(
    "bad",
    [
        lambda: signal_id("", 1),
        lambda: signal_id("A:B", 1),
        lambda: stage_id("x", "a:b"),
        lambda: fill_id("o", 0),
    ],
)
def test_malformed_parts_are_rejected(bad) -> None:
    with pytest.raises(InvalidInputError):
        bad()


def test_rng_for_is_stable_across_processes() -> None:
    # A fresh interpreter with a different hash seed draws the same numbers for the same key.
    code = "from streams.ids import rng_for; print(rng_for(7, 'BTCUSDT:0:decision').random())"
    env = {"PYTHONHASHSEED": "123", "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd="."
    )
    assert float(out.stdout) == rng_for(7, "BTCUSDT:0:decision").random()
    assert rng_for(7, "a").random() != rng_for(8, "a").random()


# -- SeenIds: idempotency that does not grow forever ---------------------------------------------
DAY = 86_400_000


def test_seen_ids_remember_within_the_window_and_forget_after() -> None:
    from streams.ids import SeenIds

    seen = SeenIds(window_ms=2 * DAY)
    seen.add("a", 0)
    seen.add("b", DAY)
    assert "a" in seen and "b" in seen
    seen.add("c", 2 * DAY)  # "a" is exactly at the edge: still remembered
    assert "a" in seen
    seen.add("d", 2 * DAY + 1)
    assert "a" not in seen and {"b", "c", "d"} <= {k for k in ("b", "c", "d") if k in seen}
    assert len(seen) == 3


def test_seen_ids_stay_bounded_over_a_long_stream() -> None:
    from streams.ids import SeenIds

    seen = SeenIds(window_ms=DAY)
    for minute in range(60 * 24 * 30):  # 30 days, one id a minute
        seen.add(f"id{minute}", minute * 60_000)
    assert len(seen) == 60 * 24 + 1  # one day of ids, both edges included


def test_seen_ids_round_trip_and_copy_are_independent() -> None:
    from streams.ids import SeenIds

    seen = SeenIds(window_ms=DAY)
    for i, t in enumerate((0, 10, 5)):  # slightly out of order, as redelivery may be
        seen.add(f"k{i}", t)
    again = SeenIds.from_dict(seen.to_dict(), DAY)
    assert again.to_dict() == seen.to_dict()
    twin = seen.copy()
    twin.add("new", 20)
    assert "new" in twin and "new" not in seen


def test_seen_ids_refuse_a_useless_window() -> None:
    from streams.errors import InvalidInputError
    from streams.ids import SeenIds

    with pytest.raises(InvalidInputError):
        SeenIds(window_ms=0)
