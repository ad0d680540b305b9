"""A circuit breaker per provider, so fallbacks are taken at once instead of after more timeouts.

closed --(THRESHOLD consecutive transient failures)--> open --(COOLDOWN_S)--> half-open
half-open: one probe call is let through; success closes, failure opens again.

State is per process today, behind this small interface (allow / record_success /
record_failure / state) so a shared store can hold it later without touching dispatch.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

THRESHOLD = 5
COOLDOWN_S = 30.0


@dataclass
class _State:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class CircuitBreaker:
    def __init__(self, threshold: int = THRESHOLD, cooldown_s: float = COOLDOWN_S,
                 clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    def state(self, key: str) -> str:
        with self._lock:
            s = self._states.get(key)
            if s is None or s.opened_at is None:
                return "closed"
            return "half_open" if self.clock() - s.opened_at >= self.cooldown_s else "open"

    def allow(self, key: str) -> bool:
        with self._lock:
            s = self._states.get(key)
            if s is None or s.opened_at is None:
                return True
            if self.clock() - s.opened_at < self.cooldown_s:
                return False
            if s.probing:
                return False
            s.probing = True          # half-open: exactly one probe at a time
            return True

    def record_success(self, key: str) -> None:
        with self._lock:
            self._states.pop(key, None)

    def record_failure(self, key: str) -> None:
        with self._lock:
            s = self._states.setdefault(key, _State())
            s.failures += 1
            if s.probing or s.failures >= self.threshold:
                s.opened_at = self.clock()
                s.probing = False
