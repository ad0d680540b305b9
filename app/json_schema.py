"""The layout of a caller's JSON Schema document: which keywords hold subschemas, every subschema
in it, its local `$ref`s and what they point to. The one walker that the schema checks
(app/schema_bounds.py) and the translations (the strict subset, Anthropic's structured output,
Gemini's schema, mock examples) share, so they agree on what a subschema is.

Remote references are refused before any translation runs (app/schema_bounds.py); here a reference
that is not local names nothing.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

# 2020-12 keywords whose values are subschemas (plus the older `definitions`, `dependencies`,
# `additionalItems` and array-form `items`, which callers still send). Other keywords hold data
# (`enum`, `const`, `default`, `examples`) or names (the keys of the maps), never subschemas.
SUBSCHEMA = ("items", "contains", "additionalProperties", "propertyNames", "if", "then", "else", "not",
             "unevaluatedItems", "unevaluatedProperties", "contentSchema", "additionalItems")
SUBSCHEMA_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
SUBSCHEMA_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")


def subschemas(schema) -> Iterator[tuple[str, dict]]:
    """(pointer, subschema) for every schema object in the document, root first."""
    stack = [("#", schema)]
    while stack:
        pointer, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield pointer, node
        for key, value in node.items():
            where = f"{pointer}/{_escape(key)}" if pointer != "#" else f"#/{_escape(key)}"
            if key in SUBSCHEMA_MAP and isinstance(value, dict):
                stack.extend((f"{where}/{_escape(name)}", v) for name, v in value.items())
            elif key in SUBSCHEMA_LIST and isinstance(value, list):
                stack.extend((f"{where}/{i}", v) for i, v in enumerate(value))
            elif key in SUBSCHEMA:
                stack.append((where, value))


def _escape(token) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def refs(schema) -> list[str]:
    """Every distinct `$ref` in the document's subschemas, local or not, each once."""
    return list(dict.fromkeys(node["$ref"] for _, node in subschemas(schema) if isinstance(node.get("$ref"), str)))


def resolve_local(root, ref: str):
    """What the local reference `ref` (`#`, `#/$defs/item`) names in `root`, or None when it names
    nothing or is not local."""
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


def reachable_refs(start, target: Callable[[str], object]) -> set[str]:
    """The `$ref`s met when following `start`'s subschemas and, through `target` (a ref -> the
    schema it points to), every schema they point to. `ref in reachable_refs(target(ref), target)`
    says that `ref` is recursive."""
    seen: set[str] = set()
    pending = [start]
    while pending:
        for ref in refs(pending.pop()):
            if ref not in seen:
                seen.add(ref)
                pending.append(target(ref))
    return seen
