"""`quantum-trader venue`: the exchange gateway of the testnet venue (beside the worker)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

FakeDir = Annotated[
    Path | None,
    typer.Option(
        help="serve a local fake of Binance USD-M futures on these recorded klines "
        "(<SYMBOL>.csv.gz, e.g. data/sample/um_futures_1m_2025) instead of the real endpoints",
        exists=True,
        file_okay=False,
    ),
]
FakeBarS = Annotated[
    float, typer.Option(help="fake exchange: wall seconds per recorded 1-minute bar", min=0.001)
]
FakePort = Annotated[int, typer.Option(help="fake exchange: port on 127.0.0.1 (0: any free)")]


def command(
    fake_exchange: FakeDir = None,
    fake_bar_s: FakeBarS = 0.5,
    fake_port: FakePort = 0,
    loglevel: str = typer.Option("info", help="log level"),
) -> None:
    """Connect the topology's testnet venue to Binance USD-M futures (QT_MODE=testnet).

    Reads `venue.commands` (what the execution stage wants placed or cancelled), executes each
    against QT_BINANCE__REST_URL with the keys QT_BINANCE_API_KEY / QT_BINANCE_API_SECRET
    (looked up by client id first: a redelivered command never places a second order), and
    writes what the exchange says to `venue.events`: acks, rejections with Binance's code,
    the user-data stream's fills (listenKey kept alive, recreated on expiry), and on start, on
    every reconnect and every QT_BINANCE__RECONCILE_EVERY_S the account's trades and positions
    for reconciliation. Needs QT_KAFKA_BOOTSTRAP (the worker's broker). Stop with Ctrl-C.

    With --fake-exchange DIR it first starts the local fake exchange on those recorded klines
    (one bar every --fake-bar-s seconds) and points the venue at it: no internet needed.
    """
    from streams.config import get_settings

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    if settings.mode != "testnet":
        raise typer.BadParameter(
            "the venue gateway trades on Binance: set QT_MODE=testnet (and the keys) first; "
            "paper mode needs no gateway"
        )
    if not settings.kafka_bootstrap:
        raise typer.BadParameter("set QT_KAFKA_BOOTSTRAP to the worker's broker")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(settings, fake_exchange, fake_bar_s, fake_port))


async def _run(settings, fake_dir: Path | None, bar_s: float, port: int) -> None:  # type: ignore[no-untyped-def]
    from streams.adapters.venues.binance.errors import VenueError
    from streams.adapters.venues.binance.gateway import BinanceGateway
    from streams.adapters.venues.binance.service import VenueService

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    key, secret = settings.binance_api_key, settings.binance_api_secret
    assert key is not None and secret is not None  # Settings refuses testnet without them
    async with _maybe_fake(settings, fake_dir, bar_s, port, stop) as cfg:
        gateway = BinanceGateway(cfg, key, secret)
        service = VenueService(settings, gateway, settings.kafka_bootstrap)
        typer.echo(
            f"venue: {cfg.rest_url} / {cfg.user_stream_url}; commands from "
            f"{service.commands_topic}, events to {service.events_topic}"
        )
        try:
            await service.run(stop)
        except VenueError as exc:
            raise typer.BadParameter(str(exc)) from None


def _klines(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt") as f:
        return list(csv.reader(f))[1:]


class _maybe_fake:
    """The settings' endpoints, or a fake exchange's, running for the block."""

    def __init__(self, settings, fake_dir, bar_s, port, stop) -> None:  # type: ignore[no-untyped-def]
        self.settings, self.fake_dir, self.bar_s, self.port, self.stop = (
            settings,
            fake_dir,
            bar_s,
            port,
            stop,
        )
        self._ctx = None
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self):  # type: ignore[no-untyped-def]
        cfg = self.settings.binance
        if self.fake_dir is None:
            return cfg
        from streams.adapters.venues.binance.fake_exchange import FakeExchange, serve

        s = self.settings
        fake = FakeExchange(
            s.binance_api_key.get_secret_value(), s.binance_api_secret.get_secret_value()
        )
        for path in sorted(self.fake_dir.glob("*.csv.gz")):
            fake.load_klines(path.name.split(".")[0], _klines(path))
        self._ctx = serve(fake, port=self.port)
        rest, ws = await self._ctx.__aenter__()
        self._ticker = asyncio.create_task(self._tick(fake))
        typer.echo(
            f"fake exchange on {rest}: {len(fake.klines)} symbol(s), a bar every {self.bar_s:g} s"
        )
        return cfg.model_copy(update={"rest_url": rest, "user_stream_url": ws})

    async def _tick(self, fake) -> None:  # type: ignore[no-untyped-def]
        while not self.stop.is_set():
            await asyncio.sleep(self.bar_s)
            await fake.advance()

    async def __aexit__(self, *exc: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._ctx is not None:
            await self._ctx.__aexit__(None, None, None)
