"""What compiling a pipeline for Kubeflow Pipelines needs besides the pipeline itself.

The compiler (`compiler.py`) turns a traced `Pipeline` into KFP objects; everything it cannot
know from the pipeline alone is resolved before, by `conveyor.ops.compile`, and handed over in
these frozen records: where each step's image was pushed (by digest), the hashes of the code
bundles and of conveyor's runtime in the artifact store, the code fingerprints, the content of
`Path` inputs, the model pins. This module imports no kfp, so the resolving side can build them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})
# host tasks receive every pipeline parameter as an input named with this prefix (their run's
# parameters: its partition, `ctx.params`); the compiler and `conveyor.ops.host_task` agree on it
RUN_PARAMETER = "pipeline_"


@dataclass(frozen=True, slots=True)
class KfpOptions:
    """How a pipeline is compiled for Kubeflow Pipelines (the compile options a user picks).

    Attributes:
        database_secret: the Kubernetes secret holding the database URL; only host tasks
            (load_table, write_table, register_model, load_model, @host_step) mount it.
        database_secret_key: the key in that secret whose value is the URL.
        store_secret: a Kubernetes secret with the artifact store's credentials, its keys named
            as the variables (AWS_ACCESS_KEY_ID, ...); every task mounts the ones it has. None:
            the pods reach the store without (a node role, workload identity, a public bucket).
        env_secret: the Kubernetes secret holding the variables components list in `env=`
            (keys named as the variables); required when any component lists one.
    """

    database_secret: str = "conveyor-database"
    database_secret_key: str = "url"
    store_secret: str | None = None
    env_secret: str | None = None


@dataclass(frozen=True, slots=True)
class StepImage:
    """A step's image as pushed to a registry, and the environment it holds."""

    reference: str  # <registry>/conveyor-env@sha256:... (by digest: immutable)
    environment: str  # the environment key (the image's conveyor.env-key label)
    interpreter: str = ""  # the Python inside, e.g. "3.11.2"
    pins: tuple[str, ...] = ()  # the environment's lock
    lock_path: str = ""


@dataclass(frozen=True, slots=True)
class FileContent:
    """A `Path` input's content, published to the artifact store when the pipeline was compiled."""

    sha256: str
    format: str  # "file" or "dir"
    size: int
    value: str  # the path as the pipeline parameter or literal gave it
    parameter: str | None = None  # the pipeline parameter that named it, if any


@dataclass(frozen=True, slots=True)
class KfpBuild:
    """Everything compiled into the spec that the pipeline alone does not say."""

    store: str  # the artifact store's URL: every task reads its code (and publishes) there
    runtime: str  # sha256 of conveyor's step runtime in the store (`runtime/<sha>.tar`)
    images: Mapping[str, StepImage]  # component step -> its image
    bundles: Mapping[str, str]  # step -> its code bundle's sha256 (components, @host_step)
    code: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # step -> code fingerprint
    package: str | None = None  # sha256 of the whole conveyor package (host tasks run it)
    host_image: StepImage | None = None  # conveyor's dependencies with its db extra
    files: Mapping[str, Mapping[str, FileContent]] = field(default_factory=lambda: _EMPTY)
    # load_model step -> the pins its consumers' environments were built with (None: no model
    # existed at compile time, so they hold only what they declare)
    models: Mapping[str, tuple[str, ...] | None] = field(default_factory=lambda: _EMPTY)
    store_variables: tuple[str, ...] = ()  # what a task needs to reach the store itself
    python: str = "/opt/conveyor/env/bin/python"  # the interpreter inside conveyor's images
