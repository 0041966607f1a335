"""Faust apps the benchmarks run as worker subprocesses (``python -m tests.benchmarks.apps.X``)."""
