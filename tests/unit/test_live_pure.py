"""Pure parts of the live edge: backoff, endpoints, the wire format, the sequencer, REST rules."""

from __future__ import annotations

import json

import pytest

from streams.adapters.live.backoff import Backoff
from streams.adapters.live.endpoints import chunk_streams, combined_stream_url, kline_stream
from streams.adapters.live.klines import (
    Kline,
    KlineMessageError,
    parse_rest_row,
    parse_stream_message,
    to_tick,
)
from streams.adapters.live.rest import (
    kline_request_weight,
    next_page_start,
    retry_after_s,
    weight_pause_s,
)
from streams.adapters.live.sequencer import BackfillRequest, KlineSequencer
from streams.config import LiveConfig
from streams.contracts.records import TickKind
from streams.contracts.ticks import TickReason

M = 60_000
T0 = 1746403200000


def kline(symbol: str, minute: int, closed: bool = True, close: float = 1.0) -> Kline:
    return Kline(symbol, T0 + minute * M, 1.0, 2.0, 0.5, close, 3.0, closed)


# ------------------------------------------------------------------------------ backoff


def test_backoff_doubles_to_the_cap_with_equal_jitter_and_never_gives_up() -> None:
    low = Backoff(0.5, 8.0, rand=lambda: 0.0)
    assert [low.next_delay() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    high = Backoff(0.5, 8.0, rand=lambda: 1.0)
    assert [high.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    for _ in range(5000):  # no attempt limit, no overflow
        assert high.next_delay() == 8.0
    high.reset()
    assert high.next_delay() == 0.5


def test_backoff_refuses_a_base_above_its_cap() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(2.0, 1.0)


# ---------------------------------------------------------------------------- endpoints


def test_streams_are_split_at_200_per_connection() -> None:
    streams = [kline_stream(f"S{i}USDT") for i in range(450)]
    chunks = chunk_streams(streams, 200)
    assert [len(c) for c in chunks] == [200, 200, 50]
    assert [s for c in chunks for s in c] == streams
    with pytest.raises(ValueError, match="200"):
        chunk_streams(streams, 201)


def test_combined_stream_url_on_the_routed_market_path() -> None:
    url = combined_stream_url(LiveConfig().futures_ws_url, ["btcusdt@kline_1m", "ethusdt@kline_1m"])
    assert (
        url == "wss://fstream.binance.com/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
    )


def test_default_endpoints_are_python_binances_own() -> None:
    binance = pytest.importorskip("binance")
    from binance.ws.streams import BinanceSocketManager

    config = LiveConfig()
    # python-binance routes USD-M klines to FSTREAM_URL + "market/" (category="market").
    assert config.futures_ws_url + "/" == BinanceSocketManager.FSTREAM_URL.format("com") + "market/"
    assert config.spot_ws_url + "/" == BinanceSocketManager.STREAM_URL.format("com")
    assert config.futures_rest_url + "/fapi" == binance.AsyncClient.FUTURES_URL.format("com")
    assert config.spot_rest_url + "/api" == binance.AsyncClient.API_URL.format("", "com")


# ------------------------------------------------------------------------- wire format


def ws_message(closed: bool = True, **k_overrides: object) -> str:
    k = {"t": T0, "T": T0 + M - 1, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 9, "o": "94000.10",
         "c": "94010.00", "h": "94020.5", "l": "93990", "v": "12.345", "n": 9, "x": closed,
         "q": "0", "V": "0", "Q": "0", "B": "0"}  # fmt: skip
    k.update(k_overrides)
    data = {"e": "kline", "E": T0 + M + 3, "s": "BTCUSDT", "k": k}
    return json.dumps({"stream": "btcusdt@kline_1m", "data": data})


def test_a_closed_kline_message_becomes_the_replay_tick() -> None:
    event = parse_stream_message(ws_message())
    assert event is not None
    assert event.stream == "btcusdt@kline_1m" and event.event_time_ms == T0 + M + 3
    tick = to_tick(event.kline, event.stream)
    assert (tick.symbol, tick.event_time_ms, tick.kind) == ("BTCUSDT", T0, TickKind.KLINE_1M)
    assert (tick.open, tick.high, tick.low, tick.close, tick.volume) == (
        float("94000.10"), 94020.5, 93990.0, 94010.0, 12.345,
    )  # fmt: skip
    assert tick.source == "binance-ws:btcusdt@kline_1m" and tick.interval_ms == M


def test_open_minute_updates_are_not_closed_and_control_answers_are_none() -> None:
    event = parse_stream_message(ws_message(closed=False))
    assert event is not None and not event.kline.closed
    assert parse_stream_message('{"result": null, "id": 1}') is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", TickReason.UNPARSABLE),
        ("[1, 2]", TickReason.UNPARSABLE),
        ('{"e": "kline"}', TickReason.UNPARSABLE),
        (ws_message(o="abc"), TickReason.UNPARSABLE),
        (ws_message(h="NaN"), TickReason.NAN),
        (ws_message(l="-1"), TickReason.NON_POSITIVE_PRICE),
        (ws_message(h="1"), TickReason.HIGH_BELOW_LOW),
        (ws_message(i="5m"), TickReason.BAD_KIND_FIELDS),
        (ws_message(t=T0 + 7), TickReason.MISALIGNED_TIME),
        (ws_message(t=1_000), TickReason.IMPLAUSIBLE_TIME),
        (ws_message(s="btc usdt"), TickReason.BAD_SYMBOL),
    ],
)
def test_bad_messages_raise_with_a_reason(text: str, reason: TickReason) -> None:
    with pytest.raises(KlineMessageError) as info:
        parse_stream_message(text)
    assert info.value.reason is reason


def test_rest_rows_parse_and_bad_rows_raise() -> None:
    row = [T0, "1.5", "2", "1", "1.75", "100", T0 + M - 1, "150", 10, "50", "75", "0"]
    assert parse_rest_row("ETHUSDT", row) == Kline("ETHUSDT", T0, 1.5, 2.0, 1.0, 1.75, 100.0)
    with pytest.raises(KlineMessageError):
        parse_rest_row("ETHUSDT", [T0, "1"])
    with pytest.raises(KlineMessageError):
        parse_rest_row("ETHUSDT", [str(T0), "1", "1", "1", "1", "1"])


# --------------------------------------------------------------------------- sequencer


def sequencer(**kw: object) -> KlineSequencer:
    kw.setdefault("starts", {"AAA": T0, "BBB": T0})
    return KlineSequencer(["BBB", "AAA"], grace_ms=5_000, **kw)  # type: ignore[arg-type]


def test_release_waits_for_every_symbol_then_goes_in_time_symbol_order() -> None:
    seq = sequencer()
    seq.add(kline("BBB", 0))
    seq.add(kline("BBB", 1))
    assert seq.release() == []  # AAA has not delivered minute 0
    seq.add(kline("AAA", 1))  # out of order
    seq.add(kline("AAA", 0))
    released = [(k.open_time_ms - T0) // M for k in seq.release()]
    assert released == [0, 0, 1, 1]
    assert seq.counts.released == 4


def test_duplicates_and_late_klines_are_dropped_and_counted() -> None:
    seq = sequencer()
    assert seq.add(kline("AAA", 0)) and not seq.add(kline("AAA", 0, close=1.5))
    seq.add(kline("BBB", 0))
    assert len(seq.release()) == 2
    assert not seq.add(kline("BBB", 0))  # already released
    assert not seq.add(kline("BBB", 1, closed=False))  # the open minute is not a kline yet
    assert not seq.add(kline("CCC", 1))  # not in the universe
    assert seq.counts.duplicates == 2


def test_gaps_wait_for_grace_then_ask_up_to_the_next_kline_or_the_open_minute() -> None:
    seq = sequencer()
    seq.add(kline("AAA", 0))
    seq.add(kline("AAA", 3))
    seq.observe_clock(T0 + M + 4_000)  # minute 0 closed 4 s ago: within grace
    assert seq.gaps() == []
    seq.observe_clock(T0 + 4 * M + 10)
    assert seq.gaps() == [
        BackfillRequest("AAA", T0 + M, T0 + 3 * M),
        BackfillRequest("BBB", T0, T0 + 4 * M),  # up to the open minute
    ]


def test_confirm_fills_and_counts_what_the_exchange_really_lacks() -> None:
    seq = sequencer()
    seq.observe_clock(T0 + 3 * M + 10_000)
    for request in seq.gaps():
        got = [kline(request.symbol, m) for m in (0, 2)] if request.symbol == "AAA" else [
            kline("BBB", m) for m in (0, 1, 2)
        ]  # fmt: skip
        seq.confirm(request, got)
    assert [(k.symbol, (k.open_time_ms - T0) // M) for k in seq.release()] == [
        ("AAA", 0), ("BBB", 0), ("BBB", 1), ("AAA", 2), ("BBB", 2),
    ]  # fmt: skip
    assert seq.counts.missing == {"AAA": 1}
    assert seq.frontier() == T0 + 3 * M


def test_until_bounds_the_run_and_unstarted_symbols_warm_up_from_the_clock() -> None:
    seq = KlineSequencer(["AAA"], warmup_ms=2 * M, until_ms=T0 + 2 * M)
    assert seq.frontier() is None and seq.gaps() == []
    seq.observe_clock(T0 + 2 * M + 30_000)  # starts at the open minute minus the warm-up
    assert seq.settled_until("AAA") == T0
    assert not seq.add(kline("AAA", 2))  # at or beyond the end
    seq.add(kline("AAA", 0))
    seq.add(kline("AAA", 1))
    assert len(seq.release()) == 2 and seq.done


def test_a_symbol_new_to_the_topic_joins_where_the_others_are() -> None:
    seq = KlineSequencer(["AAA", "NEW"], starts={"AAA": T0 + 5 * M})
    assert seq.settled_until("NEW") == T0 + 5 * M


def test_a_symbol_joins_a_running_sequencer_at_the_next_minute_owed_and_can_leave() -> None:
    seq = sequencer()
    for m in (0, 1):
        seq.add(kline("AAA", m))
        seq.add(kline("BBB", m))
    assert len(seq.release()) == 4
    seq.add_symbol("CCC")  # joins cold: owed from minute 2, like the others (never behind)
    assert seq.settled_until("CCC") == T0 + 2 * M and seq.symbols == ["AAA", "BBB", "CCC"]
    seq.add(kline("AAA", 2))
    seq.add(kline("BBB", 2))
    assert seq.release() == []  # minute 2 waits for the newcomer too
    assert not seq.add(kline("CCC", 1))  # before its start: a duplicate of nothing owed
    seq.add(kline("CCC", 2))
    assert [k.symbol for k in seq.release()] == ["AAA", "BBB", "CCC"]
    seq.add(kline("BBB", 3))
    seq.remove_symbol("AAA")  # left (wind-down over): nobody waits for it any more
    seq.remove_symbol("CCC")
    assert seq.confirm(BackfillRequest("CCC", T0 + 3 * M, T0 + 4 * M), [kline("CCC", 3)]) == 0
    assert [(k.symbol, k.open_time_ms) for k in seq.release()] == [("BBB", T0 + 3 * M)]
    seq.remove_symbol("BBB")  # the last symbol stays: an empty universe has no frontier
    assert seq.symbols == ["BBB"]


def test_a_joiner_owes_its_warm_up_history_and_its_first_kline_carries_it() -> None:
    seq = sequencer(warmup_ms=3 * M)
    assert seq.history_requests() == []  # the start's symbols have their own history
    for m in (0, 1):
        seq.add(kline("AAA", m))
        seq.add(kline("BBB", m))
    assert len(seq.release()) == 4
    seq.add_symbol("CCC")
    owed = BackfillRequest("CCC", T0 - M, T0 + 2 * M)  # the 3 minutes before its first
    assert seq.history_requests() == [owed]
    for symbol in ("AAA", "BBB", "CCC"):
        seq.add(kline(symbol, 2))
    assert seq.release() == []  # nothing passes a kline that has not got its history yet
    # REST answers: a minute the exchange has not (1) is left out, nothing else is invented;
    # a kline outside the range or of another symbol is not history
    answer = [kline("CCC", 0), kline("CCC", -1), kline("CCC", 2), kline("AAA", 0)]
    assert seq.add_history(owed, answer) == 2
    assert seq.history_requests() == [] and seq.counts.history == {"CCC": 2}
    assert [k.symbol for k in seq.release()] == ["AAA", "BBB", "CCC"]
    assert [k.open_time_ms for k in seq.take_history("CCC")] == [T0 - M, T0]
    assert seq.take_history("CCC") == ()  # once: its later klines carry none


def test_a_warm_up_answer_for_a_symbol_that_left_meanwhile_is_dropped() -> None:
    seq = sequencer(warmup_ms=2 * M)
    seq.add(kline("AAA", 0))
    seq.add(kline("BBB", 0))
    seq.release()
    seq.add_symbol("CCC")
    (first,) = seq.history_requests()
    seq.remove_symbol("CCC")
    assert seq.history_requests() == [] and seq.add_history(first, [kline("CCC", 0)]) == 0
    seq.add(kline("AAA", 1))
    seq.add(kline("BBB", 1))
    assert len(seq.release()) == 2
    seq.add_symbol("CCC")  # joins again, later: a new warm-up is owed
    (again,) = seq.history_requests()
    assert again == BackfillRequest("CCC", T0, T0 + 2 * M)
    assert seq.add_history(first, [kline("CCC", 0)]) == 0  # the old answer is not this one
    assert seq.history_requests() == [again]
    seq.add_history(again, [kline("CCC", 0), kline("CCC", 1)])
    for symbol in ("AAA", "BBB", "CCC"):
        seq.add(kline(symbol, 2))
    assert [k.symbol for k in seq.release()] == ["AAA", "BBB", "CCC"]
    assert [k.open_time_ms for k in seq.take_history("CCC")] == [T0, T0 + M]


def test_a_symbol_new_to_a_topic_with_ticks_owes_a_warm_up_a_cold_start_does_not() -> None:
    seq = KlineSequencer(["AAA", "NEW"], starts={"AAA": T0 + 5 * M}, warmup_ms=4 * M)
    assert seq.history_requests() == [BackfillRequest("NEW", T0 + M, T0 + 5 * M)]
    cold = KlineSequencer(["AAA"], warmup_ms=4 * M)  # its warm-up is real ticks, from the clock
    cold.observe_clock(T0 + 10 * M)
    assert cold.history_requests() == [] and cold.settled_until("AAA") == T0 + 6 * M
    cold.add_symbol("BBB")  # joins a sequencer that has started: owes one
    assert cold.history_requests() == [BackfillRequest("BBB", T0 + 2 * M, T0 + 6 * M)]
    assert KlineSequencer(["AAA", "NEW"], starts={"AAA": T0}).history_requests() == []  # off


def test_release_is_held_before_a_universe_refresh_not_written_yet() -> None:
    seq = sequencer()
    for m in (0, 1, 2):
        seq.add(kline("AAA", m))
        seq.add(kline("BBB", m))
    assert seq.frontier(T0 + 2 * M) == T0 + 2 * M
    assert [k.open_time_ms for k in seq.release(T0 + 2 * M)] == [T0, T0, T0 + M, T0 + M]
    assert [k.open_time_ms for k in seq.release()] == [T0 + 2 * M] * 2  # once written


# ------------------------------------------------------------------------------- REST


def test_request_weight_follows_binances_table() -> None:
    assert [kline_request_weight(n) for n in (99, 100, 499, 500, 1000, 1001, 1500)] == [
        1, 2, 2, 5, 5, 10, 10,
    ]  # fmt: skip
    assert kline_request_weight(1000, "spot") == 2


def test_weight_budget_pauses_until_the_next_minute() -> None:
    assert weight_pause_s(None, 5, 1200, 30.0) == 0.0
    assert weight_pause_s(1195, 5, 1200, 30.0) == 0.0
    assert weight_pause_s(1196, 5, 1200, 130.0) == pytest.approx(50.05)


def test_retry_after_is_seconds_or_the_default() -> None:
    assert retry_after_s({"Retry-After": "7"}, 1.0) == 7.0
    assert retry_after_s({"Retry-After": "soon"}, 1.5) == 1.5
    assert retry_after_s(None, 2.0) == 2.0


def test_paging_goes_on_after_the_last_open_time_until_the_range_is_covered() -> None:
    request = BackfillRequest("AAA", T0, T0 + 10 * M)
    full = [kline("AAA", m) for m in range(4)]
    assert next_page_start(request, full, 4, M) == T0 + 4 * M
    assert next_page_start(request, full[:3], 4, M) is None  # a short page is the last
    last = [kline("AAA", m) for m in range(6, 10)]
    assert next_page_start(request, last, 4, M) is None
