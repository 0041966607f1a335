"""`quantum-trader schemas`: check, release, list and serve the Avro topic contracts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from streams.contracts.check import TopicReport
    from streams.contracts.registry import SchemaRegistry

app = typer.Typer(
    help=(
        "Avro contracts of the topics (schemas/*.avsc): validate them, show what changed since "
        "the last release, release new versions into the file registry (schemas/registry.json), "
        "list them, serve them over HTTP."
    ),
    no_args_is_help=True,
)

SchemasDir = Annotated[
    Path | None,
    typer.Option(
        "--schemas-dir", help="Folder with the .avsc files (default: the project's schemas/)."
    ),
]
RegistryUrl = Annotated[
    str | None,
    typer.Option(
        "--registry-url",
        help="Confluent-compatible registry to compare with (default: QT_SCHEMA_REGISTRY_URL, "
        "else the file registry in the schemas folder).",
    ),
]


def _registry(schemas_dir: Path, url: str | None) -> SchemaRegistry:
    from streams.contracts.registry import ConfluentSchemaRegistry, FileSchemaRegistry

    if url is None and schemas_dir.resolve() == _default_dir().resolve():
        from streams.config import get_settings

        url = get_settings().schema_registry_url
    return ConfluentSchemaRegistry(url) if url else FileSchemaRegistry(schemas_dir)


def _default_dir() -> Path:
    from streams.contracts.schema_loader import SCHEMAS_DIR

    return SCHEMAS_DIR


def _fail(message: str) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=1)


def _report_table(reports: list[TopicReport], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("subject", "status", "version", "id", "problems"):
        table.add_column(column, overflow="fold")
    for r in reports:
        style = "green" if r.ok else "red"
        table.add_row(
            r.subject,
            f"[{style}]{r.status}[/]",
            str(r.version or "-"),
            str(r.schema_id or "-"),
            "\n".join(r.problems) or "ok",
        )
    Console(width=160).print(table)


@app.command("check")
def check(schemas_dir: SchemasDir = None, registry_url: RegistryUrl = None) -> None:
    """Parse every schema, check docs, dataclass drift, examples (codec round trip) and
    BACKWARD compatibility with the latest registered version. Exit 1 on any problem."""
    from streams.contracts.check import check_all
    from streams.contracts.errors import ContractsError

    folder = schemas_dir or _default_dir()
    try:
        reports = check_all(_registry(folder, registry_url), folder)
    except ContractsError as exc:
        raise _fail(str(exc)) from None
    _report_table(reports, f"schemas check: {folder}")
    failed = [r for r in reports if not r.ok]
    if failed:
        raise _fail(f"{len(failed)} of {len(reports)} schemas need attention (see table)")
    typer.echo(f"all {len(reports)} schemas valid, documented, in sync and released")


@app.command("release")
def release(schemas_dir: SchemasDir = None, registry_url: RegistryUrl = None) -> None:
    """Register every changed schema as a new version (ids are never reused).

    Refuses the whole release when any schema is invalid or BACKWARD-incompatible."""
    from streams.contracts.check import INCOMPATIBLE, INVALID, OK, check_all
    from streams.contracts.errors import ContractsError
    from streams.contracts.schema_loader import load_topic_schema

    folder = schemas_dir or _default_dir()
    registry = _registry(folder, registry_url)
    try:
        reports = check_all(registry, folder)
        blocking = [
            r for r in reports if r.status in (INCOMPATIBLE, INVALID) or _content_problem(r)
        ]
        if blocking:
            _report_table(blocking, "release refused")
            raise _fail("fix these schemas first; nothing was released")
        pending = [r for r in reports if r.status != OK]
        for r in pending:
            got = registry.register(r.subject, load_topic_schema(r.topic, folder).schema.text)
            typer.echo(f"released {got.subject} v{got.version} as schema id {got.schema_id}")
    except ContractsError as exc:
        raise _fail(str(exc)) from None
    if not pending:
        typer.echo("nothing to release: every schema equals its latest version")


def _content_problem(report: TopicReport) -> bool:
    """Problems other than 'not released yet' (docs, drift, example) block a release."""
    return any(
        "schemas release" not in p and not p.startswith("equals old version")
        for p in report.problems
    )


@app.command("diff")
def diff(
    schemas_dir: SchemasDir = None,
    registry_url: RegistryUrl = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Markdown for a pull-request comment.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Also write the report to this file (e.g. for a PR bot).")
    ] = None,
) -> None:
    """What changed in each schema since its last released version, for a reviewer.

    Per topic whose .avsc differs from the latest version of its subject: the change list
    field by field (added with or without a default, removed, renamed through an alias, type,
    default and doc changes, enum symbols), the verdict under the subject's compatibility rule
    (the registry's, else the project's BACKWARD) with the reason for each incompatibility, and
    the producers and consumers of the topic in the topology. Exit 1 when a change is
    incompatible, 0 otherwise (nothing pending included).
    """
    from streams.contracts.errors import ContractsError
    from streams.contracts.schema_diff import all_diffs, render_markdown, render_text

    folder = schemas_dir or _default_dir()
    try:
        diffs = all_diffs(_registry(folder, registry_url), folder)
    except ContractsError as exc:
        raise _fail(str(exc)) from None
    text = render_markdown(diffs) if markdown else render_text(diffs)
    typer.echo(text, nl=False)
    if out is not None:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _fail(f"cannot write {out}: {exc.strerror}") from None
    if any(not d.verdict.compatible for d in diffs):
        raise typer.Exit(code=1)


@app.command("list")
def list_(schemas_dir: SchemasDir = None, registry_url: RegistryUrl = None) -> None:
    """Subjects with their versions and schema ids."""
    from rich.console import Console
    from rich.table import Table

    from streams.contracts.errors import ContractsError

    folder = schemas_dir or _default_dir()
    registry = _registry(folder, registry_url)
    table = Table(title="schema registry")
    for column in ("subject", "version", "id", "record"):
        table.add_column(column)
    try:
        for subject in registry.subjects():
            for v in registry.versions(subject):
                table.add_row(
                    subject, str(v.version), str(v.schema_id), _record_name(v.schema_text)
                )
    except ContractsError as exc:
        raise _fail(str(exc)) from None
    Console().print(table)


def _record_name(text: str) -> str:
    from streams.contracts.schema_loader import parse_schema_text

    return parse_schema_text(text).name


@app.command("serve")
def serve(
    schemas_dir: SchemasDir = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one.")] = 8081,
    allow_register: Annotated[
        bool,
        typer.Option(help="Accept POST /subjects/{s}/versions (writes the registry files)."),
    ] = False,
) -> None:
    """Serve the file registry over a Confluent-compatible HTTP API until interrupted."""
    from streams.contracts.http_registry import serve_registry
    from streams.contracts.registry import FileSchemaRegistry

    folder = schemas_dir or _default_dir()
    with serve_registry(FileSchemaRegistry(folder), host, port, allow_register) as url:
        typer.echo(f"schema registry at {url} (Ctrl-C to stop)")
        try:
            import threading

            threading.Event().wait()
        except KeyboardInterrupt:
            typer.echo("stopped")
