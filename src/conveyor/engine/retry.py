"""How long to wait before retrying a failed step: one policy for every engine driver."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: `base_delay * factor ** (attempt - 1)`, at most `max_delay` seconds.

    The thread driver sleeps these delays itself; the Prefect driver hands them to Prefect's
    task retries, so a step waits the same under either engine.
    """

    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.base_delay < 0 or self.factor < 1 or self.max_delay < 0:
            raise ValueError(f"invalid retry policy {self!r}: delays >= 0 and factor >= 1")

    @classmethod
    def from_environment(cls) -> RetryPolicy:
        """The default policy; CONVEYOR_RETRY_DELAY sets its base delay (tests use 0)."""
        return cls(base_delay=float(os.environ.get("CONVEYOR_RETRY_DELAY", "1.0")))

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt `failed_attempt` (1-based) failed."""
        return min(self.base_delay * self.factor ** (failed_attempt - 1), self.max_delay)

    def delays(self, retries: int) -> list[float]:
        """The wait before each of `retries` retries."""
        return [self.delay(attempt) for attempt in range(1, retries + 1)]
