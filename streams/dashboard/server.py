"""The dashboard's web server (aiohttp): static pages, a JSON API and server-sent events.

One page (``static/index.html``) with six views; the browser loads :func:`snapshot` once, then
listens on ``/api/stream`` (server-sent events): every :data:`PUSH_EVERY_S` the server sends
what changed (the small views whole, the signal rows that changed, at most
:data:`~streams.dashboard.model.PUSH_ROWS`), built once and fanned out to every open page; a
page that cannot keep up loses old updates, never the newest.

Two sources (:class:`Source`): the topics of a run (a live run or a replay in progress, read by
:class:`~streams.dashboard.sources.TopicFeed`) or a finished run folder. Halt and resume send
the CLI's own ``ControlCommand`` (:func:`streams.commands.control.send_command`), only when the
source is a broker, only on an explicit ``confirm``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from streams.dashboard.model import ReadModel, select_rows
from streams.dashboard.sources import (
    DashboardError,
    RunFolder,
    TopicFeed,
    list_runs,
    load_run_folder,
    registry_models,
    run_dir_of,
    worker_pipeline,
)
from streams.vocabulary import CommandKind, SignalOutcome

STATIC_DIR = Path(__file__).resolve().parent / "static"
PUSH_EVERY_S = 0.5
#: Updates a slow page may fall behind by before the oldest are dropped.
CLIENT_QUEUE = 8
#: A comment line this often keeps proxies and the browser from timing the stream out.
KEEPALIVE_S = 15.0
MAX_LIMIT = 1000
#: Open event streams never end by themselves: a stop waits this long for them.
SHUTDOWN_S = 1.0


@dataclass
class Source:
    """What the dashboard shows: a run's topics (``feed``) or a finished run (``run``)."""

    feed: TopicFeed | None = None
    run: RunFolder | None = None
    worker_url: str | None = None
    trace_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.feed is None) == (self.run is None):
            raise DashboardError("a dashboard shows either a run's topics or a run folder")

    def snapshot(self) -> dict[str, Any]:
        """Every view (see :meth:`ReadModel.snapshot`)."""
        if self.feed is not None:
            with self.feed.lock:
                return self.feed.model.snapshot()
        assert self.run is not None
        return self.run.snapshot

    def state_summary(self) -> dict[str, Any]:
        """Per stage: stored state size and last flush (see :meth:`ReadModel.state_summary`)."""
        if self.feed is not None:
            with self.feed.lock:
                return self.feed.model.state_summary()
        assert self.run is not None
        return dict(self.run.snapshot.get("state") or {})

    def info(self) -> dict[str, Any]:
        """What is shown and whether it can be controlled."""
        if self.feed is not None:
            s = self.feed.status
            return {
                "source": "topics",
                "bootstrap": s.bootstrap,
                "prefix": s.prefix,
                "can_control": True,
                "feed": {
                    "records": s.records,
                    "undecodable": s.undecodable,
                    "topics": len(s.topics),
                    "error": s.error,
                    "idle_s": None if s.last_record_s is None else time.time() - s.last_record_s,
                },
            }
        assert self.run is not None
        return {
            "source": "run",
            "run_id": self.run.run_id,
            "path": str(self.run.path),
            "can_control": False,
            "control_refused": "a finished run folder: there is no broker to send commands to",
            "partial": self.run.snapshot.get("partial"),
        }


@dataclass
class DashboardContext:
    """Everything the handlers need (one per server)."""

    source: Source
    runs_dir: Path
    registry_dir: Path
    mode: str
    jaeger_ui_url: str | None = None
    #: Sends a control command: (kind, reason, event time or None, bootstrap, prefix) -> id.
    send_command: Callable[[str, str, int | None, str, str], str] | None = None
    clients: set[asyncio.Queue[str]] = field(default_factory=set)


CONTEXT: web.AppKey[DashboardContext] = web.AppKey("dashboard", DashboardContext)


def _ctx(request: web.Request) -> DashboardContext:
    return request.app[CONTEXT]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


# ------------------------------------------------------------------------------ handlers


async def index(request: web.Request) -> web.FileResponse:
    """The single page."""
    return web.FileResponse(STATIC_DIR / "index.html")


async def info(request: web.Request) -> web.Response:
    """Source, mode, control ability, Jaeger link base."""
    ctx = _ctx(request)
    return _json(
        {**ctx.source.info(), "mode": ctx.mode, "jaeger_ui_url": ctx.jaeger_ui_url}
        | {"worker_url": ctx.source.worker_url}
    )


async def snapshot(request: web.Request) -> web.Response:
    """Every view at once (first load)."""
    return _json(_ctx(request).source.snapshot())


def _int_param(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer, not {raw!r}") from None
    return max(1, min(value, high))


async def signals(request: web.Request) -> web.Response:
    """Signal rows filtered by ``symbol`` and ``outcome``, newest first, at most ``limit``."""
    outcome = request.query.get("outcome") or None
    if outcome is not None and outcome not in SignalOutcome.__members__:
        choices = ", ".join(SignalOutcome.__members__)
        return _error(400, f"outcome must be one of {choices}, not {outcome!r}")
    limit = _int_param(request, "limit", 200, MAX_LIMIT)
    rows = _ctx(request).source.snapshot()["signals"]
    return _json(select_rows(rows, request.query.get("symbol") or None, outcome, limit))


async def control(request: web.Request) -> web.Response:
    """``POST {"command": "HALT"|"RESUME", "reason", "at_ms", "confirm": true}``."""
    ctx = _ctx(request)
    feed = ctx.source.feed
    if feed is None or ctx.send_command is None:
        return _error(409, ctx.source.info().get("control_refused") or "control is disabled")
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "the body must be JSON")
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object")
    command = body.get("command")
    if command not in (CommandKind.HALT.value, CommandKind.RESUME.value):
        return _error(400, f"command must be HALT or RESUME, not {command!r}")
    if body.get("confirm") is not True:
        return _error(400, "not confirmed: send confirm=true once the operator confirmed")
    at = body.get("at_ms")
    if at is not None and (not isinstance(at, int) or isinstance(at, bool) or at < 0):
        return _error(400, f"at_ms must be epoch milliseconds or null, not {at!r}")
    reason = str(body.get("reason") or f"dashboard {command.lower()}")[:500]
    status = feed.status
    send = ctx.send_command
    try:
        command_id = await asyncio.get_running_loop().run_in_executor(
            None, send, command, reason, at, status.bootstrap, status.prefix
        )
    except Exception as exc:  # the broker's refusal, shown to the operator as it is
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return _error(502, f"{command} not sent: {message}")
    return _json({"command": command, "command_id": command_id, "at_ms": at, "reason": reason})


async def pipeline(request: web.Request) -> web.Response:
    """Live: the worker's /health, stage latencies and flush times, and each stage's stored
    state (size, last flush). A run folder: its report's figures and its last stored state."""
    ctx = _ctx(request)
    state = {"state": ctx.source.state_summary(), "now_ms": int(time.time() * 1000)}
    if ctx.source.run is not None:
        report = ctx.source.run.report
        keys = ("latency", "throughput", "counts", "workers")
        return _json({"report": {k: report.get(k) for k in keys}} | state)
    if not ctx.source.worker_url:
        return _json({"error": "no worker URL given (--worker-url)"} | state)
    url = ctx.source.worker_url
    loop = asyncio.get_running_loop()
    return _json(await loop.run_in_executor(None, worker_pipeline, url) | state)


async def registry(request: web.Request) -> web.Response:
    """Promoted models with their walk-forward metrics."""
    ctx = _ctx(request)
    loop = asyncio.get_running_loop()
    return _json(await loop.run_in_executor(None, registry_models, ctx.registry_dir))


async def runs(request: web.Request) -> web.Response:
    """Every finished run under the runs folder."""
    ctx = _ctx(request)
    return _json(await asyncio.get_running_loop().run_in_executor(None, list_runs, ctx.runs_dir))


def _run_path(request: web.Request) -> Path:
    try:
        return run_dir_of(_ctx(request).runs_dir, request.match_info["run_id"])
    except DashboardError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None


async def run_report(request: web.Request) -> web.Response:
    """One run's report.json."""
    try:
        return _json(load_run_folder(_run_path(request)).report)
    except DashboardError as exc:
        return _error(404, str(exc))


async def run_equity(request: web.Request) -> web.StreamResponse:
    """One run's equity.png."""
    path = _run_path(request) / "equity.png"
    if not path.is_file():
        raise web.HTTPNotFound(text=f"{path} does not exist")
    return web.FileResponse(path)


def _trace_file(ctx: DashboardContext, run_id: str | None) -> Path | None:
    if run_id:
        return run_dir_of(ctx.runs_dir, run_id) / "traces.jsonl"
    if ctx.source.run is not None:
        return ctx.source.run.path / "traces.jsonl"
    return ctx.source.trace_file


def trace_tree(path: Path, decision_id: str) -> dict[str, Any]:
    """The decision's spans as nested JSON (what ``quantum-trader trace`` prints)."""
    from streams.observability.tracing import SpanNode, build_tree, decision_trace

    def node(n: SpanNode) -> dict[str, Any]:
        s = n.span
        return {
            "name": s.get("name"),
            "duration_ms": ((s.get("end_ns") or 0) - (s.get("start_ns") or 0)) / 1e6,
            "status": s.get("status"),
            "attributes": s.get("attributes", {}),
            "children": [node(c) for c in n.children],
        }

    spans = decision_trace(path, decision_id)
    return {
        "decision_id": decision_id,
        "trace_ids": sorted({s["trace_id"] for s in spans}),
        "spans": len(spans),
        "roots": [node(n) for n in build_tree(spans)],
        "file": str(path),
    }


async def trace(request: web.Request) -> web.Response:
    """A decision's trace from the run's span file (``?run=`` picks another run folder)."""
    from streams.observability.tracing import TraceNotFoundError

    ctx = _ctx(request)
    decision_id = request.match_info["decision_id"]
    try:
        path = _trace_file(ctx, request.query.get("run"))
    except DashboardError as exc:
        return _error(404, str(exc))
    if path is None or not path.is_file():
        return _error(404, f"no span file {path} (set QT_TRACE_FILE or --trace-file)")
    try:
        tree = await asyncio.get_running_loop().run_in_executor(None, trace_tree, path, decision_id)
    except TraceNotFoundError as exc:
        return _error(404, str(exc))
    return _json({**tree, "jaeger_ui_url": ctx.jaeger_ui_url})


# ----------------------------------------------------------------------- server-sent events


def update_message(model: ReadModel, info: dict[str, Any]) -> dict[str, Any]:
    """One incremental update: the small views whole, the changed signal rows only."""
    return {
        "version": model.version,
        "overview": model.overview(),
        "models": model.models(),
        "learning": model.learning(),
        "rows": model.drain_changes(),
        "info": info,
    }


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def _next_message(ctx: DashboardContext, source: Source, seen: int) -> tuple[str | None, int]:
    feed = source.feed
    if source is not ctx.source:  # the demo switched from its topics to its run folder
        return _sse("snapshot", ctx.source.snapshot()) + _sse("info", ctx.source.info()), -1
    if feed is None:
        return None, seen
    with feed.lock:
        if feed.model.version == seen:
            return _sse("info", source.info()), seen
        return _sse("update", update_message(feed.model, source.info())), feed.model.version


async def broadcast(app: web.Application) -> None:
    """Build each update once and queue it for every open page (drop-oldest when full)."""
    ctx = app[CONTEXT]
    seen, source = -1, ctx.source
    while True:
        await asyncio.sleep(PUSH_EVERY_S)
        text, seen = _next_message(ctx, source, seen)
        source = ctx.source
        if text is None:
            continue
        for queue in list(ctx.clients):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(text)


async def stream(request: web.Request) -> web.StreamResponse:
    """``text/event-stream``: ``snapshot`` first, then ``update``/``info`` events."""
    ctx = _ctx(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    queue: asyncio.Queue[str] = asyncio.Queue(CLIENT_QUEUE)
    ctx.clients.add(queue)
    try:
        await response.write(_sse("snapshot", ctx.source.snapshot()).encode())
        while True:
            try:
                text = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                text = ": keep-alive\n\n"
            await response.write(text.encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        ctx.clients.discard(queue)
    return response


async def _broadcaster(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(broadcast(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def build_web_app(ctx: DashboardContext) -> web.Application:
    """The aiohttp application of the dashboard."""
    app = web.Application()
    app[CONTEXT] = ctx
    app.router.add_get("/", index)
    app.router.add_get("/api/info", info)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/api/signals", signals)
    app.router.add_post("/api/control", control)
    app.router.add_get("/api/pipeline", pipeline)
    app.router.add_get("/api/registry", registry)
    app.router.add_get("/api/runs", runs)
    app.router.add_get("/api/runs/{run_id}", run_report)
    app.router.add_get("/api/runs/{run_id}/equity.png", run_equity)
    app.router.add_get("/api/trace/{decision_id}", trace)
    app.router.add_get("/api/stream", stream)
    app.router.add_static("/static/", STATIC_DIR)
    app.cleanup_ctx.append(_broadcaster)
    return app


def serve(ctx: DashboardContext, host: str, port: int) -> None:
    """Serve until interrupted (Ctrl-C)."""
    web.run_app(build_web_app(ctx), host=host, port=port, print=None, shutdown_timeout=SHUTDOWN_S)


@contextlib.contextmanager
def serving_in_thread(ctx: DashboardContext, host: str, port: int) -> Iterator[str]:
    """The dashboard served from a thread of its own for the block; yields its URL.

    Used by ``quantum-trader demo --dashboard`` and the browser tests. A port in use is a
    :class:`DashboardError` naming it.
    """
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(build_web_app(ctx), shutdown_timeout=SHUTDOWN_S)
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, host, port)
            loop.run_until_complete(site.start())
        except OSError as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=run, name="dashboard-web", daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        raise DashboardError(f"cannot serve the dashboard on {host}:{port}: {failure[0]}")
    try:
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
