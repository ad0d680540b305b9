"""The one gate for every JSON Schema a caller sends (response_format's schema; tool parameter
schemas go through it too): `caller_schema_problem(schema)` says why the schema cannot be used, or
None, before any provider is called.

Order matters. Checking a schema against the JSON Schema meta-schema (`jsonschema`'s check_schema)
costs about a quarter of a millisecond per subschema: a 2.5 MB schema of 100k properties held a
gevent worker's event loop for over 30 s. So the schema's size is measured first, by one cheap walk
that stops at the first limit crossed, and only a schema within the limits is checked (under gevent,
in the hub's thread pool). The limits are the providers' own published ones for structured output
(a schema over them would be refused upstream anyway), plus two of ours that bound what the
meta-schema check walks.
"""
from __future__ import annotations

import hashlib
import json

import jsonschema

from app.json_schema import SUBSCHEMA, SUBSCHEMA_LIST, SUBSCHEMA_MAP, refs, subschemas

# OpenAI Structured Outputs, "Supported schemas" > "Limitations on schema size"
# (https://platform.openai.com/docs/guides/structured-outputs#supported-schemas), the most generous
# published ones (Anthropic's, ../shared/specs/anthropic/build-with-claude_structured-outputs.md
# "Schema complexity limits", are lower: that provider refuses what is over them itself):
MAX_OBJECT_PROPERTIES = 5_000       # object properties, in total
MAX_OBJECT_NESTING = 10             # levels of object nesting below the root
MAX_ENUM_VALUES = 1_000             # enum values, in total
MAX_SCHEMA_STRING_CHARS = 120_000   # property names, definition names, enum values and consts, in total
LARGE_ENUM_VALUES = 250             # one string enum with more values than this...
MAX_LARGE_ENUM_CHARS = 15_000       # ...may total at most this many characters
# Ours: what the meta-schema check and every recursive walker grow with.
MAX_SUBSCHEMAS = 10_000             # about 2 subschemas per property at OpenAI's property limit
MAX_SCHEMA_DEPTH = 100              # JSON nesting of the schema document (10 object levels need ~50)

# Of the keywords that hold subschemas (app/json_schema.py), the ones that apply to the same instance
# (not to a property or an item of it): a cycle through only these, and $ref / $dynamicRef, never ends.
_SAME_INSTANCE_ONE = ("if", "then", "else", "not")
_SAME_INSTANCE_LIST = ("allOf", "anyOf", "oneOf")
_SAME_INSTANCE_MAP = ("dependentSchemas", "dependencies")
_REF_KEYWORDS = ("$ref", "$dynamicRef")


class _TooLarge(Exception):
    pass


def caller_schema_problem(schema) -> str | None:
    """Why a caller's JSON Schema cannot be used (None if it can): over a size limit; not valid
    JSON Schema; a `$ref` or `$dynamicRef` that leaves the schema (we would fetch a caller-chosen
    URL) or does not resolve; or a reference cycle that never reaches a property or an item (its
    validation would never end). Recursion through properties or items is fine.

    Each distinct schema is checked once per process (workflows resend the same one on every call).
    Within one request (a batch carries a schema per item, a call one per tool), the schemas not
    checked before share one budget of MAX_SUBSCHEMAS, so no request costs more than the largest
    single schema allowed."""
    try:
        size = _measure(schema)
    except _TooLarge as exc:
        return str(exc)
    canonical = json.dumps(schema, sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).digest()
    if digest in _CHECKED:
        return _CHECKED[digest]
    if not _spend(size):
        return (f"this request's schemas have more than {MAX_SUBSCHEMAS} subschemas in all, not counting "
                "schemas checked before; send one schema for items that share it")
    problem = _off_the_event_loop(_check, canonical)
    if len(_CHECKED) >= _CHECKED_SIZE:
        del _CHECKED[next(iter(_CHECKED))]   # the oldest
    _CHECKED[digest] = problem
    return problem


_CHECKED: dict[bytes, str | None] = {}       # sha256 of the canonical schema -> its problem, oldest first
_CHECKED_SIZE = 1024


def _check(canonical: str) -> str | None:
    return _meta_problem(canonical) or _reference_problem(canonical)


def _meta_problem(canonical: str) -> str | None:
    """Why a JSON Schema is invalid against the meta-schema or by its `$ref`s (None if it is fine).
    Every `$ref` must point inside the schema and resolve: a remote one would make us fetch a
    caller-chosen URL (server-side request forgery), a dangling one would fail only when the answer
    is validated."""
    from app.postprocess import local_resolver
    schema = json.loads(canonical)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return exc.message
    resolver = local_resolver(schema)
    for ref in refs(schema):
        if not ref.startswith("#"):
            return f"$ref {ref[:100]!r} points outside the schema; only local references (#/...) are allowed"
        try:
            resolver.lookup(ref)
        except Exception:  # noqa: BLE001 - referencing raises several kinds for a bad pointer
            return f"$ref {ref[:100]!r} does not resolve inside the schema"
    return None


def _off_the_event_loop(fn, *args):
    """Under gevent, run `fn` in the hub's pool of native threads: the check still takes its
    seconds, but the event loop (the other calls on this worker, gunicorn's heartbeat) keeps
    running beside it. Elsewhere (sync, gthread: already a thread per request) it runs here."""
    try:
        from gevent import get_hub, monkey
    except ImportError:
        return fn(*args)
    if not monkey.is_module_patched("threading"):
        return fn(*args)
    return get_hub().threadpool.apply(fn, args)


def _spend(subschemas: int) -> bool:
    """Take `subschemas` from the current request's budget; False when it does not have them.
    Outside a request (the batch CLI, tests) only the per-schema limit applies."""
    from flask import g, has_request_context
    if not has_request_context():
        return True
    left = g.get("schema_budget", MAX_SUBSCHEMAS)
    if subschemas > left:
        return False
    g.schema_budget = left - subschemas
    return True


def _measure(schema) -> int:
    """The number of subschemas; _TooLarge at the first limit crossed, so the walk never goes past
    MAX_SUBSCHEMAS schemas."""
    properties = enums = chars = subschemas = 0
    # (value, json depth, object nesting, is a schema)
    stack = [(schema, 1, -1, True)]
    while stack:
        node, depth, nesting, is_schema = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise _TooLarge(f"the schema is nested more than {MAX_SCHEMA_DEPTH} levels deep")
        if not is_schema:
            if isinstance(node, dict):
                stack.extend((v, depth + 1, nesting, False) for v in node.values())
            elif isinstance(node, list):
                stack.extend((v, depth + 1, nesting, False) for v in node)
            continue
        if not isinstance(node, dict):
            if isinstance(node, list):           # not a schema (check_schema says so): still measured
                stack.append((node, depth, nesting, False))
            continue
        subschemas += 1
        if subschemas > MAX_SUBSCHEMAS:
            raise _TooLarge(f"the schema has more than {MAX_SUBSCHEMAS} subschemas")
        kind = node.get("type")
        if "properties" in node or kind == "object" or isinstance(kind, list) and "object" in kind:
            nesting += 1
            if nesting > MAX_OBJECT_NESTING:
                raise _TooLarge(f"objects are nested more than {MAX_OBJECT_NESTING} levels below the root "
                                "(OpenAI's limit for structured output)")
        for key, value in node.items():
            if key in SUBSCHEMA_MAP and isinstance(value, dict):
                if key == "properties":
                    properties += len(value)
                    if properties > MAX_OBJECT_PROPERTIES:
                        raise _TooLarge(f"the schema has more than {MAX_OBJECT_PROPERTIES} object properties "
                                        "(OpenAI's limit for structured output)")
                if key in ("properties", "$defs", "definitions"):
                    chars += sum(len(name) for name in value)
                stack.extend((v, depth + 2, nesting, True) for v in value.values())
            elif key in SUBSCHEMA_LIST and isinstance(value, list):
                stack.extend((v, depth + 2, nesting, True) for v in value)
            elif key in SUBSCHEMA:
                stack.append((value, depth + 1, nesting, True))
            elif key == "enum" and isinstance(value, list):
                enums += len(value)
                if enums > MAX_ENUM_VALUES:
                    raise _TooLarge(f"the schema has more than {MAX_ENUM_VALUES} enum values "
                                    "(OpenAI's limit for structured output)")
                texts = sum(len(v) for v in value if isinstance(v, str))
                if len(value) > LARGE_ENUM_VALUES and texts > MAX_LARGE_ENUM_CHARS:
                    raise _TooLarge(f"an enum of more than {LARGE_ENUM_VALUES} values totals more than "
                                    f"{MAX_LARGE_ENUM_CHARS} characters (OpenAI's limit for structured output)")
                chars += texts
                stack.extend((v, depth + 1, nesting, False) for v in value)
            elif key == "const":
                chars += len(value) if isinstance(value, str) else 0
                stack.append((value, depth + 1, nesting, False))
            else:
                stack.append((value, depth + 1, nesting, False))
            if chars > MAX_SCHEMA_STRING_CHARS:
                raise _TooLarge(f"the schema's property names, definition names, enum values and consts total "
                                f"more than {MAX_SCHEMA_STRING_CHARS} characters (OpenAI's limit for structured "
                                "output)")
    return subschemas


def _same_instance_children(node: dict):
    for key in _SAME_INSTANCE_ONE:
        if isinstance(node.get(key), dict):
            yield node[key]
    for key in _SAME_INSTANCE_LIST:
        if isinstance(node.get(key), list):
            yield from (v for v in node[key] if isinstance(v, dict))
    for key in _SAME_INSTANCE_MAP:
        if isinstance(node.get(key), dict):
            yield from (v for v in node[key].values() if isinstance(v, dict))


def _reference_problem(canonical: str) -> str | None:
    """A `$dynamicRef` outside the schema or unresolvable, or a reference cycle that stays on one
    instance. (_meta_problem has checked the meta-schema and every `$ref` already.)"""
    from app.postprocess import local_resolver
    schema = json.loads(canonical)
    resolver = local_resolver(schema)
    nodes = list(subschemas(schema))
    pointer_of = {id(node): pointer for pointer, node in nodes}
    memo: dict[int, list[dict]] = {}

    def edges(node: dict) -> list[dict]:
        """What validating `node` applies to the same instance: its in-place subschemas and the
        targets of its references (computed on first visit: a reference may land anywhere)."""
        if id(node) not in memo:
            targets = list(_same_instance_children(node))
            for keyword in _REF_KEYWORDS:
                ref = node.get(keyword)
                if not isinstance(ref, str):
                    continue
                if not ref.startswith("#"):
                    raise _Unusable(f"{keyword} {ref[:100]!r} points outside the schema; only local references "
                                    "(#...) are allowed")
                try:
                    target = resolver.lookup(ref).contents
                except Exception:  # noqa: BLE001 - referencing raises several kinds for a bad pointer
                    raise _Unusable(f"{keyword} {ref[:100]!r} does not resolve inside the schema") from None
                if isinstance(target, dict):
                    targets.append(target)
            memo[id(node)] = targets
        return memo[id(node)]

    try:
        cycle = _find_cycle([node for _, node in nodes], edges)
    except _Unusable as exc:
        return str(exc)
    if cycle:
        path = " -> ".join(pointer_of.get(id(n), "(a non-schema location)") for n in cycle)
        return (f"the references {path} loop back without reaching a property or an item, so validation "
                "would never end; recursion must go through properties or items")
    return None


class _Unusable(Exception):
    pass


def _find_cycle(starts: list[dict], edges) -> list[dict] | None:
    """A cycle in the same-instance graph (iterative depth-first search), as the nodes on it."""
    done: set[int] = set()
    for start in starts:
        if id(start) in done:
            continue
        path, on_path = [start], {id(start)}
        iters = [iter(edges(start))]
        while iters:
            child = next(iters[-1], None)
            if child is None:
                done.add(id(path[-1]))
                on_path.discard(id(path.pop()))
                iters.pop()
                continue
            if id(child) in on_path:
                return path[[id(n) for n in path].index(id(child)):] + [child]
            if id(child) in done:
                continue
            path.append(child)
            on_path.add(id(child))
            iters.append(iter(edges(child)))
    return None


def batch_schemas_problem(items, defaults) -> str | None:
    """For a batch (whose items are checked one by one, in worker threads): why the distinct
    response_format schemas its items carry, not checked before, are together more than one
    request may cost (MAX_SUBSCHEMAS); None when they fit. Only measures: each item's own check
    still says what is wrong with its schema."""
    fallback = defaults.get("response_format") if isinstance(defaults, dict) else None
    seen: set[bytes] = set()
    total = 0
    for item in items if isinstance(items, list) else ():
        fmt = item.get("response_format", fallback) if isinstance(item, dict) else None
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            continue
        try:
            size = _measure(schema)
        except _TooLarge:
            continue                          # refused by its own check, before any work
        digest = hashlib.sha256(json.dumps(schema, sort_keys=True).encode("utf-8", "surrogatepass")).digest()
        if digest in seen or digest in _CHECKED:
            continue
        seen.add(digest)
        total += size
        if total > MAX_SUBSCHEMAS:
            return (f"the items' distinct response_format schemas have more than {MAX_SUBSCHEMAS} subschemas in "
                    "all; send one schema (in defaults) for items that share it, or split the batch")
    return None
