"""Drawing a pipeline's DAG: as text grouped in levels (steps in one level are independent), or
as a Mermaid flowchart."""

from __future__ import annotations

from conveyor.dsl.pipeline import Pipeline, Step


def levels(pipeline: Pipeline) -> list[list[Step]]:
    """Steps grouped by depth: every step's upstream lies in an earlier level."""
    depth: dict[str, int] = {}
    for step in pipeline.steps:  # steps are in a valid execution order
        depth[step.name] = 1 + max((depth[u] for u in step.upstream), default=0)
    grouped: dict[int, list[Step]] = {}
    for step in pipeline.steps:
        grouped.setdefault(depth[step.name], []).append(step)
    return [grouped[d] for d in sorted(grouped)]


def _params(pipeline: Pipeline) -> str:
    parts = []
    for p in pipeline.params:
        parts.append(f"{p.name}: {p.annotation}" + (f" = {p.default!r}" if p.has_default else ""))
    return ", ".join(parts) or "(none)"


def render_text(pipeline: Pipeline) -> str:
    """The DAG as indented text, one block per level."""
    partition = pipeline.partition
    if isinstance(partition, tuple):
        partition = f"{partition[0]}..{partition[1]} (ranged)"
    lines = [
        f"pipeline {pipeline.name}: {len(pipeline.steps)} steps",
        f"  parameters: {_params(pipeline)}",
        f"  partition: {partition or 'none'} · calendar: {pipeline.calendar.name}",
    ]
    width = max(len(s.name) for s in pipeline.steps)
    for number, level in enumerate(levels(pipeline), start=1):
        note = " (independent, may run in parallel)" if len(level) > 1 else ""
        lines.append(f"level {number}{note}")
        for step in level:
            args = ", ".join(f"{k}={b.describe()}" for k, b in step.bindings)
            kind = "host" if step.kind == "host" else "step"
            extra = ""
            if step.component is not None and step.component.spec is not None:
                packages = step.component.spec.packages
                extra = f"  [{', '.join(packages)}]" if packages else ""
            order = f"  after {', '.join(step.after)}" if step.after else ""
            mapped = ""
            if step.map is not None:  # drawn once: one step per item at run time
                mapped = f"  map over {step.map.over}: {step.map.describe()}"
                args = ", ".join(f"{k}={b.describe()}" for k, b in step.bindings
                                 if k != step.map.over)  # fmt: skip
            lines.append(f"  {step.name:<{width}}  {kind}  ({args}){extra}{order}{mapped}")
    return "\n".join(lines)


def _node_id(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def render_mermaid(pipeline: Pipeline) -> str:
    """The DAG as a Mermaid flowchart; host steps are drawn as parallelograms."""
    lines = ["flowchart TD"]
    for step in pipeline.steps:
        node = _node_id(step.name)
        shape = f'[/"{step.name}"/]' if step.kind == "host" else f'["{step.name}"]'
        if step.map is not None:  # one node with a count: a stack of steps
            shape = f'[["{step.name} × {step.map.describe()}"]]'
        lines.append(f"    {node}{shape}")
    for step in pipeline.steps:
        for name, binding in step.bindings:
            if binding.kind == "output":
                label = name if binding.output == "output" else f"{binding.output} → {name}"
                lines.append(
                    f"    {_node_id(binding.step or '')} -->|{label}| {_node_id(step.name)}"
                )
            elif binding.kind == "collect":
                for source in dict.fromkeys(binding.sources):
                    lines.append(f"    {_node_id(source)} ==>|{name}| {_node_id(step.name)}")
        for before in step.after:  # ordering without data: dotted
            lines.append(f"    {_node_id(before)} -.-> {_node_id(step.name)}")
    return "\n".join(lines)
