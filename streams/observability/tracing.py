"""Traces per decision: one trace from the tick to the closed trade, across Kafka hops.

Propagation: every record a stage sends carries the W3C ``traceparent`` of the span that
produced it in its Kafka headers (:func:`traceparent_header`); the reading stage extracts it
(:func:`extract_context`) and opens its span as a child. Headers are not part of any record's
bytes, so tracing changes no result.

Export: OTLP/HTTP when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, otherwise JSON lines appended to
``QT_TRACE_FILE`` (default ``<runs_dir>/traces.jsonl``), which ``quantum-trader trace`` reads.
The usual ``OTEL_BSP_*`` variables tune the batch processor, ``OTEL_SERVICE_NAME`` the service.

Sampling (:class:`DecisionSampler`): every record is traced, but a trace is exported only once
a span in it says so. The ensemble marks each row's trace ``keep`` (BUY/SELL: it goes on to
the supervisor and maybe a decision) or ``drop`` (HOLD: it stops there); spans that end before
the mark wait in a bounded buffer. So every decision's trace is complete from its tick while
the ~70 % of ticks that end in HOLD cost spans but no export. A trace's upstream spans live
in the worker that owns the symbol's partition (Faust assigns co-partitioned topics together),
so the mark and the buffer meet in one process; downstream of the mark the decision travels
with the trace as the W3C ``tracestate`` entry ``qt=keep`` or ``qt=drop``, so a worker running
the portfolio-wide risk stage exports its spans of kept traces without having seen the mark,
and the sampler need not remember a decision for longer than the marking stage's own spans.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

#: Kafka headers of the W3C trace context.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: Span attribute that decides a trace's export (see :class:`DecisionSampler`).
SAMPLE_ATTRIBUTE = "qt.sample"
KEEP, DROP = "keep", "drop"
#: Span attribute naming the decision a span belongs to (``quantum-trader trace`` looks it up).
DECISION_ID = "qt.decision_id"
#: Spans the batch processor holds before it drops (the SDK default is 2048).
DEFAULT_QUEUE = 65_536
#: Instrumentation scope of every span of the topology.
SCOPE = "quantum_trader.streams"

_PROPAGATOR = TraceContextTextMapPropagator()


class TracingError(RuntimeError):
    """The trace exporter could not be set up (bad path, bad OTLP settings)."""


# -- propagation -------------------------------------------------------------------------------
def traceparent_header(ctx: SpanContext) -> tuple[str, bytes] | None:
    """The ``traceparent`` Kafka header of ``ctx`` (W3C version 00), ``None`` if invalid."""
    if not ctx.is_valid:
        return None
    value = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
    return (TRACEPARENT, value.encode())


def span_context_of(ctx: Context) -> SpanContext:
    """The span context a (parent) context carries (invalid when it carries none)."""
    return trace.get_current_span(ctx).get_span_context()


def trace_headers(ctx: SpanContext) -> list[tuple[str, bytes]]:
    """``traceparent`` and, when the trace carries state (``qt=keep``), ``tracestate``."""
    parent = traceparent_header(ctx)
    if parent is None:
        return []
    if not ctx.trace_state:
        return [parent]
    return [parent, (TRACESTATE, ctx.trace_state.to_header().encode())]


def extract_context(headers: Mapping[str, bytes]) -> Context | None:
    """The remote parent context in ``headers``; ``None`` when there is none (a root)."""
    raw = headers.get(TRACEPARENT)
    if raw is None:
        return None
    carrier = {TRACEPARENT: raw.decode(errors="replace")}
    state = headers.get(TRACESTATE)
    if state is not None:
        carrier[TRACESTATE] = state.decode(errors="replace")
    ctx = _PROPAGATOR.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def kept(ctx: SpanContext) -> bool:
    """Whether the trace of ``ctx`` was marked ``keep`` upstream (its ``tracestate``)."""
    return ctx.trace_state.get("qt") == KEEP


def dropped(ctx: SpanContext) -> bool:
    """Whether the trace of ``ctx`` was marked ``drop`` upstream (its ``tracestate``)."""
    return ctx.trace_state.get("qt") == DROP


def current_span_context() -> SpanContext | None:
    """The context of the span current now, if valid (what an Emitter keeps for the header).

    A span marked ``keep`` or ``drop`` hands the mark on as ``tracestate`` ``qt=keep`` or
    ``qt=drop``: its children, wherever they run, inherit it and are exported or discarded
    without waiting for a mark of their own, and without the sampler having to remember the
    trace (its memory of decided traces is bounded and short).
    """
    span = trace.get_current_span()
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    marked = (getattr(span, "attributes", None) or {}).get(SAMPLE_ATTRIBUTE)
    if marked in (KEEP, DROP) and ctx.trace_state.get("qt") is None:
        state = ctx.trace_state.add("qt", str(marked))
        return SpanContext(ctx.trace_id, ctx.span_id, ctx.is_remote, ctx.trace_flags, state)
    return ctx


# -- the tracer the agents use ---------------------------------------------------------------
_tracer: trace.Tracer = trace.NoOpTracer()


def tracer() -> trace.Tracer:
    """The tracer of the topology (a no-op one until :func:`install_tracer` or setup)."""
    return _tracer


def install_tracer(new: trace.Tracer | None) -> trace.Tracer:
    """Make ``new`` the topology's tracer (``None``: no-op); returns the previous one."""
    global _tracer
    previous, _tracer = _tracer, new if new is not None else trace.NoOpTracer()
    return previous


def enabled() -> bool:
    """Whether spans are being recorded (lets hot paths skip building attributes)."""
    return not isinstance(_tracer, trace.NoOpTracer)


@contextmanager
def record_span(
    name: str,
    parent: Context | None,
    attributes: Mapping[str, Any] | None = None,
    start_time_ns: int | None = None,
) -> Iterator[Span]:
    """A consumer span for one record, current while the block runs.

    ``start_time_ns`` backdates the start (a row scored in a batch started with the batch).
    Exceptions propagate; the span records them and ends with an error status.
    """
    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        start_time=start_time_ns,
    ) as span:
        yield span


@contextmanager
def with_parent(parent: Context | None) -> Iterator[None]:
    """Make ``parent`` the current context (a buffering stage captures it with its item)."""
    if parent is None:
        yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


def annotate(attributes: Mapping[str, Any]) -> None:
    """Set ``attributes`` on the current span (no-op when nothing is recorded)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})


def mark(sample: str) -> None:
    """Decide the current trace's export: :data:`KEEP` or :data:`DROP`."""
    annotate({SAMPLE_ATTRIBUTE: sample})


def fail(span: Span, reason: str) -> None:
    """End state of a span whose record was dead-lettered: error, reason attached."""
    span.set_status(Status(StatusCode.ERROR, reason))


# -- export -----------------------------------------------------------------------------------
def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """One finished span as a JSON-able dict (the file format ``quantum-trader trace`` reads)."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
        "span_id": f"{ctx.span_id:016x}" if ctx else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_detail": span.status.description,
        "attributes": {k: _jsonable(v) for k, v in (span.attributes or {}).items()},
        "links": [
            {"trace_id": f"{lk.context.trace_id:032x}", "span_id": f"{lk.context.span_id:016x}"}
            for lk in span.links
        ],
        "service": span.resource.attributes.get("service.name"),
    }


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON object per span to a file (several workers may share it: one
    ``write`` per line in append mode, so lines never interleave)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle: IO[str] | None = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise TracingError(f"cannot open the trace file {path}: {exc}") from exc
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write ``spans`` and flush (a crash loses at most the processor's queue)."""
        lines = [json.dumps(span_to_dict(s), separators=(",", ":")) + "\n" for s in spans]
        with self._lock:
            if self._handle is None:
                return SpanExportResult.FAILURE
            for line in lines:
                self._handle.write(line)
            self._handle.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the file."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Lines are flushed on every export."""
        return True


class DecisionSampler(SpanProcessor):
    """Exports only the traces marked :data:`KEEP` (or holding an error), whole.

    A span ending in a trace not decided yet waits in a buffer of at most ``max_traces``
    traces (oldest evicted first, counted in :attr:`evicted`); a ``keep`` mark releases the
    trace's buffered spans to ``delegate`` and lets its later spans through at once; a
    ``drop`` mark discards them. ``keep_all`` exports everything (debugging).

    The last ``max_decided`` decisions are remembered for later spans of a decided trace that
    do not carry the mark in their ``tracestate``. Every span downstream of a mark carries it
    (:func:`current_span_context`), so the memory only covers spans of the marking stage
    itself: short. (At one decision per tick it is a cache that fills for days of event time
    when large: 200,000 ids were 30 MB, still growing at the end of the memory benchmark.)
    """

    def __init__(
        self,
        delegate: SpanProcessor,
        *,
        max_traces: int = 20_000,
        max_decided: int = 20_000,
        keep_all: bool = False,
    ) -> None:
        self.delegate = delegate
        self.max_traces = max_traces
        self.max_decided = max_decided
        self.keep_all = keep_all
        self._buffer: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._decided: OrderedDict[int, bool] = OrderedDict()  # trace id -> keep?
        self._lock = threading.Lock()
        self.evicted = 0

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def _decide(self, trace_id: int, keep: bool) -> list[ReadableSpan]:
        self._decided[trace_id] = keep
        if len(self._decided) > self.max_decided:
            self._decided.popitem(last=False)
        held = self._buffer.pop(trace_id, [])
        return held if keep else []

    def _route(self, span: ReadableSpan) -> list[ReadableSpan]:
        """The spans to export now because ``span`` ended (under the lock)."""
        trace_id = span.context.trace_id if span.context else 0
        sample = (span.attributes or {}).get(SAMPLE_ATTRIBUTE)
        if sample is None and (
            span.status.status_code is StatusCode.ERROR or (span.context and kept(span.context))
        ):
            sample = KEEP
        elif sample is None and span.context and dropped(span.context):
            sample = DROP  # a dropped trace's later span: discarded even if the mark is forgotten
        decided = self._decided.get(trace_id)
        if sample is not None and decided is None:
            held = self._decide(trace_id, sample == KEEP)
            return [*held, span] if sample == KEEP else []
        if decided is not None:
            return [span] if decided else []
        waiting = self._buffer.get(trace_id)
        if waiting is None:
            waiting = self._buffer[trace_id] = []
            if len(self._buffer) > self.max_traces:
                self._buffer.popitem(last=False)
                self.evicted += 1
        waiting.append(span)
        return []

    def on_end(self, span: ReadableSpan) -> None:
        """Export, hold or discard ``span`` (see the class doc)."""
        if self.keep_all:
            self.delegate.on_end(span)
            return
        with self._lock:
            ready = self._route(span)
        for s in ready:
            self.delegate.on_end(s)

    def shutdown(self) -> None:
        """Shut the delegate down (undecided traces are dropped)."""
        self.delegate.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the delegate."""
        return self.delegate.force_flush(timeout_millis)


def otlp_configured(env: Mapping[str, str]) -> bool:
    """Whether the standard OTel environment asks for OTLP export of traces."""
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def make_exporter(trace_file: Path, env: Mapping[str, str]) -> SpanExporter:
    """OTLP/HTTP (configured by the OTEL_* variables) or the JSON-lines file."""
    if otlp_configured(env):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # reads endpoint, headers, timeout from the environment
    return JsonLinesSpanExporter(trace_file)


def setup_tracing(
    service_name: str,
    trace_file: Path,
    *,
    env: Mapping[str, str] | None = None,
    keep_all: bool = False,
) -> TracerProvider:
    """Build the provider (exporter + :class:`DecisionSampler`) and install its tracer.

    The caller owns the provider and must ``shutdown()`` it at exit to flush the last spans.
    """
    env = os.environ if env is None else env
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    exporter = make_exporter(trace_file, env)
    # A replay bursts thousands of kept spans per second: the SDK's default queue (2048) would
    # drop some of a decision's spans; OTEL_BSP_MAX_QUEUE_SIZE still overrides.
    queue = int(env.get("OTEL_BSP_MAX_QUEUE_SIZE") or DEFAULT_QUEUE)
    processor = BatchSpanProcessor(exporter, max_queue_size=queue)
    provider.add_span_processor(DecisionSampler(processor, keep_all=keep_all))
    install_tracer(provider.get_tracer(SCOPE))
    return provider


# -- reading the file back --------------------------------------------------------------------
def read_spans(path: Path) -> Iterator[dict[str, Any]]:
    """Every span of a JSON-lines trace file (a torn last line is skipped)."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a worker killed mid-write leaves a partial line


def decision_trace(path: Path, decision_id: str) -> list[dict[str, Any]]:
    """All spans of the trace(s) holding a span tagged ``qt.decision_id == decision_id``.

    Raises :class:`TraceNotFoundError` when no span names the decision.
    """
    spans = list(read_spans(path))
    traces = {
        s["trace_id"] for s in spans if s.get("attributes", {}).get(DECISION_ID) == decision_id
    }
    if not traces:
        raise TraceNotFoundError(f"no span of decision {decision_id!r} in {path}")
    return [s for s in spans if s["trace_id"] in traces]


class TraceNotFoundError(LookupError):
    """No span in the trace file names the decision."""


@dataclass
class SpanNode:
    """A span with its children, in start order (what ``quantum-trader trace`` prints)."""

    span: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)


def build_tree(spans: Sequence[dict[str, Any]]) -> list[SpanNode]:
    """The spans as trees: roots are spans whose parent is absent (remote or not exported).

    Siblings sort by start time; a span seen twice (an at-least-once redelivery re-handled)
    appears once per span id.
    """
    nodes = {s["span_id"]: SpanNode(s) for s in spans}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = nodes.get(node.span.get("parent_span_id") or "")
        (parent.children if parent is not None else roots).append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: n.span.get("start_ns") or 0)
    roots.sort(key=lambda n: n.span.get("start_ns") or 0)
    return roots
