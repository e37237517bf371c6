"""Starting a step where the orchestrator is not: from a task spec, a store URL and hashes alone.

`executor_command` is what a foreign orchestrator runs (a Prefect worker on another machine, a
KFP pod, a bare `docker run` with no mounts): a few lines of Python that fetch conveyor's step
runtime from the artifact store by its hash, verify it, put it on the path and hand over to the
executor, which fetches the code bundle and the inputs the same way and publishes the outputs.
The image needs only Python and the step's packages; for a remote store also fsspec with the
store's filesystem (s3fs for s3://), and the store's credentials (`store_variables`), never the
database's.
"""

from __future__ import annotations

from collections.abc import Sequence

from conveyor._runtime import bootstrap as bootstrap_module
from conveyor.engine.bundles import pack
from conveyor.engine.store import ArtifactStore, is_remote
from conveyor.runners.runtime import package_dir, runtime_files


def runtime_key(sha256: str) -> str:
    """Where conveyor's step runtime of this hash lives in the store."""
    return f"runtime/{sha256}.tar"


def publish_runtime(store: ArtifactStore) -> str:
    """Put conveyor's step runtime in the store (once per content); returns its sha256."""
    return _publish(store, runtime_files())


def package_files() -> list[str]:
    """Every file of the conveyor package (relative to it): what a host task runs on."""
    source = package_dir()
    return sorted(
        str(path.relative_to(source))
        for path in source.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".mako")
    )


def publish_package(store: ArtifactStore) -> str:
    """Put the whole conveyor package in the store (once per content); returns its sha256.

    A KFP host task (database reads and writes, the registry) runs conveyor itself, not only the
    step runtime: its image holds conveyor's dependencies, its code comes from here by hash, the
    same way a step's runtime does.
    """
    return _publish(store, package_files())


def _publish(store: ArtifactStore, files: list[str]) -> str:
    source = package_dir()
    bundle = pack((f"conveyor/{name}", source / name) for name in files)
    staged = store.root / ".staging" / f"runtime-{bundle.sha256}.tar"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(bundle.data)
    try:
        store.put_file(runtime_key(bundle.sha256), staged)
    finally:
        staged.unlink(missing_ok=True)
    return bundle.sha256


# The program lives with the step runtime (a string, never imported by a step): the KFP
# compiler, which may not import this runners module, builds the same command from it.
EXECUTOR = bootstrap_module.EXECUTOR
bootstrap = bootstrap_module.program
BOOTSTRAP = bootstrap()


def executor_command(
    *,
    store: str,
    runtime: str,
    spec: str,
    bundle: str | None = None,
    python: str = "python3",
    flags: Sequence[str] = (),
    entry: str = EXECUTOR,
) -> list[str]:
    """The command that runs one step from the store alone (spec: a URL or inline JSON)."""
    command = [python, "-c", bootstrap(entry), store, runtime, spec]
    if bundle:
        command += ["--bundle", bundle]
    return [*command, *flags]


# What a step reaching the store directly may be given, by scheme: the store's credentials and
# where to reach it, nothing else of the orchestrator's environment.
_STORE_VARIABLES = {
    "s3": (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION",
        "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
    ),
    "gs": ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"),
}  # fmt: skip


def store_variables(url: str) -> tuple[str, ...]:
    """The environment variables a step needs to reach the store at `url` itself."""
    if not is_remote(url):
        return ()
    return _STORE_VARIABLES.get(url.split("://", 1)[0], ())
