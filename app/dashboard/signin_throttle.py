"""Failed dashboard sign-ins, counted per (client address, the key id or tenant the attempt named).

Guessing one key's secret (or one tenant's JWT) from one address is stopped after LIMIT failures
for the rest of a WINDOW_S window, while failures against other keys, or from other clients behind
the same reverse proxy (which all share its address), lock nobody else out. In memory, per worker
process: each gunicorn worker allows its own LIMIT, and a restart forgets. Bounded: past
MAX_ENTRIES, the least recently failed entries are forgotten first (a flood of distinct names can
only shorten others' throttling, never lengthen it).
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

LIMIT = 5                 # failed sign-ins per window ...
WINDOW_S = 300.0          # ... from the window's first failure
MAX_ENTRIES = 10_000      # (address, name) pairs remembered


class FailedSignIns:
    def __init__(self, limit: int = LIMIT, window_s: float = WINDOW_S, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic):
        self.limit, self.window_s, self.max_entries, self.clock = limit, window_s, max_entries, clock
        self._entries: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()   # -> (window start, failures)
        self._lock = threading.Lock()

    def retry_after(self, who: Hashable) -> int | None:
        """Whole seconds until `who` may try again, or None when it may now."""
        with self._lock:
            entry = self._entries.get(who)
            if entry is None:
                return None
            start, failures = entry
            left = start + self.window_s - self.clock()
            if left <= 0:
                del self._entries[who]
                return None
            return max(1, math.ceil(left)) if failures >= self.limit else None

    def failed(self, who: Hashable) -> None:
        with self._lock:
            now = self.clock()
            start, failures = self._entries.pop(who, (now, 0))
            if now - start >= self.window_s:
                start, failures = now, 0
            self._entries[who] = (start, failures + 1)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
