"""Live in: Binance 1-minute klines over websockets into ``market.ticks``, gaps filled over REST.

The live edge produces exactly what the file replay produces for the same klines (contract,
key = symbol, record timestamp = kline open time, partitions, in-band watermarks from
:class:`~streams.adapters.replay.watermarks.WatermarkWriter`), so every stage and report works
unchanged. One module per concern:

* :mod:`.endpoints`: Binance's URLs (routed USD-M ``/market`` path), stream names, at most
  200 streams per connection;
* :mod:`.klines`: the wire format (combined-stream kline JSON, REST kline arrays) as typed
  :class:`~.klines.Kline` values and contract ticks (pure);
* :mod:`.backoff`: unlimited jittered exponential backoff with a cap (pure);
* :mod:`.sequencer`: dedupe by (symbol, open time), gap detection from the exchange clock,
  release in (open time, symbol) order once every symbol is settled (pure);
* :mod:`.rest`: paged ``/fapi/v1/klines`` (``/api/v3/klines`` for spot) through
  python-binance's ``AsyncClient``, request weight and ``Retry-After`` respected;
* :mod:`.connection`: the websocket supervisor (``websockets``): reconnect forever, idle
  watchdog per stream, pings answered, planned rotation opening the new connection first;
* :mod:`.resume`: the last kline of each symbol already in ``market.ticks``;
* :mod:`.universe`: the universe rule (top N by 24h quote volume, floors) and its refresh on
  the exchange clock, with the change events and the wind-down of leavers (pure);
* :mod:`.ingest`: all of it wired together, into Kafka.

Why not python-binance's websockets: its ``ReconnectingWebsocket`` gives up after 5 attempts,
has no per-stream idle watchdog and kills the socket when its 100-message queue overflows
(python-binance #1016, #1295, #1647). Its REST client and URL constants serve as they are.
"""

from __future__ import annotations


class LiveError(Exception):
    """The live ingest cannot start or go on; the message names the setting or endpoint."""
