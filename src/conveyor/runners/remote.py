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

from conveyor.engine.bundles import pack
from conveyor.engine.store import ArtifactStore, is_remote
from conveyor.runners.runtime import package_dir, runtime_files


def runtime_key(sha256: str) -> str:
    """Where conveyor's step runtime of this hash lives in the store."""
    return f"runtime/{sha256}.tar"


def publish_runtime(store: ArtifactStore) -> str:
    """Put conveyor's step runtime in the store (once per content); returns its sha256."""
    source = package_dir()
    bundle = pack((f"conveyor/{name}", source / name) for name in runtime_files())
    staged = store.root / ".staging" / f"runtime-{bundle.sha256}.tar"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(bundle.data)
    try:
        store.put_file(runtime_key(bundle.sha256), staged)
    finally:
        staged.unlink(missing_ok=True)
    return bundle.sha256


# argv: STORE RUNTIME_SHA256 SPEC [executor flags...]. Regular files only, names inside the
# folder: the same rules as conveyor._runtime.bundles.unpack, which is not on the path yet.
BOOTSTRAP = """\
import hashlib, io, os, sys, tarfile, tempfile
store, sha = sys.argv[1].rstrip("/"), sys.argv[2]
url = f"{store}/runtime/{sha}.tar"
home = os.environ.get("CONVEYOR_CACHE") or os.path.join(tempfile.gettempdir(), "conveyor")
folder = os.path.join(home, "runtime", sha)
if not os.path.isdir(folder):
    if "://" in url and not url.startswith("file://"):
        import fsspec
        with fsspec.open(url, "rb") as f:
            data = f.read()
    else:
        with open(url.removeprefix("file://"), "rb") as f:
            data = f.read()
    if hashlib.sha256(data).hexdigest() != sha:
        sys.exit(f"conveyor bootstrap: {url} does not match its hash")
    staging = f"{folder}.{os.getpid()}"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            if not m.isfile() or m.name.startswith("/") or ".." in m.name.split("/"):
                sys.exit(f"conveyor bootstrap: refusing {m.name!r} in {url}")
        tar.extractall(staging, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    try:
        os.rename(staging, folder)
    except OSError:
        pass
sys.path.insert(0, folder)
from conveyor._runtime.executor import main
sys.exit(main(sys.argv[3:] + ["--store", store]))
"""


def executor_command(
    *,
    store: str,
    runtime: str,
    spec: str,
    bundle: str | None = None,
    python: str = "python3",
    flags: Sequence[str] = (),
) -> list[str]:
    """The command that runs one step from the store alone (spec: a URL or inline JSON)."""
    command = [python, "-c", BOOTSTRAP, store, runtime, spec]
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
