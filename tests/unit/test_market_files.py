"""Market file reading, validation and merge, on the real Binance files of ../shared/data."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.adapters.market_files import (
    MarketFileError,
    MarketFileReader,
    TimeWindow,
    discover_files,
    merge_in_event_time,
    open_data_set,
    parse_time_bound,
)
from streams.adapters.market_rows import RejectedRow, TickReason, dead_letter
from streams.contracts.records import DeadLettered, TickKind, TickReceived
from tests.shared_data import BINANCE

DATA = BINANCE
FUTURES = DATA / "um_futures_1m_2025"
DAY_START = 1746403200000  # 2025-05-05T00:00Z
DAY_END = DAY_START + 86_400_000


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Independent reference read of a market file with the csv module."""
    with gzip.open(path, "rt", newline="") as handle:
        return list(csv.DictReader(handle))


def write_gz(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def first_lines(path: Path, count: int) -> list[str]:
    with gzip.open(path, "rt") as handle:
        return [next(handle).rstrip("\n") for _ in range(count)]


def test_one_day_of_btcusdt_matches_an_independent_read() -> None:
    window = TimeWindow(DAY_START, DAY_END)
    readers, items = open_data_set(FUTURES, ["BTCUSDT"], window)
    ticks = list(items)
    expected = [
        row for row in read_csv_rows(FUTURES / "BTCUSDT.csv.gz")
        if DAY_START <= int(row["open_time_ms"]) < DAY_END
    ]  # fmt: skip
    assert len(ticks) == len(expected) == 1440
    assert all(isinstance(t, TickReceived) for t in ticks)
    for tick, row in zip(ticks, expected, strict=True):
        assert isinstance(tick, TickReceived)
        assert tick.event_time_ms == int(row["open_time_ms"])
        assert (tick.open, tick.high, tick.low, tick.close, tick.volume) == tuple(
            float(row[c]) for c in ("open", "high", "low", "close", "volume")
        )
        assert tick.kind is TickKind.KLINE_1M and tick.interval_ms == 60_000
        assert tick.source == "replay-file:um_futures_1m_2025/BTCUSDT.csv.gz"
        assert tick.trade_id is None and tick.is_buyer_maker is None
    assert readers[0].bytes_read == readers[0].size  # progress reaches 100 % at the end


def test_whole_data_set_merges_every_row_in_time_then_symbol_order() -> None:
    readers, items = open_data_set(FUTURES, ["BTCUSDT", "ETHUSDT", "ADAUSDT"])
    keys = [(t.event_time_ms, t.symbol) for t in items if isinstance(t, TickReceived)]
    expected = sum(len(read_csv_rows(FUTURES / f"{s}USDT.csv.gz")) for s in ("BTC", "ETH", "ADA"))
    assert len(keys) == expected == 30_027 + 30_027 + 22_662
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert {r.spec.symbol for r in readers} == {"BTCUSDT", "ETHUSDT", "ADAUSDT"}


def test_trades_become_ticks_with_trade_time_and_price_as_ohlc() -> None:
    path = DATA / "trades_spot" / "BTCUSDT.csv.gz"
    (spec,) = discover_files(path)
    assert spec.kind is TickKind.TRADE and spec.symbol == "BTCUSDT"
    ticks = list(MarketFileReader(spec))
    rows = read_csv_rows(path)
    assert len(ticks) == len(rows) == 14_229
    for tick, row in zip(ticks, rows, strict=True):
        assert isinstance(tick, TickReceived)
        assert tick.kind is TickKind.TRADE and tick.interval_ms == 0
        price = float(row["price"])
        assert (tick.open, tick.high, tick.low, tick.close) == (price, price, price, price)
        assert tick.volume == float(row["qty"])
        assert tick.event_time_ms == int(row["trade_time_ms"])
        assert tick.trade_id == int(row["trade_id"])
        assert tick.is_buyer_maker is (row["is_buyer_maker"] == "true")


def test_trades_of_two_symbols_merge_with_shared_milliseconds() -> None:
    _readers, items = open_data_set(DATA / "trades_spot")
    ticks = [t for t in items if isinstance(t, TickReceived)]
    assert len(ticks) == 14_229 + 9_846
    keys = [(t.event_time_ms, t.symbol) for t in ticks]
    assert keys == sorted(keys)
    # Trades share milliseconds, so the merge must keep file order (trade id) inside a tie.
    btc_ids = [t.trade_id for t in ticks if t.symbol == "BTCUSDT"]
    assert btc_ids == sorted(btc_ids)
    assert len(set(keys)) < len(keys)


KLINE_BAD_ROWS = {
    "1746372780000,95505.4,95505.5": TickReason.UNPARSABLE,
    "1746372780000,abc,95505.5,95502.7,95502.7,16.5": TickReason.UNPARSABLE,
    "noon,95505.4,95505.5,95502.7,95502.7,16.5": TickReason.UNPARSABLE,
    "{t},NaN,95505.5,95502.7,95502.7,16.5": TickReason.NAN,
    "{t},95505.4,inf,95502.7,95502.7,16.5": TickReason.NAN,
    "{t},0,95505.5,95502.7,95502.7,16.5": TickReason.NON_POSITIVE_PRICE,
    "{t},95505.4,95505.5,-1,95502.7,16.5": TickReason.NON_POSITIVE_PRICE,
    "{t},95505.4,95505.5,95502.7,95502.7,-0.1": TickReason.NEGATIVE_VOLUME,
    "{t},95505.4,95500,95502.7,95502.7,16.5": TickReason.HIGH_BELOW_LOW,
    "{t},95509,95505.5,95502.7,95502.7,16.5": TickReason.OPEN_CLOSE_OUTSIDE_RANGE,
    "{t_misaligned},95505.4,95505.5,95502.7,95502.7,16.5": TickReason.MISALIGNED_TIME,
    "{t_dup},95505.4,95505.5,95502.7,95502.7,16.5": TickReason.DUPLICATE_TIME,
    "{t_old},95505.4,95505.5,95502.7,95502.7,16.5": TickReason.OUT_OF_ORDER_TIME,
}


def test_each_injected_bad_row_is_rejected_with_its_reason_and_good_rows_survive(
    tmp_path: Path,
) -> None:
    real = first_lines(FUTURES / "BTCUSDT.csv.gz", 41)
    header, good = real[0], real[1:]
    lines = [header]
    expected: dict[int, TickReason] = {}
    for index, (template, reason) in enumerate(KLINE_BAD_ROWS.items()):
        lines.extend(good[index * 3 : index * 3 + 3])
        last_good = int(lines[-1].split(",")[0])
        bad = template.format(
            t=last_good + 60_000, t_misaligned=last_good + 61_000, t_dup=last_good,
            t_old=last_good - 120_000,
        )  # fmt: skip
        lines.append(bad)
        expected[len(lines)] = reason  # 1-based line number of the bad row
    lines.extend(good[len(KLINE_BAD_ROWS) * 3 :])
    path = write_gz(tmp_path / "BTCUSDT.csv.gz", lines)

    items = list(MarketFileReader(discover_files(path)[0]))
    rejected = {r.line_no: r for r in items if isinstance(r, RejectedRow)}
    ticks = [t for t in items if isinstance(t, TickReceived)]
    assert {n: r.reason_code for n, r in rejected.items()} == expected
    for line_no, row in rejected.items():
        assert row.raw_line == lines[line_no - 1].encode()
        assert row.file == f"{tmp_path.name}/BTCUSDT.csv.gz" and row.detail
    assert [t.event_time_ms for t in ticks] == [int(g.split(",")[0]) for g in good]


def test_trade_file_rejects_repeated_ids_and_time_going_back(tmp_path: Path) -> None:
    real = first_lines(DATA / "trades_um_futures" / "BTCUSDT.csv.gz", 6)
    header, rows = real[0], real[1:]
    fields = rows[2].split(",")
    older = [str(int(fields[0]) + 10_000), *fields[1:3], str(int(fields[3]) - 5), *fields[4:]]
    zero_qty_ok = [str(int(fields[0]) + 20_000), fields[1], "0", *fields[3:]]
    negative_qty = [str(int(fields[0]) + 30_000), fields[1], "-1", *fields[3:]]
    lines = [header, *rows[:3], rows[2], ",".join(older), ",".join(zero_qty_ok),
             ",".join(negative_qty), *rows[3:]]  # fmt: skip
    path = write_gz(tmp_path / "BTCUSDT.csv.gz", lines)
    items = list(MarketFileReader(discover_files(path)[0]))
    reasons = [(i.line_no, i.reason_code) for i in items if isinstance(i, RejectedRow)]
    assert reasons == [
        (5, TickReason.DUPLICATE_TRADE_ID),
        (6, TickReason.OUT_OF_ORDER_TIME),
        (8, TickReason.NEGATIVE_VOLUME),
        # rows[3:] have ids below the accepted zero-qty trade's id: duplicates too.
        (9, TickReason.DUPLICATE_TRADE_ID),
        (10, TickReason.DUPLICATE_TRADE_ID),
    ]
    ticks = [i for i in items if isinstance(i, TickReceived)]
    trade_ids = [int(line.split(",")[0]) for line in lines[1:]]
    assert [t.trade_id for t in ticks] == [trade_ids[n - 2] for n in (2, 3, 4, 7)]  # by line


def test_window_keeps_rejected_rows_by_their_time_or_their_position(tmp_path: Path) -> None:
    real = first_lines(FUTURES / "BTCUSDT.csv.gz", 11)
    header, good = real[0], real[1:]
    times = [int(g.split(",")[0]) for g in good]
    lines = [header, *good[:2], "garbage-before", *good[2:6], "garbage-inside",
             f"{times[5] + 60_000},1,0.5,0.9,1,1", *good[6:],
             # After the window end: a sorted file stops being read before this row.
             good[4]]  # fmt: skip
    path = write_gz(tmp_path / "BTCUSDT.csv.gz", lines)
    window = TimeWindow(times[3], times[8])
    items = list(MarketFileReader(discover_files(path)[0], window))
    ticks = [i.event_time_ms for i in items if isinstance(i, TickReceived)]
    rejected = [(i.line_no, i.reason_code) for i in items if isinstance(i, RejectedRow)]
    assert ticks == times[3:8]
    assert rejected == [(9, TickReason.UNPARSABLE), (10, TickReason.HIGH_BELOW_LOW)]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 29), min_size=1, max_size=60))
def test_any_row_order_yields_strictly_increasing_ticks_and_accounts_for_every_row(
    tmp_path_factory: pytest.TempPathFactory, picks: list[int]
) -> None:
    real = first_lines(FUTURES / "ETHUSDT.csv.gz", 31)
    lines = [real[0], *(real[1 + p] for p in picks)]
    path = write_gz(tmp_path_factory.mktemp("h") / "ETHUSDT.csv.gz", lines)
    items = list(MarketFileReader(discover_files(path)[0]))
    times = [i.event_time_ms for i in items if isinstance(i, TickReceived)]
    assert len(items) == len(picks)
    assert all(a < b for a, b in itertools.pairwise(times))
    reasons = Counter(i.reason_code for i in items if isinstance(i, RejectedRow))
    assert set(reasons) <= {TickReason.DUPLICATE_TIME, TickReason.OUT_OF_ORDER_TIME}


def kline(symbol: str, time_ms: int) -> TickReceived:
    return TickReceived(
        symbol=symbol, event_time_ms=time_ms, kind=TickKind.KLINE_1M, open=1, high=1, low=1,
        close=1, volume=0, interval_ms=60_000, source="f",
    )  # fmt: skip


def test_merge_puts_a_rejected_row_after_the_ticks_preceding_it() -> None:
    bad = RejectedRow(TickReason.NAN, "x", "f", 3, b"", "AAAUSDT", None)
    tick = kline("ZZZUSDT", 10)
    later = kline("AAAUSDT", 20)
    merged = list(merge_in_event_time([[bad, later], [tick]]))
    assert merged == [bad, tick, later]


def test_a_rejected_row_becomes_a_deterministic_dead_letter(tmp_path: Path) -> None:
    lines = [*first_lines(FUTURES / "BTCUSDT.csv.gz", 3), "1746372780000,NaN,1,1,1,1"]
    path = write_gz(tmp_path / "BTCUSDT.csv.gz", lines)
    (row,) = [i for i in MarketFileReader(discover_files(path)[0]) if isinstance(i, RejectedRow)]
    letter = dead_letter(row)
    assert isinstance(letter, DeadLettered)
    assert letter.dead_letter_id == f"replay:{tmp_path.name}/BTCUSDT.csv.gz:4"
    assert (letter.reason, letter.stage, letter.error_type) == ("nan", "replay", "RejectedRow")
    assert letter.raw == lines[3].encode() and letter.detail == row.detail
    assert (letter.source_file, letter.source_line) == (f"{tmp_path.name}/BTCUSDT.csv.gz", 4)
    assert (letter.symbol, letter.event_time_ms) == ("BTCUSDT", 1746372780000)
    assert letter.source_topic is None and letter.raw_key is None
    assert DeadLettered.from_avro(letter.to_avro()) == letter


def test_discovery_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(MarketFileError, match="pick one data set: spot_1m"):
        discover_files(DATA)
    with pytest.raises(MarketFileError, match="no such file"):
        discover_files(tmp_path / "missing")
    with pytest.raises(MarketFileError, match=r"no file for symbols DOGEUSDT \(available: ADAUSDT"):
        discover_files(FUTURES, ["dogeusdt"])
    write_gz(tmp_path / "XUSDT.csv.gz", ["time,price", "1,2"])
    with pytest.raises(MarketFileError, match="unknown header"):
        discover_files(tmp_path)
    (tmp_path / "XUSDT.csv.gz").unlink()
    (tmp_path / "BTCUSDT.csv").write_text("open_time_ms,open,high,low,close,volume\n")
    write_gz(tmp_path / "BTCUSDT.csv.gz", ["open_time_ms,open,high,low,close,volume"])
    with pytest.raises(MarketFileError, match="two files for BTCUSDT"):
        discover_files(tmp_path)


def test_plain_csv_reads_like_gzip(tmp_path: Path) -> None:
    lines = first_lines(FUTURES / "SOLUSDT.csv.gz", 20)
    path = tmp_path / "SOLUSDT.csv"
    path.write_text("\n".join(lines) + "\n")
    gz_ticks = list(MarketFileReader(discover_files(write_gz(tmp_path / "x.csv.gz", lines))[0]))
    csv_ticks = list(MarketFileReader(discover_files(path)[0]))
    assert [t.event_time_ms for t in csv_ticks] == [t.event_time_ms for t in gz_ticks]
    assert len(csv_ticks) == 19


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("2025-05-05", DAY_START),
        ("2025-05-05T00:01:00", DAY_START + 60_000),
        ("2025-05-05T02:00:00+02:00", DAY_START),
        ("2025-05-05T00:00:00Z", DAY_START),
        ("1746403200000", DAY_START),
    ],
)
def test_time_bounds_parse_to_utc_epoch_ms(text: str, millis: int) -> None:
    assert parse_time_bound(text) == millis


@pytest.mark.parametrize("text", ["1746403200", "yesterday", "2025-13-01"])
def test_bad_time_bounds_are_refused(text: str) -> None:
    with pytest.raises(MarketFileError):
        parse_time_bound(text)


def test_empty_window_is_refused() -> None:
    with pytest.raises(MarketFileError, match="empty time window"):
        TimeWindow(DAY_END, DAY_START)


def test_corrupt_gzip_is_a_market_file_error(tmp_path: Path) -> None:
    data = io.BytesIO()
    with gzip.GzipFile(fileobj=data, mode="wb") as handle:
        handle.write(b"open_time_ms,open,high,low,close,volume\n" + b"1,1,1,1,1,1\n" * 5000)
    path = tmp_path / "BTCUSDT.csv.gz"
    path.write_bytes(data.getvalue()[:-40])
    with pytest.raises(MarketFileError, match="read failed"):
        list(MarketFileReader(discover_files(path)[0]))
