"""The CLI's live display of waits (conveyor.engine.progress): a spinner per wait, with its
latest line and elapsed time, drawn only on a terminal."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

DETAIL_WIDTH = 70


class LiveWaits:
    """Waits as transient spinner lines; the display runs while any wait is open."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", markup=False),
            TextColumn("{task.fields[detail]}", markup=False, style="dim"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._open = 0
        self._lock = threading.Lock()

    def begin(self, title: str) -> int:
        with self._lock:
            if self._open == 0:
                self._progress.start()
            self._open += 1
            return int(self._progress.add_task(title, total=None, detail=""))

    def detail(self, wait: int, text: str) -> None:
        if len(text) > DETAIL_WIDTH:
            text = text[: DETAIL_WIDTH - 1] + "…"
        self._progress.update(TaskID(wait), detail=text)

    def end(self, wait: int) -> None:
        with self._lock:
            # draw the wait's last line once: a short wait (a lock resolved in 300 ms) would
            # otherwise vanish between two refreshes without ever showing what it did
            self._progress.refresh()
            self._progress.remove_task(TaskID(wait))
            self._open -= 1
            if self._open == 0:
                self._progress.stop()
