"""Checks of a compiled PipelineSpec: strict protobuf parsing, and referential integrity.

kfp's own loaders are lenient: `load_component_from_file` and the protobuf parse accept a task
whose `componentRef` names no component, a component without an `executorLabel` (or one naming
no executor), a `dependentTasks` entry or a `producerTask` naming no task, an output key the
producer does not declare, and a dependency cycle; such a spec is refused only when a run
starts, on the cluster. `problems` finds each of them; `validate` runs both checks and raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from conveyor.errors import CompileError


def documents(text: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The PipelineSpec and the PlatformSpec (None if absent) of a compiled YAML file."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where PyYAML has it
    found = [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    if not found or not isinstance(found[0], dict):
        raise CompileError("the compiled YAML holds no PipelineSpec")
    platform = found[1] if len(found) > 1 and isinstance(found[1], dict) else None
    return found[0], platform


def strict_parse(spec: Mapping[str, Any], platform: Mapping[str, Any] | None) -> None:
    """Parse into kfp's protobuf messages, refusing any unknown field (what the backend does)."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    try:
        json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
        if platform is not None:
            json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
            # each executor's config is a Struct there: parse it as what kfp-kubernetes wrote
            for config in _platform_executors(platform).values():
                json_format.ParseDict(
                    config, kubernetes_executor_config_pb2.KubernetesExecutorConfig()
                )
    except json_format.ParseError as exc:
        raise CompileError(f"the compiled spec does not parse as KFP's protobuf: {exc}") from exc


def _platform_executors(platform: Mapping[str, Any]) -> Mapping[str, Any]:
    kubernetes = (platform.get("platforms") or {}).get("kubernetes") or {}
    executors: Mapping[str, Any] = (kubernetes.get("deploymentSpec") or {}).get("executors") or {}
    return executors


def _dag_edges(tasks: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(task, upstream task, how) for every dependency a DAG's tasks declare."""
    for name, task in tasks.items():
        for upstream in task.get("dependentTasks") or []:
            yield name, upstream, "dependentTasks"
        inputs = task.get("inputs") or {}
        for section, key in (("artifacts", "taskOutputArtifact"),
                             ("parameters", "taskOutputParameter")):  # fmt: skip
            for input_name, value in (inputs.get(section) or {}).items():
                producer = (value.get(key) or {}).get("producerTask")
                if producer is not None:
                    yield name, producer, f"input {input_name!r} (producerTask)"


def _cycle(tasks: Mapping[str, Any]) -> list[str] | None:
    graph: dict[str, set[str]] = {name: set() for name in tasks}
    for name, upstream, _ in _dag_edges(tasks):
        if upstream in graph:
            graph[name].add(upstream)
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for upstream in sorted(graph[node]):
            if state.get(upstream) == 1:
                return [*path[path.index(upstream) :], upstream]
            if upstream not in state and (found := visit(upstream)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _check_dag(
    where: str, dag: Mapping[str, Any], inputs: Mapping[str, Any],
    components: Mapping[str, Any], problems: list[str],
) -> None:  # fmt: skip
    tasks: Mapping[str, Any] = dag.get("tasks") or {}
    for name, task in tasks.items():
        here = f"{where}, task {name!r}"
        ref = (task.get("componentRef") or {}).get("name")
        component = components.get(ref) if ref else None
        if component is None:
            problems.append(f"{here}: componentRef {ref!r} names no component")
        declared = (component or {}).get("inputDefinitions") or {}
        given = task.get("inputs") or {}
        for section in ("artifacts", "parameters"):
            for input_name, value in (given.get(section) or {}).items():
                if component is not None and input_name not in (declared.get(section) or {}):
                    problems.append(f"{here}: input {input_name!r} is not an input of "
                                    f"component {ref!r}")  # fmt: skip
                key = "taskOutputArtifact" if section == "artifacts" else "taskOutputParameter"
                source = value.get(key)
                if source is not None:
                    producer = source.get("producerTask")
                    out = source.get("outputArtifactKey" if section == "artifacts"
                                     else "outputParameterKey")  # fmt: skip
                    upstream = tasks.get(producer) if producer else None
                    if upstream is None:
                        problems.append(
                            f"{here}: input {input_name!r} names producerTask {producer!r}, "
                            f"which is not a task of the DAG"
                        )
                        continue
                    ref_name = str((upstream.get("componentRef") or {}).get("name"))
                    made = components.get(ref_name) or {}
                    outputs = (made.get("outputDefinitions") or {}).get(section) or {}
                    if out not in outputs:
                        problems.append(f"{here}: input {input_name!r} reads output {out!r} of "
                                        f"task {producer!r}, which has no such output")  # fmt: skip
                parent = value.get("componentInputParameter" if section == "parameters"
                                   else "componentInputArtifact")  # fmt: skip
                if parent is not None and parent not in (inputs.get(section) or {}):
                    problems.append(f"{here}: input {input_name!r} reads {parent!r}, which is "
                                    f"not an input of {where}")  # fmt: skip
        for upstream in task.get("dependentTasks") or []:
            if upstream not in tasks:
                problems.append(f"{here}: dependentTasks names {upstream!r}, which is not a "
                                f"task of the DAG")  # fmt: skip
            elif upstream == name:
                problems.append(f"{here}: depends on itself")
    cycle = _cycle(tasks)
    if cycle is not None:
        problems.append(f"{where}: dependency cycle {' -> '.join(cycle)}")


def problems(spec: Mapping[str, Any], platform: Mapping[str, Any] | None = None) -> list[str]:
    """Every broken reference in a PipelineSpec (and its Kubernetes platform config)."""
    found: list[str] = []
    components: Mapping[str, Any] = spec.get("components") or {}
    executors = ((spec.get("deploymentSpec") or {}).get("executors")) or {}
    for name, component in components.items():
        if "dag" in component:
            _check_dag(f"component {name!r}", component["dag"],
                       component.get("inputDefinitions") or {}, components, found)  # fmt: skip
            continue
        label = component.get("executorLabel")
        if not label:
            found.append(f"component {name!r} has no executorLabel (and no dag)")
        elif label not in executors:
            found.append(f"component {name!r}: executorLabel {label!r} names no executor")
    root = spec.get("root") or {}
    if "dag" not in root:
        found.append("the spec has no root dag")
    else:
        _check_dag("the root dag", root["dag"], root.get("inputDefinitions") or {}, components,
                   found)  # fmt: skip
    if platform is not None:
        for label in _platform_executors(platform):
            if label not in executors:
                found.append(f"the Kubernetes platform config names executor {label!r}, which "
                             f"the spec does not have")  # fmt: skip
    return found


def validate(text: str, pipeline: str = "") -> None:
    """Raise CompileError unless `text` parses strictly and every reference in it resolves."""
    spec, platform = documents(text)
    strict_parse(spec, platform)
    found = problems(spec, platform)
    if found:
        where = f"pipeline {pipeline!r}: " if pipeline else ""
        raise CompileError(
            f"{where}the compiled KFP spec is inconsistent (a conveyor bug; please report it):\n"
            + "\n".join(f"- {p}" for p in found)
        )
