"""`quantum-trader dashboard`: the operators' web UI on a run's topics or a finished run folder."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from streams.config import Settings
    from streams.dashboard.server import DashboardContext, Source
    from streams.demo import LiveRun


def newest_run(runs_dir: Path) -> Path | None:
    """The most recently written run folder (by its report.json), if any."""
    reports = [p for p in runs_dir.glob("*/report.json") if p.is_file()]
    return max(reports, key=lambda p: p.stat().st_mtime).parent if reports else None


def resolve_run(run: str, runs_dir: Path) -> Path:
    """``run`` as a folder path, or as a run id under ``runs_dir``."""
    path = Path(run)
    return path if path.is_dir() or os.sep in run else runs_dir / run


def context_for(source: Source, settings: Settings) -> DashboardContext:
    """The server's context: the source plus the settings every page needs."""
    from streams.commands.control import send_command
    from streams.dashboard.server import DashboardContext

    def send(kind: str, reason: str, at: int | None, bootstrap: str, prefix: str) -> str:
        return send_command(kind, reason, at, None, bootstrap, prefix)

    return DashboardContext(
        source=source,
        runs_dir=settings.runs_dir,
        registry_dir=settings.registry_dir,
        mode=settings.mode,
        jaeger_ui_url=settings.jaeger_ui_url,
        send_command=send,
    )


def _topic_source(
    settings: Settings, bootstrap: str, prefix: str | None, worker_url: str, trace: Path
) -> Source:
    from streams.dashboard.model import ReadModel
    from streams.dashboard.server import Source
    from streams.dashboard.sources import TopicFeed, broker_topics, choose_prefix, prefixes_on

    if prefix is None and "QT_TOPIC_PREFIX" in os.environ:
        prefix = settings.topic_prefix
    if prefix is None:
        prefix = choose_prefix(prefixes_on(broker_topics(bootstrap)), None)
    model = ReadModel.from_settings(settings)
    feed = TopicFeed(model, bootstrap, prefix, settings.app_id).start()
    return Source(feed=feed, worker_url=worker_url, trace_file=trace)


def command(
    run: Annotated[
        str | None,
        typer.Option(help="a finished run folder, or its id under QT_RUNS_DIR (default: newest)"),
    ] = None,
    bootstrap: Annotated[
        str | None,
        typer.Option(help="read a run's topics live from this broker (default QT_KAFKA_BOOTSTRAP)"),
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option(
            help="topic prefix of the run to show (default QT_TOPIC_PREFIX if set, else the "
            "only run on the broker, e.g. 'demo-1a2b3c4d.')"
        ),
    ] = None,
    worker_url: Annotated[
        str | None,
        typer.Option(help="the worker's web server, for the pipeline page (default QT_WEB_PORT)"),
    ] = None,
    trace_file: Annotated[
        Path | None, typer.Option(help="span file for trace links (default QT_TRACE_FILE)")
    ] = None,
    host: Annotated[str | None, typer.Option(help="bind address (QT_DASHBOARD_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (QT_DASHBOARD_PORT, 8050)")] = None,
) -> None:
    """Serve the web dashboard: overview, signals, models, learning, pipeline, runs.

    Live (a running worker or a replay in progress): pass --bootstrap or set QT_KAFKA_BOOTSTRAP;
    the pages update in place from the run's topics, and halt/resume send the same command as
    `quantum-trader halt|resume`. Otherwise it shows a finished run folder (--run, default the
    newest under runs/). Binds to 127.0.0.1 by default: anyone who reaches the port can halt
    trading.
    """
    from streams.config import get_settings
    from streams.dashboard.server import Source, serve
    from streams.dashboard.sources import DashboardError, load_run_folder
    from streams.kafka_io import KafkaIOError
    from streams.observability import trace_file as default_trace_file

    settings = get_settings()
    servers = bootstrap or (None if run else settings.kafka_bootstrap)
    try:
        if servers:
            url = worker_url or f"http://127.0.0.1:{settings.web_port}"
            trace = trace_file or default_trace_file(settings)
            source = _topic_source(settings, servers, prefix, url.rstrip("/"), trace)
            shown = f"the topics of {servers} (prefix {source.info()['prefix']!r})"
        else:
            folder = resolve_run(run, settings.runs_dir) if run else newest_run(settings.runs_dir)
            if folder is None:
                raise DashboardError(
                    f"no finished run under {settings.runs_dir}: run `make demo` first, pass "
                    "--run FOLDER, or --bootstrap to watch a live run"
                )
            source = Source(run=load_run_folder(folder))
            shown = f"the run folder {folder}"
    except (DashboardError, KafkaIOError) as exc:
        typer.secho(f"dashboard: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    address = host or settings.dashboard_host
    at = port if port is not None else settings.dashboard_port
    typer.echo(f"dashboard of {shown} on http://{address}:{at}/ (Ctrl-C stops it)")
    try:
        serve(context_for(source, settings), address, at)
    except OSError as exc:
        message = f"dashboard: cannot serve on {address}:{at}: {exc}"
        typer.secho(message, fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc


class DemoDashboard:
    """The dashboard of a demo: on its topics while it runs, on its run folder afterwards.

    :meth:`watch` is the demo's ``on_live`` hook (:class:`streams.demo.DemoPlan`); the server
    keeps serving after the broker is gone, from the run folder :meth:`show_run` points it at.
    """

    def __init__(self, settings: Settings, host: str, port: int, echo: Callable[[str], None]):
        self.settings, self.host, self.port, self.echo = settings, host, port, echo
        self.context: DashboardContext | None = None
        self.url: str | None = None
        self._serving = contextlib.ExitStack()

    def watch(self, live: LiveRun) -> Callable[[], None]:
        """Serve the dashboard on the demo's topics; returns what stops reading them."""
        from streams.dashboard.model import ReadModel
        from streams.dashboard.server import Source, serving_in_thread
        from streams.dashboard.sources import TopicFeed

        s = self.settings
        model = ReadModel.from_settings(s)
        feed = TopicFeed(model, live.bootstrap, live.prefix, s.app_id).start()
        worker_url = f"http://127.0.0.1:{live.worker_port}"
        source = Source(feed=feed, worker_url=worker_url, trace_file=live.trace_file)
        self.context = context_for(source, s)
        self.url = self._serving.enter_context(
            serving_in_thread(self.context, self.host, self.port)
        )
        self.echo(f"dashboard of this run on {self.url}/ (updates while the replay runs)")
        return feed.stop

    def show_run(self, run_dir: Path) -> None:
        """From now on, show the finished run folder (the topics are gone with the broker)."""
        from streams.dashboard.server import Source
        from streams.dashboard.sources import load_run_folder

        if self.context is not None:
            self.context.source = Source(run=load_run_folder(run_dir))

    def close(self) -> None:
        """Stop serving."""
        self._serving.close()
