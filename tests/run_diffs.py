"""Golden-test helper: two run folders must decide alike, or the failure says where they parted."""

from __future__ import annotations

from pathlib import Path


def assert_same_decisions(a: Path | str, b: Path | str, *options: str) -> None:
    """``quantum-trader diff A B [options]`` exits 0; otherwise fail with its report (first
    divergence, both sides' values, trace ids, counts and PnL). A side is a run folder or
    ``kafka:PREFIX`` (pass ``--bootstrap`` in ``options``)."""
    from typer.testing import CliRunner

    from streams.cli import app

    args = ["diff", str(a), str(b), "--limit", "20", *options]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"runs differ decision by decision:\n{result.output}"
