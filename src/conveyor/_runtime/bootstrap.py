"""The program that starts a step (or a host task) where conveyor is not installed.

    python3 -c "$PROGRAM" STORE RUNTIME_SHA256 SPEC [flags...]

It fetches a conveyor runtime from the artifact store by its hash (`runtime/<sha256>.tar`),
verifies and unpacks it once per machine, puts it on the path and hands the remaining arguments
to an entry module's `main`, with `--store STORE` appended. It is a string, run with `-c`: the
step has nothing of conveyor yet when it starts. `conveyor.runners.remote.executor_command`
and the KFP compiler build their commands from it.
"""

# argv: STORE RUNTIME_SHA256 SPEC [executor flags...]. Regular files only, names inside the
# folder: the same rules as conveyor._runtime.bundles.unpack, which is not on the path yet.
_PROGRAM = """\
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
from ENTRY import main
sys.exit(main(sys.argv[3:] + ["--store", store]))
"""

EXECUTOR = "conveyor._runtime.executor"


def program(entry: str = EXECUTOR) -> str:
    """The bootstrap program: fetch a runtime by hash, then run `entry`'s `main` on the rest."""
    return _PROGRAM.replace("ENTRY", entry)
