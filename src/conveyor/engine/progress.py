"""Waits a person should see: locking and building environments, image builds, server starts,
upstream partitions, running steps. Each wait has a title and a latest line of detail.

The library only announces waits; a front end decides how to show them. The CLI shows them as
live spinners on a terminal and stays quiet when its output is not one (logs say what
happened); without a front end, `waiting` costs a function call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class WaitDisplay(Protocol):
    """Where waits are shown (the CLI's live display)."""

    def begin(self, title: str) -> int:
        """A wait started; returns its id."""

    def detail(self, wait: int, text: str) -> None:
        """The wait's latest line (a package downloading, a build step)."""

    def end(self, wait: int) -> None:
        """The wait is over."""


_display: WaitDisplay | None = None


def show_waits_on(display: WaitDisplay | None) -> None:
    """Send every wait of this process to `display` (None: show none)."""
    global _display
    _display = display


def _ignore(_text: str) -> None:
    pass


@contextmanager
def waiting(title: str) -> Iterator[Callable[[str], None]]:
    """Announce a wait for its duration; yields a function that sets its latest line."""
    display = _display
    if display is None:
        yield _ignore
        return
    wait = display.begin(title)

    def detail(text: str) -> None:
        text = text.strip()
        if text:
            display.detail(wait, text)

    try:
        yield detail
    finally:
        display.end(wait)
