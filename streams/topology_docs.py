"""The README's topology table and diagram, generated from the declaration (streams/topology.py).

``quantum-trader topology --write-readme README.md`` rewrites the sections between the markers;
``tests/unit/test_topology_declaration.py`` fails when the README differs from what this renders.
"""

from __future__ import annotations

from streams import topology
from streams.topics import Topic
from streams.topology import INGEST, Partitioning, StageSpec, consumers_of, writers_of


def _partitions_label(p: Partitioning) -> str:
    return "symbol / N" if p is Partitioning.PER_SYMBOL else "**one partition**"


def markdown_table() -> str:
    """The README's stage table, generated from :data:`streams.topology.STAGES`."""
    rows = [
        "| stage | consumes | produces | instances | state |",
        "|---|---|---|---|---|",
        f"| ingest (adapter) | replay file, recorded topic, Binance ws | "
        f"`{Topic.MARKET_TICKS.value}` | — | — |",
    ]
    for s in topology.STAGES:
        consumed = ", ".join(
            f"`{i.topic.value}`" + (f" (+{i.shift.value.replace('_', ' ')})" if i.shifted else "")
            for i in s.inputs
        )
        produced = ", ".join(f"`{t.value}`" for t in s.outputs)
        label = _partitions_label(s.partitioning)
        rows.append(f"| {s.name} | {consumed} | {produced} | {label} | {s.state} |")
    return "\n".join(rows)


def mermaid() -> str:
    """The README's topology diagram, generated from the declared stages and topics."""
    lines = [
        "flowchart LR",
        f'  {INGEST}[["ingest<br/>replay files · recorded topic · Binance ws"]]',
    ]
    for s in topology.STAGES:
        shape = ("{{", "}}") if s.partitioning is Partitioning.SINGLE else ("[", "]")
        lines.append(f'  {s.name}{shape[0]}"{s.name}<br/>{s.doc}"{shape[1]}')
    for topic in topology.TOPICS:
        readers = consumers_of(topic.topic)
        for writer in writers_of(topic.topic):
            for reader in readers:
                arrow = "-.->" if _is_shifted(reader, topic.topic) else "-->"
                lines.append(f"  {writer} {arrow}|{topic.topic.value}| {reader.name}")
    drawn = [t for t in topology.TOPICS if t.outside or not writers_of(t.topic)]
    ops = [t for t in drawn if consumers_of(t.topic)]
    for spec in ops:
        op = spec.topic
        node = op.value.replace(".", "_")
        lines.append(f'  {node}[["{spec.outside or "operator"}<br/>{op.value}"]]')
        for reader in consumers_of(op):
            lines.append(f"  {node} --> {reader.name}")
    lines.append(f"  dead[({Topic.DEADLETTER.value})]")
    validators = " & ".join(s.name for s in consumers_of(Topic.MARKET_TICKS))
    lines.append(f"  {validators} -. bad input .-> dead")
    return "\n".join(lines)


def _is_shifted(stage: StageSpec, topic: Topic) -> bool:
    return any(i.topic is topic and i.shifted for i in stage.inputs)


#: Markers around the generated parts of README.md.
README_MARKERS = {
    "diagram": ("<!-- topology:diagram:start -->", "<!-- topology:diagram:end -->"),
    "table": ("<!-- topology:table:start -->", "<!-- topology:table:end -->"),
}


def readme_sections() -> dict[str, str]:
    """The generated README sections, keyed like :data:`README_MARKERS`."""
    return {"diagram": f"```mermaid\n{mermaid()}\n```", "table": markdown_table()}


def render_readme(text: str) -> str:
    """``text`` (the README) with every generated section replaced by its current version."""
    for name, body in readme_sections().items():
        start, end = README_MARKERS[name]
        head, found, rest = text.partition(start)
        if not found:
            raise ValueError(f"README has no {start} marker")
        _old, found, tail = rest.partition(end)
        if not found:
            raise ValueError(f"README has no {end} marker")
        text = f"{head}{start}\n{body}\n{end}{tail}"
    return text
