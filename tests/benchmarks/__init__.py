"""Benchmark suites: ``python -m tests.benchmarks [suite ...]`` (``make bench`` runs them all).

Each suite is a module ``bench_<name>.py`` here with ``main(argv: list[str] | None) -> int``;
results go to ``tests/benchmarks/results/<name>.json`` and ``.md``. Speed is measured here,
never asserted in tests.
"""
