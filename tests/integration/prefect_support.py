"""A real Prefect server for the tests, and helpers to read what conveyor reported to it."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.backends.prefect_server import QUIET
from tests.conftest import need


@dataclass(frozen=True)
class Sent:
    """A request an httpx client sent, the thread that sent it and the status it got back."""

    thread: threading.Thread
    method: str
    path: str
    status: int


def record_requests(monkeypatch: pytest.MonkeyPatch) -> list[Sent]:
    """Every request httpx's clients (Prefect's, sync and async) send from now on."""
    import httpx

    sent: list[Sent] = []
    send, send_async = httpx.Client.send, httpx.AsyncClient.send

    def record(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        here = threading.current_thread()
        sent.append(Sent(here, request.method, request.url.path, response.status_code))
        return response

    def sending(self, request, *args, **kwargs):
        return record(request, send(self, request, *args, **kwargs))

    async def sending_async(self, request, *args, **kwargs):
        return record(request, await send_async(self, request, *args, **kwargs))

    monkeypatch.setattr(httpx.Client, "send", sending)
    monkeypatch.setattr(httpx.AsyncClient, "send", sending_async)
    return sent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_prefect_server(home: Path, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on a free port with its own home; returns (process, api url).

    Started as `conveyor ui` starts its server: Prefect's CLI with SQLite write transactions
    begun IMMEDIATE (conveyor.backends.prefect_sqlite says why)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    url = f"http://127.0.0.1:{port}/api"
    env.update({"PREFECT_HOME": str(home), "PREFECT_UI_API_URL": url, **QUIET})
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor.backends.prefect_sqlite", "server", "start",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    stop_process(proc)
    raise RuntimeError(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")


def server_log_errors(limit: int = 12) -> str:
    """The last error lines of the session's Prefect server log (for failure messages)."""
    path = os.environ.get("CONVEYOR_TEST_PREFECT_LOG")
    if not path or not Path(path).is_file():
        return "(no server log)"
    lines = Path(path).read_text(errors="replace").splitlines()
    errors = [line for line in lines if "Error" in line or "Traceback" in line]
    return "\n".join(errors[-limit:]) or "(no errors in the server log)"


def stop_process(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def query(coro_factory):
    """Run `coro_factory(client)` against the configured API and return its result."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def main():
        async with get_client() as client:
            return await coro_factory(client)

    with temporary_settings(updates={PREFECT_API_URL: os.environ["PREFECT_API_URL"]}):
        return asyncio.run(main())


def flow_run_and_tasks(flow_run_id: str):
    """(flow run, {task run name: task run}) as the Prefect API has them."""
    from uuid import UUID

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read(client):
        flow_run = await client.read_flow_run(UUID(flow_run_id))
        tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
        )
        return flow_run, {t.name: t for t in tasks}

    # Task run states reach the API through events the server records asynchronously, so just
    # after a flow run ends a task of it may still read RUNNING: wait (bounded) for them to settle
    deadline = time.monotonic() + 30
    while True:
        flow_run, tasks = query(read)
        unsettled = [t for t in tasks.values() if t.state is None or not t.state.is_final()]
        if not (flow_run.state and flow_run.state.is_final() and unsettled):
            return flow_run, tasks
        if time.monotonic() > deadline:
            return flow_run, tasks  # the test's assertions say what is still unsettled
        time.sleep(0.5)


def _drain_prefect_workers() -> None:
    """Send what Prefect's log and event workers still hold while the server is up.

    Left to the interpreter's exit, they retry against a stopped server and hold the test
    process for minutes after the last test.
    """
    import sys

    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=15)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One real Prefect server for the whole session (Prefect's client keeps global state)."""
    need(importlib.util.find_spec("prefect") is not None, "prefect is not installed")
    home = tmp_path_factory.mktemp("prefect-home")
    proc, url = start_prefect_server(home)
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    os.environ["CONVEYOR_TEST_PREFECT_LOG"] = str(home / "server.log")
    try:
        yield url
    finally:
        _drain_prefect_workers()
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        stop_process(proc)
