"""Per-stage latency quantiles read from the worker's Prometheus histogram."""

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.workers import histogram_quantiles


def test_quantiles_interpolate_inside_the_bucket_like_promql():
    registry = CollectorRegistry()
    h = Histogram("qt_stage_latency_seconds", "x", ["stage"], buckets=(0.001, 0.002, 0.004),
                  registry=registry)  # fmt: skip
    for _ in range(50):
        h.labels("risk").observe(0.0005)  # bucket (0, 1 ms]
    for _ in range(50):
        h.labels("risk").observe(0.003)  # bucket (2 ms, 4 ms]
    text = generate_latest(registry).decode()
    q = histogram_quantiles(text, "qt_stage_latency_seconds", "stage")["risk"]
    # rank 50 of 100 is the top of the first bucket: 1 ms; rank 99 sits 49/50 into (2, 4] ms.
    assert q["count"] == 100
    assert abs(q["p50_us"] - 1000.0) < 1e-6
    assert abs(q["p99_us"] - (2000.0 + 2000.0 * 49 / 50)) < 1e-6


def test_a_stage_without_observations_is_left_out():
    registry = CollectorRegistry()
    Histogram("qt_stage_latency_seconds", "x", ["stage"], registry=registry).labels("features")
    assert histogram_quantiles(generate_latest(registry).decode(), "qt_stage_latency_seconds",
                               "stage") == {}  # fmt: skip
