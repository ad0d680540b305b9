"""A per-process memo from a caller's JSON text to a result kept as JSON text (app/tool_cache.py).
Worth it only where the work saved costs more than a dump of the key and a parse of the result: a
small schema's strict conversion (app/strict_schema.py, ~15 us) does not, its JSON round trip is slower.

Shared by every tenant, so it is bounded in entries and in characters (keys and results together),
least recently used dropped first, and it never keeps a pair larger than one entry may be: losing an
entry only means computing it again. Results are held as text, never as objects a caller or later
code can reach, so each hit is a fresh copy that nothing can have changed.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict


def json_key(value, max_chars: int) -> str | None:
    """`value`'s exact JSON text (key order kept), or None when it is not plain JSON data or is longer
    than `max_chars`."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None
    return text if len(text) <= max_chars else None


class JsonMemo:
    def __init__(self, max_entries: int, max_chars: int, max_entry_chars: int):
        self.max_entries, self.max_chars, self.max_entry_chars = max_entries, max_chars, max_entry_chars
        self._entries: OrderedDict[str, str] = OrderedDict()
        self.chars = 0
        self._lock = threading.Lock()

    def get(self, key: str):
        """A fresh copy of the result kept under `key`, or None."""
        with self._lock:
            text = self._entries.get(key)
            if text is None:
                return None
            self._entries.move_to_end(key)
        return json.loads(text)

    def put(self, key: str, result) -> None:
        """Keep `result` (JSON data) under `key`, unless the pair is larger than one entry may be."""
        text = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
        size = len(key) + len(text)
        if size > self.max_entry_chars:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = text
            self.chars += size
            while len(self._entries) > self.max_entries or self.chars > self.max_chars:
                old_key, old_text = self._entries.popitem(last=False)
                self.chars -= len(old_key) + len(old_text)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.chars = 0
