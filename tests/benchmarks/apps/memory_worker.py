"""The topology worker (:func:`streams.app.run_worker`) with an optional memory probe.

Without ``QTBENCH_MEMPROBE`` this is the stock worker. With ``QTBENCH_MEMPROBE=<dir>`` a Faust
timer (every ``QTBENCH_PROBE_S`` seconds, default 60), running on the worker's event loop so it
sees every structure between two batches, appends one JSON line to ``<dir>/probe.jsonl``:

* ``stages``: per stage, the bytes its Faust table holds (``table.data``: the zlib-compressed
  state documents and their parts), its instances, and the size of each instance's state
  document as JSON (what :meth:`~streams.agents.durable.Instance.to_document` gives, i.e. what
  the next flush compresses and writes), split by top-level key of the handler's state so a
  growing id set, buffer or window shows by name;
* ``tracer``: the span sampler's bounded buffers (undecided traces and their spans, decided
  trace ids, evictions) and the span export queue;
* ``gc``: the 25 most numerous Python object types (``gc.get_objects``), for diffing;
* ``vm_rss_kb``: the process's resident set at that moment.

``QTBENCH_TRACEMALLOC=<frames>`` also starts :mod:`tracemalloc` with that many frames at start-up
and dumps a snapshot per probe to ``<dir>/snap-<n>.pickle`` (the benchmark diffs the one after
warm-up against the last). It costs time and memory of its own; use it for a diagnosis run,
not for the figures. Nothing in the topology changes either way.
"""

from __future__ import annotations

import gc
import json
import os
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

_TOP_TYPES = 25


def vm_rss_kb(pid: int | str = "self") -> int | None:
    """``VmRSS`` of ``pid`` in kB from ``/proc/<pid>/status`` (None when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _json_len(value: Any) -> int:
    try:
        return len(json.dumps(value, separators=(",", ":"), default=str))
    except (TypeError, ValueError):
        return -1


def stage_sizes(runtimes: list[Any], tables: dict[str, Any]) -> dict[str, Any]:
    """Per stage: table bytes, instances, JSON bytes of each state part (see the module doc)."""
    out: dict[str, Any] = {}
    for runtime in runtimes:
        table = tables.get(f"state-{runtime.name}")
        data = getattr(table, "data", {}) if table is not None else {}
        parts: Counter[str] = Counter()
        ledgers = 0
        for inst in list(runtime.instances.values()):
            doc = inst.to_document()
            ledgers += _json_len({k: doc[k] for k in ("applied", "seen", "sent")})
            handler = doc.get("handler")
            if isinstance(handler, dict):
                for key, value in handler.items():
                    parts[key] += _json_len(value)
        out[runtime.name] = {
            "table_keys": len(data),
            "table_bytes": sum(len(bytes(v)) for v in data.values() if v is not None),
            "instances": len(runtime.instances),
            "ledger_json_bytes": ledgers,
            "state_json_bytes": dict(parts),
        }
    return out


def tracer_sizes(samplers: list[Any]) -> dict[str, int]:
    """The span sampler's bounded buffers (:class:`~streams.observability.tracing.DecisionSampler`)
    and the batch exporter's queue: traces waiting for their keep/drop mark, their spans,
    trace ids remembered as decided, traces evicted, spans queued for export."""
    out: dict[str, int] = {}
    for sampler in samplers:
        out["undecided_traces"] = len(sampler._buffer)
        out["undecided_spans"] = sum(len(v) for v in list(sampler._buffer.values()))
        out["decided_ids"] = len(sampler._decided)
        out["evicted"] = sampler.evicted
        queue = getattr(getattr(sampler.delegate, "_batch_processor", None), "_queue", None)
        if queue is not None:
            out["export_queue"] = len(queue)
    return out


def gc_types() -> dict[str, int]:
    """The most numerous object types the collector tracks."""
    counts = Counter(type(o).__name__ for o in gc.get_objects())
    return dict(counts.most_common(_TOP_TYPES))


def install(probe_dir: Path, every_s: float, snapshots: bool) -> None:
    """Capture the app and its stage runtimes as the worker builds them; add the probe timer."""
    import streams.app as app_module
    from streams.observability import tracing

    probe_dir.mkdir(parents=True, exist_ok=True)
    runtimes: list[Any] = []
    samplers: list[Any] = []
    original_sampler_init = tracing.DecisionSampler.__init__

    def sampler_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_sampler_init(self, *args, **kwargs)
        samplers.append(self)

    tracing.DecisionSampler.__init__ = sampler_init  # type: ignore[method-assign]
    original_init = app_module.StageRuntime.__init__
    original_build: Callable[..., Any] = app_module.build_app

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        runtimes.append(self)

    def build(*args: Any, **kwargs: Any) -> Any:
        app = original_build(*args, **kwargs)
        count = [0]

        @app.timer(interval=every_s)
        async def memory_probe() -> None:
            count[0] += 1
            started = time.perf_counter()
            row: dict[str, Any] = {"n": count[0], "wall_s": time.time()}
            row["stages"] = stage_sizes(runtimes, dict(app.tables.items()))
            row["tracer"] = tracer_sizes(samplers)
            row["gc"] = gc_types()
            if snapshots and tracemalloc.is_tracing():
                tracemalloc.take_snapshot().dump(str(probe_dir / f"snap-{count[0]:04d}.pickle"))
            row["vm_rss_kb"] = vm_rss_kb()
            row["probe_s"] = time.perf_counter() - started
            with (probe_dir / "probe.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

        return app

    app_module.StageRuntime.__init__ = init  # type: ignore[method-assign]
    app_module.build_app = build


def main() -> None:
    """Install the probe when asked, then run the stock worker."""
    from streams.app import run_worker

    probe = os.environ.get("QTBENCH_MEMPROBE")
    frames = int(os.environ.get("QTBENCH_TRACEMALLOC") or 0)
    if frames > 0:
        tracemalloc.start(frames)
    if probe:
        install(Path(probe), float(os.environ.get("QTBENCH_PROBE_S") or 60), frames > 0)
    run_worker(loglevel=os.environ.get("QTBENCH_LOGLEVEL", "warning"))


if __name__ == "__main__":
    main()
