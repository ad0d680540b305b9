"""Tool lists that passed their checks, kept per process: an agent resends the same `tools` on every
turn, and checking them again (the JSON Schema gate of app/schema_bounds.py, the byte caps) cost more
than the rest of parsing a tool call.

The cache is shared by every tenant, so it is bounded in entries and in characters, and losing an
entry costs nothing but time: eviction (least recently used first) means the next request with that
list is checked again, exactly as without the cache. A tenant sending many distinct lists can only
make other tenants' lists be checked again on their own requests (the cost they had before the
cache), never change what any request gets: the key is the list's exact JSON text, so a hit answers
what checking that text would. Refused lists are not kept (they are checked again each time, at the
sender's cost), nor lists larger than one entry may be. Entries hold JSON text, never objects a
caller can reach: every hit builds fresh Tools, so neither the request body nor code downstream that
changes a Tool's parameters can change what the next request gets.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict

from app.calls import Tool

MAX_ENTRIES = 512
MAX_CHARS = 8 * 1024 * 1024         # keys and stored schemas together
MAX_ENTRY_CHARS = 128 * 1024        # a list's JSON text longer than this is checked on every request

# key (the list's JSON text) -> (characters held, ((name, description, parameters JSON, strict), ...))
_ENTRIES: OrderedDict[str, tuple[int, tuple]] = OrderedDict()
_chars = 0
_lock = threading.Lock()


def key_of(tools: list) -> str | None:
    """The list's exact JSON text (key order kept: a reordered list is another entry); None when it is
    not plain JSON data or too large to keep."""
    try:
        text = json.dumps(tools, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return None
    return text if len(text) <= MAX_ENTRY_CHARS else None


def get(key: str) -> tuple[Tool, ...] | None:
    """Fresh Tools for a list kept under `key`, or None."""
    with _lock:
        entry = _ENTRIES.get(key)
        if entry is None:
            return None
        _ENTRIES.move_to_end(key)
    return tuple(Tool(name=name, description=description,
                      parameters=json.loads(parameters) if parameters is not None else None, strict=strict)
                 for name, description, parameters, strict in entry[1])


def put(key: str, tools: tuple[Tool, ...]) -> None:
    """Keep the checked `tools` under `key` (their parameters as JSON text: a copy nothing can change)."""
    global _chars
    stored = tuple((t.name, t.description,
                    json.dumps(t.parameters, ensure_ascii=False, separators=(",", ":"))
                    if t.parameters is not None else None, t.strict) for t in tools)
    size = len(key) + sum(len(p) for _, _, p, _ in stored if p is not None)
    if size > MAX_ENTRY_CHARS * 2:
        return
    with _lock:
        if key in _ENTRIES:
            return
        _ENTRIES[key] = (size, stored)
        _chars += size
        while len(_ENTRIES) > MAX_ENTRIES or _chars > MAX_CHARS:
            _chars -= _ENTRIES.popitem(last=False)[1][0]


def clear() -> None:
    global _chars
    with _lock:
        _ENTRIES.clear()
        _chars = 0
