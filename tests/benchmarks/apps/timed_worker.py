"""The topology worker (:func:`streams.app.run_worker`) with per-stage handling times recorded.

Before the app is built it wraps the ``dispatch`` that
:meth:`streams.agents.durable.StageRuntime.handle` calls (decode + stage logic of one stage
instance's share of a ``take_events`` batch) and :meth:`streams.app.Sender.send_all` (handing
that output to the producer)
with ``perf_counter_ns``, and counts input watermarks and output items. Nothing in the
topology changes; the wrappers add two clock reads per batch. At exit the worker writes, to
``QTBENCH_STATS``, per stage and per batch: events, watermarks in, dispatch ns, send ns and
items out, as JSON; the benchmark turns them into per-record latencies.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: Per stage, one entry per batch: ``[events, watermarks_in, dispatch_ns, send_ns, items_out]``.
Batches = dict[str, list[list[int]]]


def install(stats_path: Path) -> Batches:
    """Wrap the worker's dispatch and send; write what they saw to ``stats_path`` at exit."""
    import streams.agents.durable as durable_module
    import streams.app as app_module
    from streams.ordering import WATERMARK_HEADER

    batches: Batches = defaultdict(list)
    original_dispatch: Callable[..., int] = durable_module.dispatch
    original_send = app_module.Sender.send_all
    clock = time.perf_counter_ns

    def timed_dispatch(handler: Any, decoder: Any, events: Sequence[Any], out: Any) -> int:
        t0 = clock()
        dead = original_dispatch(handler, decoder, events, out)
        elapsed = clock() - t0
        marks = sum(1 for e in events if WATERMARK_HEADER in e.headers)
        batches[handler.name].append([len(events), marks, elapsed, 0, len(out.items)])
        return dead

    async def timed_send(self: Any, out: Any) -> Any:
        t0 = clock()
        deliveries = await original_send(self, out)
        stage = batches.get(out.stage)
        if stage:  # the batch dispatch just recorded (one agent per stage: no interleaving)
            stage[-1][3] = clock() - t0
        return deliveries

    durable_module.dispatch = timed_dispatch  # type: ignore[assignment]
    app_module.Sender.send_all = timed_send  # type: ignore[method-assign]

    def dump() -> None:
        stats_path.parent.mkdir(parents=True, exist_ok=True)
        stats_path.write_text(json.dumps(dict(batches)), encoding="utf-8")

    atexit.register(dump)
    return batches


def main() -> None:
    """Install the timers, then run the stock worker."""
    from streams.app import run_worker

    install(Path(os.environ["QTBENCH_STATS"]))
    run_worker(loglevel=os.environ.get("QTBENCH_LOGLEVEL", "warning"))


if __name__ == "__main__":
    main()
