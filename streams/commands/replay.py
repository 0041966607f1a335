"""`quantum-trader replay` (placeholder until its module lands)."""

import typer


def command() -> None:
    """Not built yet."""
    raise typer.Exit(code=2)
