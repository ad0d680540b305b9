"""Tool lists that passed their checks, kept per process: an agent resends the same `tools` on every
turn, and checking them again (the JSON Schema gate of app/schema_bounds.py, the byte caps) cost more
than the rest of parsing a tool call.

The memo (app/json_memo.py) is shared by every tenant, bounded in entries and characters, least
recently used dropped first. A tenant sending many distinct lists can only make other tenants' lists
be checked again on their own requests (the cost they had before the cache), never change what any
request gets: the key is the list's exact JSON text, so a hit answers what checking that text would.
Refused lists are not kept (they are checked again each time, at the sender's cost). Every hit builds
fresh Tools from text, so neither the request body nor code downstream that changes a Tool's
parameters can change what the next request gets.
"""
from __future__ import annotations

from app.calls import Tool
from app.json_memo import JsonMemo, json_key

MAX_ENTRY_CHARS = 128 * 1024        # a list whose JSON text is longer is checked on every request
MEMO = JsonMemo(max_entries=512, max_chars=8 * 1024 * 1024, max_entry_chars=2 * MAX_ENTRY_CHARS)


def key_of(tools: list) -> str | None:
    """The list's exact JSON text (a reordered list is another entry), or None when it is not plain
    JSON data or too long to keep."""
    return json_key(tools, MAX_ENTRY_CHARS)


def get(key: str) -> tuple[Tool, ...] | None:
    """Fresh Tools for a list kept under `key`, or None."""
    kept = MEMO.get(key)
    if kept is None:
        return None
    return tuple(Tool(name=name, description=description, parameters=parameters, strict=strict)
                 for name, description, parameters, strict in kept)


def put(key: str, tools: tuple[Tool, ...]) -> None:
    MEMO.put(key, [[t.name, t.description, t.parameters, t.strict] for t in tools])


def clear() -> None:
    MEMO.clear()
