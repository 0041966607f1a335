"""The one tick rule (streams/contracts/ticks.py) and dead letters that always fit."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from streams.adapters.market_files import _spec_for as spec_for
from streams.adapters.market_rows import RowCursor as Cursor
from streams.adapters.market_rows import validate_line
from streams.contracts.codec import topic_codec
from streams.contracts.deadletters import DETAIL_LIMIT, KEY_LIMIT, RAW_LIMIT, bounded_payload
from streams.contracts.records import DeadLettered, HistoryBar, TickKind, TickReceived
from streams.contracts.ticks import (
    DEFAULT_MAX_EVENT_SKEW_MS,
    MAX_HISTORY_BARS,
    TickHistory,
    TickReason,
    TickRejected,
    tick_problem,
)
from streams.topics import Topic
from tests.unit.stages.factories import T0, kline

BTC = b"BTCUSDT"
GOOD = kline("BTCUSDT", T0, 100.0, 101.0, 99.0, 100.5)


def trade(symbol: str, t: int, trade_id: int, price: float = 100.0) -> TickReceived:
    return TickReceived(
        symbol=symbol, event_time_ms=t, kind=TickKind.TRADE, open=price, high=price, low=price,
        close=price, volume=0.5, interval_ms=0, source="test", trade_id=trade_id,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        ({"close": float("nan")}, BTC, TickReason.NAN),
        ({"open": -1.0}, BTC, TickReason.NON_POSITIVE_PRICE),
        ({"low": 0.0}, BTC, TickReason.NON_POSITIVE_PRICE),
        ({"volume": -3.0}, BTC, TickReason.NEGATIVE_VOLUME),
        ({"high": 98.0, "low": 99.0}, BTC, TickReason.HIGH_BELOW_LOW),
        ({"close": 102.0}, BTC, TickReason.OPEN_CLOSE_OUTSIDE_RANGE),
        ({"event_time_ms": T0 + 1}, BTC, TickReason.MISALIGNED_TIME),
        ({"event_time_ms": 1_000_000_000}, BTC, TickReason.IMPLAUSIBLE_TIME),  # seconds
        ({"event_time_ms": 7_258_118_400_000}, BTC, TickReason.IMPLAUSIBLE_TIME),  # year 2200
        ({"symbol": "btc usdt"}, b"btc usdt", TickReason.BAD_SYMBOL),
        ({"symbol": ""}, b"", TickReason.BAD_SYMBOL),
        ({}, None, TickReason.KEY_MISMATCH),
        ({}, b"ETHUSDT", TickReason.KEY_MISMATCH),
        ({"interval_ms": 0}, BTC, TickReason.BAD_KIND_FIELDS),
        ({"kind": TickKind.TRADE}, BTC, TickReason.BAD_KIND_FIELDS),
    ],
)
def test_every_broken_value_has_its_reason(
    changes: dict[str, object], key: bytes | None, reason: TickReason
) -> None:
    tick = dataclasses.replace(GOOD, **changes)  # type: ignore[arg-type]
    problem = tick_problem(tick, key)
    assert problem is not None and problem[0] is reason, problem
    assert problem[1]  # says what is wrong


def test_real_looking_ticks_pass() -> None:
    assert tick_problem(GOOD, BTC) is None
    assert tick_problem(trade("BTCUSDT", T0 + 17, 42), BTC) is None
    flat = kline("NANOUSDT", T0, 5.0, 5.0, 5.0, 5.0, 0.0)  # zero-volume minutes are real
    assert tick_problem(flat, b"NANOUSDT") is None
    delivery = kline("BTCUSD_250627", T0, 100.0, 101.0, 99.0, 100.5)
    assert tick_problem(delivery, b"BTCUSD_250627") is None


def bar(minutes_before: int, **changes: float) -> HistoryBar:
    fields = {"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5, "volume": 3.0}
    fields.update(changes)
    return HistoryBar(open_time_ms=T0 - minutes_before * 60_000, **fields)


def test_a_warm_up_history_passes_and_every_broken_one_says_why() -> None:
    good = dataclasses.replace(GOOD, history=(bar(3), bar(2), bar(1)))
    assert tick_problem(good, BTC) is None
    assert tick_problem(dataclasses.replace(GOOD, history=(bar(9), bar(2))), BTC) is None  # gaps
    broken = {
        "trade": dataclasses.replace(trade("BTCUSDT", T0 + 17, 42), history=(bar(1),)),
        "too long": dataclasses.replace(
            GOOD, history=tuple(bar(n) for n in range(MAX_HISTORY_BARS + 1, 0, -1))
        ),
        "unordered": dataclasses.replace(GOOD, history=(bar(1), bar(2))),
        "repeated": dataclasses.replace(GOOD, history=(bar(2), bar(2))),
        "the tick itself": dataclasses.replace(GOOD, history=(bar(1), bar(0))),
        "misaligned": dataclasses.replace(
            GOOD, history=(dataclasses.replace(bar(1), open_time_ms=T0 - 59_999),)
        ),
        "bad bar": dataclasses.replace(GOOD, history=(bar(2), bar(1, low=102.0))),
        "nan": dataclasses.replace(GOOD, history=(bar(1, close=float("nan")),)),
    }
    for name, tick in broken.items():
        problem = tick_problem(tick, BTC)
        assert problem is not None and problem[0] is TickReason.BAD_HISTORY, name
    detail = tick_problem(broken["bad bar"], BTC)
    assert detail is not None and "history bar 1" in detail[1] and "high_below_low" in detail[1]


def test_file_rows_and_ticks_share_the_rule(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT.csv"
    path.write_text("open_time_ms,open,high,low,close,volume\n")
    spec = spec_for(path, tmp_path)
    cases = {
        f"{T0},1,1,0,1,1": TickReason.NON_POSITIVE_PRICE,
        f"{T0},1,1,2,1,1": TickReason.HIGH_BELOW_LOW,
        f"{T0},3,2,1,1,1": TickReason.OPEN_CLOSE_OUTSIDE_RANGE,
        f"{T0},1,1,1,1,-3": TickReason.NEGATIVE_VOLUME,
        "1000000020,1,1,1,1,1": TickReason.IMPLAUSIBLE_TIME,  # seconds, not milliseconds
    }
    for line, reason in cases.items():
        row = validate_line(line.encode(), spec, 2, Cursor(), 60_000)
        assert getattr(row, "reason_code", None) == reason, line
        o, h, low, c, v = (float(x) for x in line.split(",")[1:])
        tick = kline("BTCUSDT", int(line.split(",")[0]), o, h, low, c, v)
        assert (problem := tick_problem(tick, BTC)) is not None and problem[0] is reason


def test_a_file_named_like_no_symbol_is_refused(tmp_path: Path) -> None:
    from streams.adapters.market_files import MarketFileError

    path = tmp_path / "btc usdt.csv"
    path.write_text("open_time_ms,open,high,low,close,volume\n")
    with pytest.raises(MarketFileError, match="no usable symbol"):
        spec_for(path, tmp_path)


def test_history_refuses_late_duplicate_and_skewed_ticks_per_partition() -> None:
    h = TickHistory(max_skew_ms=3_600_000)
    h.admit(0, GOOD, BTC)
    h.admit(0, kline("ETHUSDT", T0, 10.0, 10.0, 10.0, 10.0), b"ETHUSDT")  # same minute: fine
    late = kline("BTCUSDT", T0 - 60_000, 100.0, 101.0, 99.0, 100.5)
    again = kline("BTCUSDT", T0, 100.0, 101.0, 99.0, 100.5)
    ahead = kline("BTCUSDT", T0 + 3_660_000, 100.0, 101.0, 99.0, 100.5)
    for tick, reason in (
        (late, TickReason.OUT_OF_ORDER_TIME),
        (again, TickReason.DUPLICATE_TIME),
        (ahead, TickReason.EVENT_TIME_SKEW),
    ):
        with pytest.raises(TickRejected) as caught:
            h.admit(0, tick, BTC)
        assert caught.value.reason is reason
    assert h.partitions[0].newest_ms == T0, "a refused tick advances nothing"
    h.admit(1, ahead, BTC)  # another partition has its own history (none yet)
    within = kline("BTCUSDT", T0 + 3_600_000, 100.0, 101.0, 99.0, 100.5)
    h.admit(0, within, BTC)  # exactly the bound: a gap, accepted
    assert h.partitions[0].newest_ms == T0 + 3_600_000


def test_history_refuses_repeated_trade_ids() -> None:
    h = TickHistory()
    h.admit(0, trade("BTCUSDT", T0, 7), BTC)
    h.admit(0, trade("BTCUSDT", T0, 8), BTC)  # same millisecond, next id
    with pytest.raises(TickRejected) as caught:
        h.admit(0, trade("BTCUSDT", T0 + 5, 8), BTC)
    assert caught.value.reason is TickReason.DUPLICATE_TRADE_ID


def test_history_verdicts_are_the_same_for_every_reader_and_after_a_restore() -> None:
    stream = [
        (0, GOOD, BTC),
        (0, dataclasses.replace(GOOD, event_time_ms=T0 + 60_000), BTC),
        (0, dataclasses.replace(GOOD, event_time_ms=T0 + 90 * 86_400_000), BTC),  # bad clock
        (0, dataclasses.replace(GOOD, event_time_ms=T0), BTC),  # late
        (0, dataclasses.replace(GOOD, event_time_ms=T0 + 120_000, low=-1.0), BTC),
        (0, dataclasses.replace(GOOD, event_time_ms=T0 + 120_000), BTC),
    ]

    def verdicts(h: TickHistory, records: list[tuple[int, TickReceived, bytes]]) -> list[str]:
        out = []
        for p, tick, key in records:
            try:
                h.admit(p, tick, key)
                out.append("ok")
            except TickRejected as exc:
                out.append(exc.reason.value)
        return out

    features, risk = TickHistory(), TickHistory()
    expected = [
        "ok", "ok", "event_time_skew", "out_of_order_time", "non_positive_price", "ok",
    ]  # fmt: skip
    assert verdicts(features, stream) == verdicts(risk, stream) == expected
    restored, fresh = TickHistory(), TickHistory()
    verdicts(restored, stream[:3])
    verdicts(fresh, stream[:3])
    copy = TickHistory.from_dict(restored.to_dict())
    assert verdicts(copy, stream[3:]) == verdicts(fresh, stream[3:])
    assert DEFAULT_MAX_EVENT_SKEW_MS == 7 * 86_400_000


def test_big_inputs_are_cut_with_their_length_and_sha256() -> None:
    raw = bytes(range(256)) * 8192  # 2 MiB, more than any default request size
    key, detail = b"k" * 5000, "x" * 10_000
    fields = bounded_payload(raw, key, detail)
    assert fields["raw"] == raw[:RAW_LIMIT] and fields["raw_length"] == len(raw)
    assert fields["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert fields["raw_key"] == key[:KEY_LIMIT] and fields["raw_key_length"] == 5000
    assert fields["detail"] == detail[:DETAIL_LIMIT] and fields["detail_length"] == 10_000
    letter = DeadLettered(
        dead_letter_id="x", reason="contract_violation", error_type="ContractError",
        stage="features", **fields,
    )  # fmt: skip
    encoded = topic_codec(Topic.DEADLETTER).encode(letter)
    assert len(encoded) < RAW_LIMIT + KEY_LIMIT + 4 * DETAIL_LIMIT + 1024
    assert topic_codec(Topic.DEADLETTER).decode_record(encoded) == letter


def test_small_inputs_are_kept_whole_and_odd_text_still_encodes() -> None:
    fields = bounded_payload(b"abc", None, "bad byte \udcff here")
    assert fields["raw"] == b"abc" and fields["raw_length"] is None and fields["raw_sha256"] is None
    letter = DeadLettered(
        dead_letter_id="x", reason="r", error_type="E", stage="s", **fields
    )  # fmt: skip
    assert (
        topic_codec(Topic.DEADLETTER)
        .decode_record(topic_codec(Topic.DEADLETTER).encode(letter))
        .detail.startswith("bad byte ")
    )
