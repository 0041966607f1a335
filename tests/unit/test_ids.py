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
