"""The step cache: keys over code, environment, parameters and input content; an index of files.

A key hashes the parts below. An entry records the outputs a step produced under a key, so a hit
reuses them without running anything. Next to entries, the parts of the most recent run of each
(pipeline, step) are kept so a miss can say why it ran. No database is needed.

    <store>/cache/entries/ab/<key>.json
    <store>/cache/latest/<pipeline>/<step>/<partition>.json

Both live in the artifact store (a folder or an object store), so the cache travels with the
values it points at: deleting a machine's `.conveyor/` loses nothing when the store is remote.

The most recent parts are kept per partition, so a re-run of one date is explained against the
same date's previous run, not against whichever date ran last.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from conveyor._runtime.hashing import canonical_json, compact_json, sha256_json
from conveyor.dsl.artifacts import ArtifactRef
from conveyor.engine.store import ArtifactStore

log = logging.getLogger("conveyor.cache")


@dataclass(frozen=True, slots=True)
class CacheKeyParts:
    """What a step's result depends on."""

    code: str
    environment: str
    params: dict[str, str] = field(default_factory=dict)  # name -> canonical JSON
    inputs: dict[str, str] = field(default_factory=dict)  # name -> content sha256
    outputs: dict[str, str] = field(default_factory=dict)  # name -> codec
    # for explaining a miss only, not in the key (the key has their hashes already):
    files: dict[str, str] = field(default_factory=dict)  # input name -> the path as written
    code_parts: dict[str, str] = field(default_factory=dict)  # "file: qualname" -> source hash
    outcome: str = ""  # in a "latest" record: how that run of the step ended (or "running")
    collected: dict[str, dict[str, str]] = field(default_factory=dict)  # input -> item -> sha

    @property
    def key(self) -> str:
        return sha256_json(self._keyed())

    def _keyed(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "environment": self.environment,
            "params": self.params,
            "inputs": self.inputs,
            "outputs": self.outputs,
        }

    def to_dict(self) -> dict[str, Any]:
        extras = {
            "files": self.files, "code_parts": self.code_parts, "outcome": self.outcome,
            "collected": self.collected,
        }  # fmt: skip
        return {**self._keyed(), **extras}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheKeyParts:
        return cls(
            data["code"], data["environment"], data["params"], data["inputs"], data["outputs"],
            data.get("files", {}), data.get("code_parts", {}), data.get("outcome", ""),
            data.get("collected", {}),
        )  # fmt: skip

    @classmethod
    def build(
        cls,
        code: str,
        environment: str,
        params: dict[str, Any],
        inputs: dict[str, str],
        outputs: dict[str, str],
        *,
        files: dict[str, str] | None = None,
        code_parts: dict[str, str] | None = None,
        collected: dict[str, dict[str, str]] | None = None,
    ) -> CacheKeyParts:
        return cls(
            code, environment, {k: compact_json(canonical_json(v)) for k, v in params.items()},
            inputs,
            outputs, dict(files or {}), dict(code_parts or {}), "", dict(collected or {}),
        )  # fmt: skip


# Why a cache hit did not run: what the key covers (not "cached", which only repeats the status)
HIT_REASON = "same code, inputs and environment"


def explain_miss(previous: CacheKeyParts | None, current: CacheKeyParts) -> str:
    """Why a step runs, compared with the most recent run of the same step."""
    if previous is None:
        return "no previous run"
    if previous.environment != current.environment:
        return "new environment"
    if previous.code != current.code:
        return "code changed" + _changed_code(previous.code_parts, current.code_parts)
    reasons = []
    changed_params = sorted(
        k for k in set(previous.params) | set(current.params)
        if previous.params.get(k) != current.params.get(k)
    )  # fmt: skip
    if changed_params:
        noun = "parameter" if len(changed_params) == 1 else "parameters"
        reasons.append(f"{noun} {', '.join(changed_params)} changed")
    changed_inputs = sorted(
        k for k in set(previous.inputs) | set(current.inputs)
        if previous.inputs.get(k) != current.inputs.get(k)
    )  # fmt: skip
    files = [current.files[k] for k in changed_inputs if k in current.files]
    changed_inputs = [k for k in changed_inputs if k not in current.files]
    if files:
        noun = "input file" if len(files) == 1 else "input files"
        reasons.append(f"{noun} {', '.join(files)} changed")
    if changed_inputs:
        noun = "input" if len(changed_inputs) == 1 else "inputs"
        named = [_with_items(k, previous.collected.get(k), current.collected.get(k))
                 for k in changed_inputs]  # fmt: skip
        reasons.append(f"{noun} {', '.join(named)} changed")
    if previous.outputs != current.outputs:
        reasons.append("output types changed")
    if reasons:
        return "; ".join(reasons)
    return {
        "failed": "its previous run failed",
        "succeeded": "its cached result is gone",
    }.get(previous.outcome, "its previous run did not finish")


def _with_items(name: str, before: dict[str, str] | None, now: dict[str, str] | None) -> str:
    """`scores (item train[qda])`: which items of a collected input changed, when known."""
    if before is None or now is None:
        return name
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if not changed:
        return name
    noun = "item" if len(changed) == 1 else "items"
    return f"{name} ({noun} {', '.join(changed)})"


def _changed_code(previous: dict[str, str], current: dict[str, str], shown: int = 3) -> str:
    """` (helpers.py: Caster.transform, ...)`: which named parts differ, when both are known."""
    if not previous or not current:
        return ""
    changed = sorted(
        name for name in set(previous) | set(current)
        if previous.get(name) != current.get(name) and not name.startswith("const:")
    )  # fmt: skip
    if not changed:
        return ""
    more = f" and {len(changed) - shown} more" if len(changed) > shown else ""
    return f" ({', '.join(changed[:shown])}{more})"


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """Outputs a step produced under a key."""

    key: str
    outputs: dict[str, ArtifactRef]
    metrics: dict[str, float] | None = None


class CacheIndex:
    """Cache entries and most-recent parts, stored as small JSON files beside the artifacts."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    @staticmethod
    def _entry_key(key: str) -> str:
        return f"cache/entries/{key[:2]}/{key}.json"

    @staticmethod
    def _latest_key(pipeline: str, step: str, partition: str) -> str:
        return f"cache/latest/{pipeline}/{step}/{partition or 'all'}.json"

    def _read(self, key: str, immutable: bool = False) -> Any:
        text = self.store.read_document(key, immutable=immutable)
        try:
            return None if text is None else json.loads(text)
        except json.JSONDecodeError:
            return None

    def lookup(self, key: str) -> CacheEntry | None:
        """The entry for `key` if every output it names is still in the store, intact."""
        return self.check(key)[0]

    def check(self, key: str) -> tuple[CacheEntry | None, str | None]:
        """(the usable entry for `key`, or None; why an entry exists but cannot be used)."""
        # an entry's key hashes everything its outputs depend on: any copy of it is current
        data = self._read(self._entry_key(key), immutable=True)
        if data is None:
            return None, None
        outputs = {k: ArtifactRef.from_dict(v) for k, v in data["outputs"].items()}
        for name, ref in outputs.items():
            problem = self._unusable(name, ref)
            if problem is not None:
                log.warning("cache entry %s: %s", key[:12], problem)
                return None, problem
        return CacheEntry(key, outputs, data.get("metrics")), None

    def _unusable(self, name: str, ref: ArtifactRef) -> str | None:
        local = self.store.path_for(ref.sha256)
        if local.exists():
            if self.store.verify(ref):
                return None
            return (
                f"cached output {name!r} ({local}) no longer matches its hash: it was changed "
                f"on disk; running again to replace it"
            )
        if self.store.remote and self.store.exists(ref):
            return None  # fetched and verified when first used
        return f"cached output {name!r} ({ref.sha256[:12]}) is missing from the store"

    def record(
        self, key: str, outputs: dict[str, ArtifactRef], metrics: dict[str, float] | None
    ) -> None:
        payload = {"key": key, "outputs": {k: v.to_dict() for k, v in outputs.items()}}
        if metrics is not None:
            payload["metrics"] = metrics
        # written after the outputs it names were published: a reader never finds a dangling entry
        self.store.write_document(self._entry_key(key), json.dumps(payload))

    def latest(self, pipeline: str, step: str, partition: str = "") -> CacheKeyParts | None:
        data = self._read(self._latest_key(pipeline, step, partition))
        try:
            return None if data is None else CacheKeyParts.from_dict(data)
        except KeyError:
            return None

    def remember(
        self,
        pipeline: str,
        step: str,
        parts: CacheKeyParts,
        partition: str = "",
        outcome: str = "succeeded",
    ) -> None:
        """Record what this run of a step depended on, and how it ended ("running" before)."""
        key = self._latest_key(pipeline, step, partition)
        record = replace(parts, outcome=outcome)
        self.store.write_document(key, json.dumps(record.to_dict()))
