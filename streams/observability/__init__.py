"""Observability of the worker: traces per decision, Prometheus metrics, truthful health.

- :mod:`streams.observability.metrics`: the agreed Prometheus metric names on one registry and
  the helpers the agents call (``metrics().signal(...)``); ``exported_metric_names()``.
- :mod:`streams.observability.tracing`: the tracer provider from the standard OTel environment
  (OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else a JSON-lines file), W3C
  ``traceparent`` in Kafka headers, and the sampler that keeps only traces reaching a decision.
- :mod:`streams.observability.health`: per-stage liveness (last progress, pending input, crash,
  model load) behind ``/health`` and ``/ready``.

Settings come from :class:`streams.config.Settings` (``QT_STALL_AFTER_S``, ``QT_TRACE_FILE``);
nothing here does work at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.config import Settings


def trace_file(settings: Settings) -> Path:
    """Where the JSON-lines spans go: ``QT_TRACE_FILE``, else ``<runs_dir>/traces.jsonl``."""
    return settings.trace_file or settings.runs_dir / "traces.jsonl"
