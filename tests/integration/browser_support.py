"""Debian's headless Chromium, as the UI and report tests drive it."""

from __future__ import annotations

import shutil
import subprocess

from tests.conftest import need


def chromium(
    *args: str, timeout: float = 90, size: str = "1500,950"
) -> subprocess.CompletedProcess:
    """Run headless Chromium with `args` (a page, --dump-dom, --screenshot=...); no network
    but loopback, so a page that fetched anything from outside would show it missing."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    need(binary is not None, "Debian's chromium is not installed (apt-get install chromium)")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--window-size={size}", "--virtual-time-budget=20000",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ]  # fmt: skip
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
