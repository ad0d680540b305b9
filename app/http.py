"""Plain values for one outbound HTTP exchange, so adapters build and parse without doing I/O."""
from __future__ import annotations

import json
from dataclasses import dataclass, field


# No provider answer nests this deep; past it, parsing (json's C decoder raises RecursionError
# near 1,000 levels), validating and rendering would spend the recursion limit and fail as a 500.
MAX_JSON_DEPTH = 128


def json_depth_exceeds(value, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when `value` nests lists/dicts more than `limit` levels deep (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads_bounded(raw):
    """json.loads for text from outside: ValueError (never RecursionError) for bad or too deep JSON."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if json_depth_exceeds(value):
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: dict = field(default_factory=dict)
    json: dict | None = None
    secrets: tuple[str, ...] = ()       # values to scrub from any error text (the key we sent)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: dict = field(default_factory=dict)   # lower-cased names

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self):
        """The body as JSON, or None when it is not JSON or is nested deeper than MAX_JSON_DEPTH
        (callers decide what that means)."""
        try:
            return loads_bounded(self.body)
        except ValueError:
            return None

    def text(self, limit: int = 500) -> str:
        return self.body[:limit].decode("utf-8", "replace")


@dataclass(frozen=True)
class Plan:
    """An adapter's built request plus what it had to change to get there."""
    request: HttpRequest
    warnings: tuple[str, ...] = ()


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` in seconds (delta form only; providers do not send HTTP dates)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def drop_none(d: dict) -> dict:
    """Providers reject explicit nulls for optional fields; we never send them."""
    return {k: v for k, v in d.items() if v is not None}
