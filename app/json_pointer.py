"""Local JSON pointers (`#`, `#/$defs/item`) inside a caller's JSON Schema: the one resolver that
every schema walker uses (mock examples, the strict-subset rewrite, Gemini's schema translation)."""
from __future__ import annotations


def resolve_local(root, ref: str):
    """What the local reference `ref` names in `root`, or None when it names nothing (or is not
    local: remote references are refused before any walker runs, app/schema_bounds.py)."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node = root
    for token in filter(None, ref[1:].split("/")):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node
