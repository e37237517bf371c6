"""conveyor's managed local Prefect server: the web UI, and the API later commands report to.

`conveyor ui` starts one `prefect server start` process with its home under
`.conveyor/prefect/` (analytics off) and records its URL and pid in `server.json`; while it is
up, `engine="auto"` uses Prefect and every command points Prefect's client at it. Nothing here
imports Prefect, so checking for the server costs nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conveyor._runtime.files import write_text_atomic
from conveyor.engine.processes import process_alive
from conveyor.engine.settings import Settings
from conveyor.errors import ConveyorError

# Quiet, offline-friendly Prefect: no analytics, no promotional content, patient ephemeral start.
QUIET = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
}


def prefect_home(settings: Settings) -> Path:
    return settings.home / "prefect"


def _state_path(settings: Settings) -> Path:
    return prefect_home(settings) / "server.json"


def managed_server(settings: Settings) -> dict[str, Any] | None:
    """The managed server's `{"url", "pid"}` if it is running, else None."""
    try:
        state = json.loads(_state_path(settings).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state if process_alive(int(state.get("pid", -1))) else None


def prefect_variables(settings: Settings) -> dict[str, str]:
    """Variables for Prefect clients of this project (the API URL when the server is up)."""
    variables = {"PREFECT_HOME": str(prefect_home(settings)), **QUIET}
    server = managed_server(settings)
    if settings.prefect_api:
        variables["PREFECT_API_URL"] = settings.prefect_api
    elif server:
        variables["PREFECT_API_URL"] = server["url"]
    return variables


def api_configured(settings: Settings) -> bool:
    """Whether a Prefect API is configured (PREFECT_API_URL) or the managed server is up."""
    configured = os.environ.get("PREFECT_API_URL") or settings.prefect_api
    return bool(configured) or managed_server(settings) is not None


def connect(settings: Settings) -> tuple[str, bool]:
    """The Prefect API long-running commands (serve, worker) use: PREFECT_API_URL or
    `[tool.conveyor] prefect_api`, else the managed server, started now if it is not up;
    returns (url, whether it was started). PREFECT_API_URL is set to it for Prefect.

    Never Prefect's private temporary server: its schedules and runs would vanish with the
    process and never show in the UI. Prefect is told so too (no ephemeral mode).
    """
    os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"
    configured = os.environ.get("PREFECT_API_URL") or settings.prefect_api
    started = False
    if not configured:
        running = managed_server(settings)
        if running is None or not healthy(running["url"]):
            running, started = start_server(settings), True
        configured = str(running["url"])
    os.environ["PREFECT_API_URL"] = configured
    return configured, started


def healthy(url: str, timeout: float = 2.0) -> bool:
    import urllib.error  # imported here: `engine="auto"` checks for the server on every run
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            status: int = response.status  # typeshed types urlopen's result as Any
            return status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(
    settings: Settings, host: str = "127.0.0.1", port: int = 4200, timeout: float = 180
) -> dict[str, Any]:
    """Start the managed server unless it runs already; return its `{"url", "pid"}`."""
    running = managed_server(settings)
    if running and healthy(running["url"]):
        return running
    url = f"http://{host}:{port}/api"
    if healthy(url):
        raise ConveyorError(
            f"something else already serves a Prefect API at {url}; stop it, or start conveyor's "
            f"server on another port with `conveyor ui --port N`"
        )
    home = prefect_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    # the browser UI asks the server where its API is; without this it assumes port 4200
    env.update({"PREFECT_HOME": str(home), "PREFECT_UI_API_URL": url, **QUIET})
    log_path = home / "server.log"
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "conveyor.backends.prefect_sqlite",  # Prefect's CLI; see that module for why
                "server",
                "start",
                "--host",
                host,
                "--port",
                str(port),
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise ConveyorError(f"the Prefect server did not start at {url}; its log:\n{tail}")
        time.sleep(0.3)
    state = {"url": url, "ui": f"http://{host}:{port}", "pid": proc.pid, "log": str(log_path)}
    write_text_atomic(_state_path(settings), json.dumps(state))
    return state


def stop_server(settings: Settings, timeout: float = 15) -> bool:
    """Stop the managed server; True if one was running."""
    server = managed_server(settings)
    _state_path(settings).unlink(missing_ok=True)
    if server is None:
        return False
    pid = int(server["pid"])
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if process_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True
