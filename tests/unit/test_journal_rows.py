"""Journal rows without a database: record -> rows, sampling, undecodable records, drift."""

from __future__ import annotations

import dataclasses

import pytest

from streams.adapters.journal import JournalSchemaError
from streams.adapters.journal.rows import TABLES, event_time, rows_for, undecodable_row
from streams.adapters.journal.rows import _row as row_of
from streams.contracts.records import DeadLettered, HistoryBar, TickKind, TickReceived

DAY_START = 1746403200000  # 2025-05-05T00:00Z


def tick(kind: TickKind, trade_id: int | None = None) -> TickReceived:
    trade = kind is TickKind.TRADE
    return TickReceived(
        symbol="BTCUSDT", event_time_ms=DAY_START, kind=kind, open=2.0, high=3.0, low=1.0,
        close=2.5, volume=7.0, interval_ms=0 if trade else 60_000, source="replay-file:x",
        trade_id=trade_id, is_buyer_maker=True if trade else None,
    )  # fmt: skip


def test_a_kline_is_one_ticks_row_in_column_order() -> None:
    ((table, values),) = rows_for(tick(TickKind.KLINE_1M))
    assert table == "ticks"
    row = dict(zip(TABLES["ticks"].columns, values, strict=True))
    assert row["event_time"] == event_time(DAY_START) and row["event_time_ms"] == DAY_START
    assert (row["open"], row["high"], row["low"], row["close"], row["volume"]) == (
        2.0, 3.0, 1.0, 2.5, 7.0,
    )  # fmt: skip


def test_a_joiners_kline_journals_its_warm_up_history_first() -> None:
    history = tuple(
        HistoryBar(open_time_ms=DAY_START - n * 60_000, open=2.0, high=3.0, low=1.0, close=2.0,
                   volume=float(n))
        for n in (2, 1)
    )  # fmt: skip
    rows = rows_for(dataclasses.replace(tick(TickKind.KLINE_1M), history=history))
    got = [dict(zip(TABLES[t].columns, v, strict=True)) for t, v in rows]
    assert [t for t, _ in rows] == ["ticks"] * 3
    assert [(r["event_time_ms"], r["volume"], r["source"]) for r in got] == [
        (DAY_START - 120_000, 2.0, "replay-file:x (history)"),
        (DAY_START - 60_000, 1.0, "replay-file:x (history)"),
        (DAY_START, 7.0, "replay-file:x"),
    ]


def test_trades_are_sampled_by_trade_id() -> None:
    kept = rows_for(tick(TickKind.TRADE, trade_id=300), trade_sample_every=100)
    assert [t for t, _ in kept] == ["trade_ticks"]
    row = dict(zip(TABLES["trade_ticks"].columns, kept[0][1], strict=True))
    assert (row["trade_id"], row["price"], row["qty"]) == (300, 2.5, 7.0)
    assert rows_for(tick(TickKind.TRADE, trade_id=301), trade_sample_every=100) == []
    assert rows_for(tick(TickKind.TRADE, trade_id=300), trade_sample_every=0) == []


def test_a_dead_letter_keeps_its_raw_bytes() -> None:
    letter = DeadLettered(
        dead_letter_id="replay:f:3", reason="nan", error_type="RejectedRow", stage="replay",
        detail="open='NaN' is not finite", raw=b"1,NaN", source_file="f", source_line=3,
    )  # fmt: skip
    ((table, values),) = rows_for(letter)
    row = dict(zip(TABLES["dead_letters"].columns, values, strict=True))
    assert table == "dead_letters" and row["raw"] == b"1,NaN" and row["source_line"] == 3


def test_an_undecodable_record_is_kept_raw_with_a_bounded_reason() -> None:
    table, values = undecodable_row("p.market.ticks", 2, 41, ValueError("x" * 5000), b"\x00", b"k")
    row = dict(zip(TABLES["journal_undecodable"].columns, values, strict=True))
    assert table == "journal_undecodable"
    assert (row["topic"], row["partition"], row["offset"]) == ("p.market.ticks", 2, 41)
    assert len(row["reason"]) == 2000 and row["raw"] == b"\x00" and row["raw_key"] == b"k"


def test_a_row_that_drifted_from_its_table_is_refused() -> None:
    with pytest.raises(JournalSchemaError, match=r"missing \['raw_key'\], extra \['bogus'\]"):
        row_of("journal_undecodable", topic="t", partition=0, offset=0, reason="", raw=b"",
               bogus=1)  # fmt: skip


def test_event_time_is_exact_to_the_millisecond() -> None:
    assert event_time(DAY_START + 1).isoformat() == "2025-05-05T00:00:00.001000+00:00"
