"""What tracing and metrics cost per record, in the agent's hot path.

``python -m tests.benchmarks observability [--ticks N] [--reps N]`` feeds real ticks of the
bundled sample (Avro-encoded, like the broker delivers them) through :func:`dispatch` with the
features handler, in batches of 500 like the Faust agent, three ways:

- ``off``: no tracer installed (the no-op tracer; metrics still counted, as in every worker);
- ``sampled``: the worker's setup, spans for every record through the :class:`DecisionSampler`
  into a JSON-lines file, each trace then decided ``drop`` as the ensemble does for HOLD rows;
- ``kept``: the same but every trace ``keep`` (the cost of a trace that reaches a decision,
  file export included, flushed at the end).

Writes ``results/observability.json``: µs per record (best of ``reps``) and the overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE = ROOT / "data" / "sample" / "um_futures_1m_2025"
BATCH = 500


def encoded_ticks(n: int) -> list[Any]:
    """The first ``n`` ticks of the sample as raw events of ``market.ticks``."""
    from streams.adapters.market_files import open_data_set
    from streams.agents.base import RawEvent
    from streams.contracts.codec import topic_codec
    from streams.contracts.records import TickReceived
    from streams.ordering import SOURCE_HEADER
    from streams.topics import Topic

    codec = topic_codec(Topic.MARKET_TICKS)
    _, rows = open_data_set(SAMPLE)
    events = []
    for t in rows:
        if len(events) >= n:
            break
        if not isinstance(t, TickReceived):
            continue  # a rejected row of the file
        offset = len(events)
        events.append(
            RawEvent("market.ticks", 0, offset, t.symbol.encode(), codec.encode(t),
                     {SOURCE_HEADER: b"replay"})
        )  # fmt: skip
    return events


def run_once(events: list[Any], sample: str | None) -> float:
    """Seconds to dispatch ``events`` (mark every trace ``sample``; None: no tracer)."""
    from streams.agents.base import Decoder, Emitter
    from streams.agents.dispatch import dispatch
    from streams.agents.features import FeaturesHandler
    from streams.observability import tracing

    handler, decoder = FeaturesHandler(), Decoder("")
    if sample is not None:
        inner = handler.on_record

        def on_record(*args: Any) -> None:  # the ensemble's decision, made here for the bench
            inner(*args)
            tracing.mark(sample)

        handler.on_record = on_record  # type: ignore[method-assign]
    started = time.perf_counter()
    for i in range(0, len(events), BATCH):
        dispatch(handler, decoder, events[i : i + BATCH], Emitter("features"))
    return time.perf_counter() - started


def bench(n: int, reps: int) -> dict[str, Any]:
    """Best-of-``reps`` µs per record for each mode (see the module doc)."""
    from streams.observability import tracing

    events = encoded_ticks(n)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, sample in (("off", None), ("sampled", tracing.DROP), ("kept", tracing.KEEP)):
            best = float("inf")
            for rep in range(reps):
                provider = None
                if sample is not None:
                    provider = tracing.setup_tracing("bench", Path(tmp) / f"{mode}{rep}.jsonl",
                                                     env={})  # fmt: skip
                elapsed = run_once(events, sample)
                if provider is not None:
                    started = time.perf_counter()
                    provider.shutdown()  # export what is queued: part of the cost
                    elapsed += time.perf_counter() - started
                    tracing.install_tracer(None)
                best = min(best, elapsed)
            results[mode] = best / len(events) * 1e6
    return {
        "suite": "observability",
        "records": len(events),
        "batch": BATCH,
        "us_per_record": results,
        "overhead_us_per_record": {
            "sampled": results["sampled"] - results["off"],
            "kept": results["kept"] - results["off"],
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write ``results/observability.json``."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks observability")
    parser.add_argument("--ticks", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    result = bench(args.ticks, args.reps)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "observability.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["us_per_record"], indent=2))
    print(json.dumps(result["overhead_us_per_record"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
