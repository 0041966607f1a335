"""`quantum-trader trace DECISION_ID`: one decision's trace as a tree, from the span file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.tree import Tree

    from streams.observability.tracing import SpanNode

#: Attributes repeated on every span or only useful to machines: shown with --all only.
_QUIET_PREFIXES = ("messaging.", "qt.stage", "qt.sample", "qt.input")


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def span_label(span: dict[str, Any], all_attributes: bool) -> str:
    """One tree line: name, duration, status, then the decisive attributes."""
    from rich.markup import escape

    start, end = span.get("start_ns") or 0, span.get("end_ns") or 0
    error = span.get("status") == "ERROR"
    name = f"[bold red]{escape(span['name'])}[/]" if error else f"[bold]{escape(span['name'])}[/]"
    head = f"{name} [dim]{(end - start) / 1e6:.3f} ms[/]"
    if error and span.get("status_detail"):
        head += f" [red]{escape(str(span['status_detail']))}[/]"
    attrs = [
        f"[cyan]{escape(k)}[/]={escape(_value(v))}"
        for k, v in sorted(span.get("attributes", {}).items())
        if all_attributes or not k.startswith(_QUIET_PREFIXES)
    ]
    return head + ("\n" + "  ".join(attrs) if attrs else "")


def _add(tree: Tree, node: SpanNode, all_attributes: bool) -> None:
    branch = tree.add(span_label(node.span, all_attributes))
    for child in node.children:
        _add(branch, child, all_attributes)


def command(
    decision_id: Annotated[str, typer.Argument(help="DecisionSized.decision_id")],
    file: Annotated[
        Path | None,
        typer.Option("--file", help="JSON-lines span file (default: QT_TRACE_FILE or runs/)"),
    ] = None,
    all_attributes: Annotated[
        bool, typer.Option("--all", help="also show messaging.* and bookkeeping attributes")
    ] = False,
) -> None:
    """Print a decision's trace, tick -> features -> votes -> veto -> size -> risk -> fills."""
    from rich.console import Console
    from rich.tree import Tree

    from streams.config import get_settings
    from streams.observability import trace_file
    from streams.observability.tracing import TraceNotFoundError, build_tree, decision_trace

    path = file or trace_file(get_settings())
    if not path.is_file():
        typer.secho(f"trace file {path} does not exist (set QT_TRACE_FILE or --file)",
                    fg=typer.colors.RED, err=True)  # fmt: skip
        raise typer.Exit(1)
    try:
        spans = decision_trace(path, decision_id)
    except TraceNotFoundError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    traces = sorted({s["trace_id"] for s in spans})
    root = Tree(f"decision [bold]{decision_id}[/]: trace {', '.join(traces)}, {len(spans)} spans")
    for node in build_tree(spans):
        _add(root, node, all_attributes)
    Console().print(root)
