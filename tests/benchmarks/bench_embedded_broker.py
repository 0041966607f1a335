"""Embedded broker B5: does a short fetch wait still starve on many small batches here?

``python -m tests.benchmarks embedded_broker [--batches N] [--within S]`` starts the embedded
Tansu broker, writes ``N`` one-record batches into one partition (as a Faust agent's producer
writes them, a batch per record or two; the demo's ``market.bars`` held 18,070 for 32,407
records) and reads the partition from offset 0 three ways, each for at most ``S`` seconds:

- ``stock_long``: stock aiokafka, 500 ms fetch wait (the data is all there);
- ``stock_short``: stock aiokafka with the worker's 10 ms wait (``FETCH_MAX_WAIT_MS``): where
  B5 bites, the broker's listing of batch objects runs out of time before the fetch offset and
  the reads stall short of ``N``;
- ``workaround_short``: the same 10 ms wait with ``tansu_workarounds`` applied, as every
  embedded worker runs (a starved answer makes the next Fetch wait long).

Whether B5 shows depends on how fast the machine lists the objects (a loaded 2-core machine
stalled at a few hundred to a few thousand; a faster or idle one may read all 20k in time), so
this is a measurement, not a test; the workaround's guarantee is tested in
``tests/integration/test_embedded_broker.py``. The stock reads address the broker as
``localhost`` so that no workaround is registered for them. Writes
``results/embedded_broker.json``: records read per way and whether B5 reproduced.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


async def produce_batches(bootstrap: str, topic: str, batches: int) -> None:
    """``batches`` records into partition 0, each acknowledged before the next (a batch each)."""
    import aiokafka

    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(batches):
            await producer.send_and_wait(topic, b"bar-%06d" % i, partition=0)
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str, topic: str, fetch_max_wait_ms: int, want: int, within_s: float
) -> tuple[int, float]:
    """Records of partition 0 read from offset 0 with this fetch wait, and the seconds taken."""
    import aiokafka

    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=fetch_max_wait_ms
    )
    await consumer.start()
    try:
        tp = aiokafka.TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        got = 0
        while got < want and loop.time() < start + within_s:
            got += len((await consumer.getmany(tp, timeout_ms=200)).get(tp, []))
        return got, loop.time() - start
    finally:
        await consumer.stop()


def bench(batches: int, within_s: float) -> dict[str, Any]:
    """Start a broker, write the batches, read them the three ways."""
    from streams.brokers import EmbeddedBroker
    from streams.brokers import tansu_workarounds as tw
    from tests.kafka_topics import create_topics

    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap
        stock = bootstrap.replace("127.0.0.1", "localhost")
        topic = f"b5-{secrets.token_hex(4)}"
        create_topics(bootstrap, [topic], partitions=1)
        t0 = time.perf_counter()
        asyncio.run(produce_batches(bootstrap, topic, batches))
        produce_s = time.perf_counter() - t0
        reads: dict[str, dict[str, float]] = {}
        ways = [
            ("stock_long", stock, tw.STARVED_FETCH_WAIT_MS),
            ("stock_short", stock, tw.FETCH_MAX_WAIT_MS),
            ("workaround_short", bootstrap, tw.FETCH_MAX_WAIT_MS),
        ]
        for name, server, wait_ms in ways:
            if name == "workaround_short":
                tw.apply(bootstrap)
            got, took = asyncio.run(read_all(server, topic, wait_ms, batches, within_s))
            reads[name] = {"fetch_max_wait_ms": wait_ms, "records": got, "seconds": round(took, 2)}
            print(f"{name}: {got:,} of {batches:,} records in {took:.1f} s (wait {wait_ms} ms)")
    return {
        "batches": batches,
        "within_s": within_s,
        "produce_s": round(produce_s, 1),
        "reads": reads,
        "b5_reproduced": reads["stock_short"]["records"] < batches,
        "workaround_read_all": reads["workaround_short"]["records"] == batches,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_1m": round(os.getloadavg()[0], 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write ``results/embedded_broker.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks embedded_broker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--batches", type=int, default=20_000, help="one-record batches written")
    parser.add_argument("--within", type=float, default=10.0, help="seconds allowed per read")
    args = parser.parse_args(argv)
    result = bench(args.batches, args.within)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embedded_broker.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"B5 reproduced: {result['b5_reproduced']}; workaround read all: "
        f"{result['workaround_read_all']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
