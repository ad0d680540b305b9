"""A circuit breaker per provider, so fallbacks are taken at once instead of after more timeouts.

closed --(THRESHOLD consecutive provider failures)--> open --(COOLDOWN_S)--> half-open
half-open: one probe call is let through; success closes, failure opens again, and an outcome
that says nothing about the provider (`release`) frees the probe slot for the next call.

The breaker is shared by every tenant, so only a failure that is the provider's counts
(`is_provider_failure`): a 5xx or 529, a connection error, or a timeout that is the provider's
own (its 408/504/DEADLINE_EXCEEDED) or ours when the caller left the provider the service's
default deadline. Never our timeout when the caller cut the wait short (a timeoutMs below the
default, or fallbacks, which give an attempt only half the time left), never a 4xx the caller's
input caused, never a 429 (rate limits are retried after Retry-After; one tenant's traffic must
not switch a provider off for the others).

State is per process today, behind this small interface (allow / record_success /
record_failure / state) so a shared store can hold it later without touching dispatch.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from collections.abc import Callable

from app.errors import ProviderError, ProviderOverloaded, ProviderTimeout, ProviderUnreachable

THRESHOLD = 5
COOLDOWN_S = 30.0


@dataclass
class _State:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


def is_provider_failure(err: ProviderError, caller_deadline: bool) -> bool:
    """Whether `err` says something about the provider (the rule in the module docstring).

    `caller_deadline`: the caller cut the attempt's wait short (a `timeoutMs` below the service's
    default, or fallbacks, which halve an attempt's share), so a timeout of ours measures the
    caller's choice, not the provider."""
    if isinstance(err, ProviderTimeout):
        return err.upstream_status is not None or not caller_deadline
    return isinstance(err, (ProviderOverloaded, ProviderUnreachable))


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

    def release(self, key: str) -> None:
        """The call ended in a way that says nothing about the provider: count nothing, but free
        the half-open probe slot (or no call would ever probe again)."""
        with self._lock:
            s = self._states.get(key)
            if s is not None:
                s.probing = False

    def record_failure(self, key: str) -> None:
        with self._lock:
            s = self._states.setdefault(key, _State())
            s.failures += 1
            if s.probing or s.failures >= self.threshold:
                s.opened_at = self.clock()
                s.probing = False
