"""One supervised websocket connection of up to 200 streams: it reconnects, it never gives up.

Built on ``websockets`` (asyncio client) rather than python-binance's ``ReconnectingWebsocket``
(see the package doc). The supervisor

* reconnects forever with jittered exponential backoff (:mod:`.backoff`), resetting it once a
  session stayed up ``stable_after_s``;
* answers the exchange's pings (``websockets`` replies to every ping frame; Binance closes a
  connection that stays silent to its pings) and pings the exchange itself, so a dead TCP
  path is noticed within ``ping_interval + ping_timeout``;
* watches every stream: no message on one of its streams for ``idle_timeout_s`` and the
  session is replaced (a stall without a close frame, or a stream the URL does not route);
* rotates before Binance's 24-hour cut: after ``rotate_after_s`` it opens the next session
  and closes the old one only once the new one delivered a message, so no minute is lost to
  the rotation (duplicates from the overlap are the sequencer's job).

Streams are added and removed on the open session (:meth:`StreamConnection.subscribe`,
:meth:`~StreamConnection.unsubscribe`: Binance's ``SUBSCRIBE``/``UNSUBSCRIBE`` requests on a
combined stream), so a universe change drops no other stream; the next session's URL names the
streams of that moment.

Every message goes to ``on_text(text) -> stream name | None``; what it did is in
:class:`ConnectionHealth` (for logs, metrics and ``/ready``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.adapters.live.backoff import Backoff

log = logging.getLogger(__name__)

OnText = Callable[[str | bytes], str | None]


class IdleStreamError(Exception):
    """A stream of the connection delivered nothing for longer than the idle timeout."""


@dataclass(frozen=True)
class ConnectionSettings:
    """How one connection is supervised (seconds)."""

    idle_timeout_s: float = 90.0
    rotate_after_s: float = 23 * 3600.0
    stable_after_s: float = 60.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    open_timeout_s: float = 10.0


@dataclass
class ConnectionHealth:
    """What one connection has done, for metrics and readiness."""

    name: str
    streams: list[str]
    connected: bool = False
    sessions: int = 0
    reconnects: int = 0
    rotations: int = 0
    idle_timeouts: int = 0
    messages: int = 0
    last_error: str = ""
    last_message: dict[str, float] = field(default_factory=dict)  # monotonic s per stream

    def stale_streams(self, now: float, idle_timeout_s: float, since: float) -> list[str]:
        """Streams without a message for ``idle_timeout_s`` (counting from ``since``)."""
        return [
            s
            for s in self.streams
            if now - max(self.last_message.get(s, since), since) > idle_timeout_s
        ]


class StreamConnection:
    """Supervises the combined stream ``url`` carrying ``streams``."""

    def __init__(
        self,
        name: str,
        url: str,
        streams: list[str],
        on_text: OnText,
        settings: ConnectionSettings,
        backoff: Backoff,
        *,
        connect: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        url_for: Callable[[list[str]], str] | None = None,
    ) -> None:
        self.url = url
        self.on_text = on_text
        self.settings = settings
        self.backoff = backoff
        self.health = ConnectionHealth(name, list(streams))
        self._connect = connect
        self._clock = clock
        self._url_for = url_for  # the URL of the streams at the time of a (re)connect
        self._ws: Any = None  # the newest session
        self._request_id = 0

    @property
    def capacity_used(self) -> int:
        """Streams carried now."""
        return len(self.health.streams)

    async def subscribe(self, streams: list[str]) -> None:
        """Add ``streams`` (the watchdog counts them from now); sent on the open session."""
        new = [s for s in streams if s not in self.health.streams]
        now = self._clock()
        for stream in new:
            self.health.streams.append(stream)
            self.health.last_message[stream] = now
        await self._request("SUBSCRIBE", new)

    async def unsubscribe(self, streams: list[str]) -> None:
        """Remove ``streams`` from the open session and from every later one."""
        gone = [s for s in streams if s in self.health.streams]
        for stream in gone:
            self.health.streams.remove(stream)
            self.health.last_message.pop(stream, None)
        await self._request("UNSUBSCRIBE", gone)

    async def _request(self, method: str, streams: list[str]) -> None:
        """A live (un)subscribe; with no session open, the next URL carries the change."""
        if self._url_for is not None:
            self.url = self._url_for(self.health.streams)
        if not streams or self._ws is None:
            return
        self._request_id += 1
        body = json.dumps({"method": method, "params": streams, "id": self._request_id})
        try:
            await self._ws.send(body)
        except Exception as exc:  # the session is failing: its successor opens on self.url
            log.warning("%s: %s not sent (%s); the next session carries it", self.health.name,
                        method, exc)  # fmt: skip

    async def run(self) -> None:
        """Keep a session open until cancelled; rotate and reconnect as the module doc says."""
        reader: asyncio.Task[None] | None = None
        started = self._clock()
        try:
            while True:
                ws = await self._open()
                old_started, started = started, self._clock()
                first = asyncio.Event()
                new_reader = asyncio.create_task(self._read(ws, first, started))
                if reader is not None:  # a rotation: the old session reads until the new delivers
                    await self._hand_over(reader, new_reader, first, old_started)
                reader = new_reader
                done, _ = await asyncio.wait({reader}, timeout=self.settings.rotate_after_s)
                if done:
                    self._ended(reader, started)
                    reader = None
                    await asyncio.sleep(self.backoff.next_delay())  # no reconnect storm
                else:
                    self.health.rotations += 1
                    log.info("%s: planned rotation after %.0f s", self.health.name,
                             self.settings.rotate_after_s)  # fmt: skip
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
            self.health.connected = False

    async def _open(self) -> Any:
        """A new session; failed attempts wait out the backoff, forever."""
        connect = self._connect or _websockets_connect
        while True:
            try:
                ws = await connect(
                    self.url,
                    ping_interval=self.settings.ping_interval_s,
                    ping_timeout=self.settings.ping_timeout_s,
                    open_timeout=self.settings.open_timeout_s,
                    max_size=2**22,
                )
            except Exception as exc:  # any failure to connect retries (DNS, TLS, HTTP 4xx/5xx)
                delay = self.backoff.next_delay()
                self.health.last_error = f"connect: {type(exc).__name__}: {exc}"
                log.warning("%s: %s; retrying in %.2f s", self.health.name,
                            self.health.last_error, delay)  # fmt: skip
                self.health.reconnects += 1
                await asyncio.sleep(delay)
                continue
            self.health.sessions += 1
            self.health.connected = True
            return ws

    async def _read(self, ws: Any, first: asyncio.Event, started: float) -> None:
        """Hand every message to ``on_text`` until the session fails or a stream goes idle."""
        self._ws = ws
        try:
            check_every = max(0.01, self.settings.idle_timeout_s / 4)
            while True:
                text = None
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that races a message, and the supervisor would never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(check_every):
                        text = await ws.recv()
                now = self._clock()
                if text is not None:
                    self.health.messages += 1
                    first.set()
                    stream = self.on_text(text)
                    if stream is not None:
                        self.health.last_message[stream] = now
                stale = self.health.stale_streams(now, self.settings.idle_timeout_s, started)
                if stale:
                    self.health.idle_timeouts += 1
                    raise IdleStreamError(
                        f"no message on {', '.join(stale[:3])}{' ...' if len(stale) > 3 else ''} "
                        f"for {self.settings.idle_timeout_s:g} s"
                    )
        finally:
            if self._ws is ws:
                self._ws = None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await ws.close()

    async def _hand_over(
        self, old: asyncio.Task[None], new: asyncio.Task[None], first: asyncio.Event,
        old_started: float,
    ) -> None:  # fmt: skip
        """Close ``old`` once ``new`` delivered (or failed, or ``old`` ended by itself)."""
        waiter = asyncio.create_task(first.wait())
        await asyncio.wait({waiter, new, old}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if old.done():  # it failed during the hand-over: an unplanned end like any other
            self._ended(old, old_started)
        old.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await old

    def _ended(self, reader: asyncio.Task[None], started: float) -> None:
        """Account for a session that ended; a long one resets the backoff."""
        self.health.connected = False
        self.health.reconnects += 1
        exc = reader.exception()
        self.health.last_error = f"{type(exc).__name__}: {exc}" if exc else "closed"
        if self._clock() - started >= self.settings.stable_after_s:
            self.backoff.reset()
        log.warning(
            "%s: session ended (%s); reconnecting", self.health.name, self.health.last_error
        )


async def _websockets_connect(url: str, **kwargs: Any) -> Any:
    from websockets.asyncio.client import connect

    return await connect(url, **kwargs)
