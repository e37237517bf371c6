"""The warm fork server (zygote) of one environment: imports once, forks a sandboxed child per step.

    python -s -m conveyor._runtime.zygote --fd N

The venv runner starts it inside a bubblewrap sandbox of the environment (see
`conveyor.runners.zygote`): the environment, conveyor's runtime and the system read-only, no
network, no orchestrator, and the host folders steps take their files from bound at
`/conveyor/stage/<i>`. It runs as root of that sandbox's user namespace with CAP_SYS_ADMIN
there (nothing outside it), imports what the environment's steps use (the codec libraries,
the declared packages, what earlier steps imported from site-packages) and then, for each step,
forks:

- a supervisor (A), which makes a new mount and PID namespace and forks
- an init (B), PID 1 of that namespace, which binds the step's own work folder, inputs and code
  bundle at the fixed `/conveyor/...` paths, covers `/conveyor/stage` with an empty read-only
  tmpfs, mounts fresh `/proc`, `/dev/pts`, `/tmp` and `/dev/shm`, then enters a user namespace
  of its own as uid 65534 (the mounts above can no longer be undone), gets fresh network
  (loopback only), IPC and UTS namespaces, drops every capability, sets no_new_privs, closes
  every inherited descriptor but stdio, and forks
- the step (C), in a session of its own, which runs the executor as
  `python -m conveyor._runtime.executor` would, while B reaps orphans like bubblewrap's init.

Killing B ends its PID namespace, so a timeout (the orchestrator asks, the server signals A, A
kills B) takes every process of the step with it. The server and its children live in the
sandbox's own PID namespace, which bubblewrap ends when the orchestrator dies.

Messages are JSON on a SOCK_SEQPACKET socket (one message a packet); a `run` request carries
the step's stdout and stderr as descriptors (SCM_RIGHTS). Standard library only, like the rest
of `_runtime/`.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import importlib.util
import json
import os
import re
import select
import signal
import socket
import struct
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

WORK, CODE, INPUTS, STAGE = (
    "/conveyor/work", "/conveyor/code", "/conveyor/inputs", "/conveyor/stage",
)  # fmt: skip
STEP_UID = 65534
MAX_MESSAGE = 1 << 20
MAX_LEARNED = 1000  # module names a step reports (keeps its exit message small)
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc().mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {source or fstype} on {target}",
    )


def _unshare(flags: int, what: str) -> None:
    _check(_libc().unshare(flags), f"unshare {what}")


def _send(sock: socket.socket, message: dict[str, Any]) -> bool:
    try:
        sock.send(json.dumps(message).encode())
    except OSError:  # the orchestrator is gone (the sandbox is about to end), or too long
        return False
    return True


# ------------------------------------------------------------------------------- preloading


def _site_dirs() -> tuple[str, ...]:
    return tuple(p for p in sys.path if p.rstrip("/").endswith("site-packages"))


def _from_site(module: Any, sites: tuple[str, ...]) -> bool:
    path = getattr(module, "__file__", None) or ""
    return bool(path) and path.startswith(sites)


def _distribution_modules(names: list[str]) -> list[str]:
    """The top-level import names of installed distributions (scikit-learn -> sklearn)."""
    import importlib.metadata as metadata

    wanted = {re.sub(r"[-_.]+", "-", n).lower() for n in names}
    found = []
    for top, dists in metadata.packages_distributions().items():
        if top.startswith("_") or not _MODULE.match(top):
            continue
        if any(re.sub(r"[-_.]+", "-", d).lower() in wanted for d in dists):
            found.append(top)
    return sorted(found)


def preload(modules: list[str], distributions: list[str]) -> tuple[list[str], dict[str, str]]:
    """Import modules from the environment's site-packages (never from the project: the code
    bundle is not mounted here); a failure only means a step imports it itself."""
    sites = _site_dirs()
    names = list(modules)
    if distributions:
        names += _distribution_modules(distributions)
    loaded, failed = [], {}
    for name in names:
        if not isinstance(name, str) or not _MODULE.match(name) or name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name.partition(".")[0])
            origin = (
                spec and (spec.origin or next(iter(spec.submodule_search_locations or ()), ""))
            ) or ""
            if not origin.startswith(sites):
                failed[name] = "not in the environment's site-packages"
                continue
            importlib.import_module(name)
            loaded.append(name)
        except BaseException as exc:  # SystemExit or worse from an import: never the server's end
            failed[name] = f"{type(exc).__name__}: {exc}"[:300]
    return loaded, failed


# ------------------------------------------------------------------------------- the step child


class Step:
    """What the forked step process runs once its sandbox is made: the executor, as `-m` would."""

    def __init__(self, argv: list[str], status: int) -> None:
        self.argv = argv
        self.status = status  # pipe to the supervisor: "ok", then the modules the step imported

    def run(self) -> int:
        from conveyor._runtime import executor

        for folder in (WORK, CODE):
            sys.path_importer_cache.pop(folder, None)
        importlib.invalidate_caches()
        _forget_shadowed()
        if "numpy.random" in sys.modules:  # a fork shares the server's seed: draw a fresh one
            sys.modules["numpy.random"].seed()
        before = set(sys.modules)
        sys.argv = [executor.__file__, *self.argv]
        try:
            code = executor.main(self.argv)
        finally:
            sites = _site_dirs()
            new = sorted(
                n for n, m in list(sys.modules.items())
                if n not in before and n.count(".") < 2 and _from_site(m, sites)
            )  # fmt: skip
            try:
                os.write(self.status, json.dumps(new[:MAX_LEARNED]).encode())
                os.close(self.status)
            except OSError:
                pass
        return code


def _forget_shadowed() -> None:
    """Drop preloaded site-packages modules that a project module of the same name shadows
    (the code bundle and the work folder come first on sys.path, as in a fresh interpreter)."""
    names: set[str] = set()
    for folder in (WORK, CODE):
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        names.update(e.removesuffix(".py") for e in entries if e != "conveyor")
    sites = _site_dirs()
    for name in list(sys.modules):
        if name.partition(".")[0] in names and _from_site(sys.modules[name], sites):
            del sys.modules[name]


def _bind(source: str, target: str, readonly: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w"):
            pass
    _mount(source, target, None, MS_BIND | MS_REC)
    if readonly:
        _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _loopback_up() -> None:
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def _drop_capabilities() -> None:
    libc = _libc()
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # past the last capability: EINVAL, ignored
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    _check(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _die_with_parent() -> None:
    _check(_libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "parent-death signal")


def _make_sandbox(binds: list[list[str]], stdout: int, stderr: int, status: int) -> None:
    """Turn this process (PID 1 of a fresh PID namespace, in a fresh mount namespace) into the
    step's sandbox: the same view a bubblewrap step gets, and no way back."""
    _mount("tmpfs", INPUTS, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    for source, target, mode in binds:
        _bind(source, target, mode != "rw")
    _mount(None, INPUTS, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    _mount("tmpfs", STAGE, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0755")
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    # terminals of its own: /dev/ptmx is bubblewrap's link to pts/ptmx
    _mount(
        "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"
    )
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in ("sys", "sysrq-trigger", "irq", "bus"):  # as bubblewrap covers them
        path = f"/proc/{name}"
        if os.path.exists(path):
            _mount(path, path, None, MS_BIND | MS_REC)
            _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)
    _unshare(CLONE_NEWUSER, "user namespace")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{STEP_UID} 0 1"),
                       ("gid_map", f"{STEP_UID} 0 1")):  # fmt: skip
        try:
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write {text!r} to /proc/self/{name}: {exc}") from exc
    _unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS, "network, IPC and UTS namespaces")
    _loopback_up()
    _check(_libc().sethostname(b"conveyor-step", 13), "sethostname")
    _drop_capabilities()
    _die_with_parent()  # after the last change of credentials, which would clear it
    os.chdir(WORK)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    keep = {0, 1, 2, status}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _init(step: int, status: int) -> NoReturn:
    """PID 1 of the step's namespace, like bubblewrap's init: it reaps orphans (the kernel sends
    them here) and, once the step ends, reports its exit status and ends, which ends every
    process left in the namespace. (The step is not PID 1 itself: PID 1 ignores the signals
    it sends itself without a handler, and would collect zombies.)"""
    while True:
        try:
            pid, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == step:
            os.write(status, f"\nexit {os.waitstatus_to_exitcode(wait_status)}\n".encode())
            os._exit(0)


def _supervise(sock: socket.socket, request: dict[str, Any], fds: list[int], server: int) -> Step:
    """In the forked supervisor: make the step's namespaces, fork it, relay how it ended.
    Returns only in the step process; the supervisor always ends in `os._exit`."""
    step_id = request["id"]
    code = 0
    try:
        _die_with_parent()
        if os.getppid() != server:  # the server ended before the line above
            os._exit(1)
        _unshare(CLONE_NEWNS | CLONE_NEWPID, "mount and PID namespaces")
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing propagates back to the server
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read_end)
            sock.detach()  # its descriptor is closed with the others; no double close at exit
            try:
                _make_sandbox(request["binds"], fds[0], fds[1], write_end)
            except BaseException as exc:
                import traceback

                where = traceback.extract_tb(exc.__traceback__)[-1]
                problem = f"{type(exc).__name__}: {exc} (at {where.line})"
                os.write(write_end, f"error {problem}".encode())
                os._exit(121)
            os.write(write_end, b"ok\n")
            step = os.fork()
            if step == 0:
                os.setsid()
                return Step(request["argv"], write_end)
            _init(step, write_end)
        os.close(write_end)
        for fd in fds:
            os.close(fd)
        signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGKILL))
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        _, status = os.waitpid(child, 0)
        text = b"".join(chunks).decode(errors="replace")
        if not text.startswith("ok\n"):
            problem = text.removeprefix("error ") or "the step ended before its sandbox was made"
            _send(sock, {"id": step_id, "event": "setup-failed", "error": problem})
        else:
            body, _, ended = text[3:].rpartition("\nexit ")
            try:
                exit_code = int(ended.strip())
            except ValueError:  # its init was killed (a timeout): the namespace died with it
                body, exit_code = text[3:], os.waitstatus_to_exitcode(status)
            try:
                imported = json.loads(body.strip() or "[]")
            except ValueError:
                imported = []
            message = {"id": step_id, "event": "exit", "status": exit_code}
            if not _send(sock, {**message, "imported": imported}):
                _send(sock, message)
    except BaseException as exc:
        _send(
            sock, {"id": step_id, "event": "setup-failed", "error": f"{type(exc).__name__}: {exc}"}
        )
        code = 1
    os._exit(code)


# ------------------------------------------------------------------------------- the server


def _reap(children: dict[int, int]) -> None:
    while children:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        for step_id, known in list(children.items()):
            if known == pid:
                del children[step_id]


def serve(sock: socket.socket) -> Step | None:
    """Answer requests until the orchestrator closes the socket; returns a Step in a forked
    step process, None in the server when it is done."""
    children: dict[int, int] = {}  # step id -> supervisor pid
    while True:
        ready, _, _ = select.select([sock], [], [], 1.0)
        _reap(children)
        if not ready:
            continue
        data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 4)
        if not data:
            return None
        request = json.loads(data)
        op = request.get("op")
        if op == "preload":
            loaded, failed = preload(request.get("modules", []), request.get("distributions", []))
            _send(sock, {"event": "preloaded", "loaded": loaded, "failed": failed})
        elif op == "run":
            sys.stdout.flush()
            sys.stderr.flush()
            # what the server has made so far is never collected in a step: a collection there
            # would touch (and so copy) every page of the server's heap
            gc.freeze()
            server = os.getpid()
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                return _supervise(sock, request, fds, server)
            for fd in fds:
                os.close(fd)
            children[request["id"]] = pid
            _send(sock, {"id": request["id"], "event": "forked"})
        elif op == "kill":
            supervisor = children.get(request.get("id", -1))
            if supervisor is not None:
                try:
                    os.kill(supervisor, signal.SIGTERM)  # it kills its step's namespace
                except ProcessLookupError:
                    pass
        else:
            for fd in fds:
                os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m conveyor._runtime.zygote --fd N`."""
    argv = sys.argv[1:] if argv is None else argv
    fd = int(argv[argv.index("--fd") + 1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator decides when this ends
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=fd)
    # what every step's executor imports anyway, before the first fork
    from conveyor._runtime import executor  # noqa: F401

    step = serve(sock)
    if step is None:
        return 0
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = step.run()
    _finish(code)
    return code


def _finish(code: int) -> None:
    """End a step as the interpreter would (its threads joined, atexit handlers run, output
    flushed) without tearing down every module the server imported, which a process that is
    about to end need not do and which costs a fork of a pandas server a third of a second."""
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
