"""Binance market-data endpoints, stream names and how streams are split over connections.

Pure. The default base URLs (streams/config.py ``LiveConfig``) are python-binance's own
constants (``BinanceSocketManager.FSTREAM_URL``, ``STREAM_URL``, ``BaseClient.FUTURES_URL``,
``API_URL``; tests/unit/test_live_pure.py checks they agree). USD-M futures routes streams by
path since 2025: klines belong to ``/market`` (a connection without the routed path only gets
``/public`` data and a kline stream on it stays silent without an error), which is why the
futures default ends in ``/market``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

Market = Literal["futures", "spot"]

#: Binance's limit of streams on one futures connection (spot allows 1024; we keep 200).
MAX_STREAMS_PER_CONNECTION: Final = 200
#: Interval code of the one kline interval the topology consumes.
KLINE_INTERVAL: Final = "1m"
#: REST path of klines per market (python-binance appends it to FUTURES_URL / API_URL).
KLINES_PATH: Final = {"futures": "/fapi/v1/klines", "spot": "/api/v3/klines"}
#: Largest page the klines endpoint returns (futures 1500, spot 1000).
MAX_PAGE: Final = {"futures": 1500, "spot": 1000}


def kline_stream(symbol: str, interval: str = KLINE_INTERVAL) -> str:
    """``btcusdt@kline_1m``: Binance stream names are lower case."""
    return f"{symbol.lower()}@kline_{interval}"


def chunk_streams(streams: Sequence[str], per_connection: int) -> list[list[str]]:
    """Split ``streams`` into connections of at most ``per_connection`` (<= 200) streams."""
    if not 1 <= per_connection <= MAX_STREAMS_PER_CONNECTION:
        raise ValueError(
            f"streams per connection must be in [1, {MAX_STREAMS_PER_CONNECTION}], "
            f"got {per_connection}"
        )
    return [list(streams[i : i + per_connection]) for i in range(0, len(streams), per_connection)]


def combined_stream_url(base_url: str, streams: Sequence[str]) -> str:
    """``<base>/stream?streams=a/b/c``: one connection, messages wrapped as ``{stream, data}``."""
    if not streams:
        raise ValueError("a combined stream needs at least one stream")
    return f"{base_url.rstrip('/')}/stream?streams={'/'.join(streams)}"
