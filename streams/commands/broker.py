"""`quantum-trader broker` (placeholder until its module lands)."""

import typer


def command() -> None:
    """Not built yet."""
    raise typer.Exit(code=2)
