"""``quantum-trader topology``: the declared topology (streams/topology.py), as tables or docs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streams.config import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"


def command(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="print the README's generated table and diagram")
    ] = False,
    write_readme: Annotated[
        Path | None,
        typer.Option(help="rewrite the generated sections of this README in place"),
    ] = None,
) -> None:
    """Show the topology as declared: stages, inputs (and their shifts), outputs, partitions.

    The README's topology table and diagram are generated from the same declaration; a test
    fails when they drift (`--write-readme README.md` regenerates them).
    """
    from rich.console import Console
    from rich.table import Table

    from streams import topology, topology_docs

    if write_readme is not None:
        text = write_readme.read_text(encoding="utf-8")
        try:
            write_readme.write_text(topology_docs.render_readme(text), encoding="utf-8")
        except ValueError as exc:
            typer.secho(f"cannot update {write_readme}: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from exc
        typer.echo(f"updated the topology sections of {write_readme}")
        return
    if markdown:
        for body in topology_docs.readme_sections().values():
            typer.echo(body + "\n")
        return
    table = Table("stage", "consumes", "produces", "instances", "state", title="topology")
    for s in topology.STAGES:
        consumed = ", ".join(
            i.topic.value
            + (f" (+{i.shift.value})" if i.shifted else "")
            + ("" if i.gates else " (never waits)")
            for i in s.inputs
        )
        produced = ", ".join(t.value for t in s.outputs)
        table.add_row(s.name, consumed, produced, s.partitioning.value, s.state)
    Console().print(table)
