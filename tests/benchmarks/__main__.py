"""Dispatch to benchmark suites: ``python -m tests.benchmarks [SUITE [suite args]]``.

Without arguments every ``bench_*.py`` suite runs in turn, each in this process with its
defaults. ``python -m tests.benchmarks scoring --iters 500`` runs one suite with arguments.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def suites() -> list[str]:
    """Names of the available suites (``bench_scoring.py`` -> ``scoring``)."""
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(_HERE)])
        if m.name.startswith("bench_")
    )


def run_suite(name: str, argv: list[str]) -> int:
    """Import ``tests.benchmarks.bench_<name>`` and call its ``main(argv)``."""
    module = importlib.import_module(f"tests.benchmarks.bench_{name}")
    return int(module.main(argv))


def main(argv: list[str]) -> int:
    """Run the named suite with its arguments, or all suites when none is named."""
    available = suites()
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nsuites: " + ", ".join(available))
        return 0
    if argv:
        if argv[0] not in available:
            print(f"unknown suite {argv[0]!r}; available: {', '.join(available)}", file=sys.stderr)
            return 2
        return run_suite(argv[0], argv[1:])
    status = 0
    for name in available:
        print(f"== benchmark suite: {name}", flush=True)
        status |= run_suite(name, [])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
