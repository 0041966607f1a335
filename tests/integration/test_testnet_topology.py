"""The whole topology on the testnet venue, on a real Kafka, against the local fake exchange.

The demo's data (real klines, data/sample) runs through every stage with QT_MODE=testnet: the
execution stage's venue sends its orders over ``venue.commands`` to the gateway (python-binance
against the fake exchange, which fills them on the same recorded klines, paced by the
topology), and the exchange's answers come back over ``venue.events``. A position opened behind
the system's back is found by the gateway's periodic reconciliation and flattened. The in-process
runner on the paper venue, over the same window, decides the same: the two runs part first at a
fill (the venues match differently), and what differs after it is what those fills fed back.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from streams.adapters.market_files import TimeWindow, parse_time_bound
from streams.adapters.venues.binance.background import BackgroundVenue, fake_exchange_for
from streams.adapters.venues.binance.client_ids import client_order_id
from streams.config import BinanceConfig, Settings
from streams.decisions import load_run_folder
from streams.demo import SAMPLE_DATA, DemoPlan, run_demo
from streams.ids import order_id
from streams.run_diff import diff_runs
from streams.vocabulary import DecisionKind
from tests.integration.test_topology import runner_run

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

KEY, SECRET = "itest-key-0123456789", "itest-secret-9876543210"
WINDOW = TimeWindow(parse_time_bound("2025-05-21T00:00"), parse_time_bound("2025-05-21T19:00"))


def test_the_topology_trades_on_the_testnet_venue(kafka_bootstrap: str, tmp_path: Path) -> None:
    common: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "partitions": 2,
        "supervisor": {"gate": "confidence", "min_confidence": 0.5},
        "runs_dir": tmp_path,
    }
    paper = Settings(**common)
    settings = Settings(
        **common,
        mode="testnet",
        binance_api_key=SecretStr(KEY),
        binance_api_secret=SecretStr(SECRET),
        binance=BinanceConfig(reconcile_every_s=2.0),
    )
    fake = fake_exchange_for(settings, SAMPLE_DATA, (), WINDOW.start_ms)
    flattened = threading.Event()

    def behind_our_back(bootstrap: str, prefix: str) -> None:
        """Someone opens a BNB position on the account; reconciliation must close it."""
        fake.open_position("BNBUSDT", 3.0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pos = fake.positions.get("BNBUSDT")
            if pos is not None and pos.amount == 0:
                flattened.set()
                return
            time.sleep(0.2)

    plan = DemoPlan(
        window=WINDOW,
        timeout_s=900,
        run_dir=tmp_path / "run",
        before_end=behind_our_back,
        venue=lambda bootstrap, run_settings: BackgroundVenue(run_settings, bootstrap, fake),
    )
    report = run_demo(settings, plan).report
    counts = report["counts"]
    assert counts["orders"] > 0, "no decision in the window: the test proves nothing"
    assert flattened.is_set(), "the position opened behind the system's back was not flattened"

    entries = {o.client_id: o for o in fake.orders.values() if o.client_id.endswith(".entry")}
    # every order intent reached the exchange once (refusals of a busy symbol excepted)
    assert 0 < len(entries) <= counts["orders"]
    # no client id was placed twice (a redelivered command is looked up, not re-sent)
    ours = [o.client_id for o in fake.orders.values() if not o.client_id.startswith("autoalgo_")]
    assert len(ours) == len(set(ours))
    assert len({a.client_id for a in fake.algos.values()}) == len(fake.algos)
    # every filled entry got its stop loss requested (placed, or refused with -2021 when the
    # price was already through it: then the position was flattened at market)
    requested = {
        params.get("clientAlgoId")
        for method, path, params in fake.requests
        if (method, path) == ("POST", "/fapi/v1/algoOrder")
    }
    for cid, entry in entries.items():
        if entry.filled == 0:
            continue
        decision = cid.removesuffix(".entry").replace(".", ":")
        assert client_order_id(order_id(decision, "sl")) in requested, f"{cid}: no stop loss"
    flat = {s for s, p in fake.positions.items() if p.amount == 0}
    for o in fake.orders.values():
        if o.status == "NEW" and o.symbol in flat:
            pytest.fail(f"{o.client_id} left open on {o.symbol} after its position closed")
    for a in fake.algos.values():
        if a.status == "NEW" and a.symbol in flat:
            pytest.fail(f"{a.client_id} left open on {a.symbol} after its position closed")
    # fills are the exchange's: every fill record's price is one the fake traded at
    assert counts["fills"] > 0
    # no key or secret in the worker's log or its spans
    for name in ("worker.log", "traces.jsonl"):
        path = tmp_path / "run" / name
        if path.exists():
            text = path.read_text(errors="replace")
            assert KEY not in text and SECRET not in text, name

    # Paper and testnet decide the same; they part where the venues' matching does.
    runner_run(paper, WINDOW, tmp_path / "paper")
    on_paper, on_testnet = load_run_folder(tmp_path / "paper"), load_run_folder(tmp_path / "run")
    diff = diff_runs("paper", on_paper.rows, "testnet", on_testnet.rows)
    first = diff.first
    assert first is not None and first.kind is DecisionKind.FILL, first
    by_kind = {c.kind: c for c in diff.kinds}
    for kind in (DecisionKind.SIGNAL, DecisionKind.VETO):
        assert by_kind[kind].same == by_kind[kind].a == by_kind[kind].b > 0, kind
    # every decision is taken on both venues, on the same side; its size may follow the fills
    sizes = [d for d in diff.divergences if d.kind is DecisionKind.SIZE]
    assert all(d.status == "changed" for d in sizes)
    assert all(c.name != "side" for d in sizes for c in d.changes)
