"""`quantum-trader models` sub-commands (placeholder until its module lands)."""

import typer

app = typer.Typer(help="Not built yet.", no_args_is_help=True)
