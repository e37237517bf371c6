"""Run a command on a pseudo-terminal and keep what it drew, with when it drew it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from dataclasses import dataclass

_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Recording:
    """Output chunks and the seconds after start at which each arrived."""

    chunks: list[tuple[float, str]]
    returncode: int

    @property
    def text(self) -> str:
        return "".join(chunk for _, chunk in self.chunks)

    def frames(self) -> list[tuple[float, str]]:
        """Each line the terminal showed (spinner redraws included), without escape codes."""
        found = []
        for at, chunk in self.chunks:
            for piece in re.split(r"\r|\n|\x1b\[2K|\x1b\[1A", chunk):
                line = _ESCAPE.sub("", piece).strip()
                if line:
                    found.append((at, line))
        return found

    def first(self, pattern: str) -> float | None:
        """When a line matching `pattern` first appeared (None: never)."""
        for at, line in self.frames():
            if re.search(pattern, line):
                return at
        return None


def record(args: list[str], *, cwd: str, env: dict[str, str], timeout: float = 900,
           columns: int = 160) -> Recording:  # fmt: skip
    """Run `args` with a terminal of `columns` columns as its stdout and stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=cwd, env={**env, "TERM": "xterm-256color"},
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            start_new_session=True)  # fmt: skip
    os.close(slave)
    chunks: list[tuple[float, str]] = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the other side closed: the command ended
                    break
                if not data:
                    break
                chunks.append((time.monotonic() - started, data.decode("utf-8", "replace")))
            elif proc.poll() is not None:
                break
            if time.monotonic() - started > timeout:
                proc.kill()
                raise TimeoutError(f"{args} ran past {timeout}s")
    finally:
        os.close(master)
    return Recording(chunks, proc.wait())
