"""A caller's JSON Schema in OpenAI's strict Structured Outputs subset, and the answer mapped back.

Strict mode (`strict: true`, OpenAI and the providers that copy it) accepts only a subset of JSON
Schema (platform.openai.com/docs/guides/structured-outputs#supported-schemas, "Supported schemas"):
the root is an object and not `anyOf`; every object has `additionalProperties: false`; every
property is in `required` ("All fields must be required"), an optional one being emulated by a union
with null; `allOf`, `not`, `dependentRequired`, `dependentSchemas`, `if`/`then`/`else` are not
supported; strings take only `pattern` and the listed `format`s, numbers `multipleOf`, `minimum`,
`maximum` and the exclusive bounds, arrays `minItems`/`maxItems`; at most 5000 properties, 10 levels
of nesting and 1000 enum values.

`to_strict` rewrites a schema into that subset the way OpenAI's own Python SDK does for its models
(`openai.lib._pydantic._ensure_strict_json_schema`: close objects, require every property, inline a
`$ref` that has siblings, merge a one-entry `allOf`), making each optional property nullable on top,
leaving out annotations that constrain nothing (`default`, `examples`, `$schema`...) and giving an
untyped `enum`/`const` the type its values already have. What the subset cannot express (an open
object, `oneOf`, `minLength`, a tuple, an untyped schema...) is reported instead of approximated:
the adapter then sends the caller's schema with `strict: false` and says so, and postprocess
validates the answer against the caller's schema.

`strip_added_nulls` undoes the nullability on the parsed answer: a `null` for an optional property
whose own schema does not accept null is the model's way of leaving it out, so the caller sees its
own shape. The same functions serve tool parameter schemas.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.json_schema import resolve_local

SUPPORTED_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6",
                               "uuid"})
MAX_PROPERTIES = 5000
MAX_NESTING = 10
MAX_ENUM_VALUES = 1000

# Keywords the strict subset keeps as they are (constraints the docs list, plus documentation).
_KEPT = frozenset({
    "type", "enum", "const", "description", "title", "pattern", "format", "multipleOf", "minimum",
    "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems"})
# Keywords that constrain nothing: left out of the strict schema.
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "$anchor", "default", "examples", "example",
                          "deprecated", "readOnly", "writeOnly"})
# Handled structurally below.
_STRUCTURAL = frozenset({"properties", "required", "additionalProperties", "items", "anyOf", "allOf",
                         "$ref", "$defs", "definitions"})
_SCALARS = frozenset({"string", "number", "integer", "boolean"})
_REF_HOPS = 32          # a chain of $refs longer than this is treated as a cycle
_DATA_DEPTH = 64        # the answer is mapped back this deep, and left as it is below
# Work caps: inlining `$ref`s and trying union branches can grow exponentially with a hostile
# schema, and these run in a worker every tenant shares. Past a cap the schema is not strict (or the
# answer is left as it is): the result stays correct, only less convenient.
MAX_CONVERTED_NODES = 20_000
MAX_SCHEMA_DEPTH = 64           # nested schemas of any kind (objects are limited to 10 by OpenAI)
_NULL_CHECK_VISITS = 5_000     # shared by every null check of one conversion or one answer
_STRIP_VISITS = 20_000
_STRIP_UNION_TRIES = 200


@dataclass(frozen=True)
class StrictSchema:
    """What to send: `schema` is in the strict subset when `strict`; else it is the caller's own and
    `reason` says what the subset could not express."""
    schema: dict
    strict: bool
    reason: str | None = None

    @property
    def warning(self) -> str | None:
        """What the caller is told when strict mode could not be used."""
        if self.strict:
            return None
        return (f"The schema uses what strict mode cannot express ({self.reason}): it was sent with strict "
                "false and the answer validated against it.")


class _Inexpressible(Exception):
    """A schema feature the strict subset has no way to say."""


def to_strict(schema: dict) -> StrictSchema:
    """The caller's schema for `strict: true` if the subset can express it (pure; never mutates)."""
    try:
        return StrictSchema(_Converter(schema).root(), True)
    except _Inexpressible as why:
        return StrictSchema(schema, False, str(why))


class _Converter:
    def __init__(self, root: dict):
        self.source = root
        self.properties = 0
        self.enum_values = 0
        self.nodes = 0
        self.depth = 0
        self.null_checks = [_NULL_CHECK_VISITS]

    def root(self) -> dict:
        node = self.source
        if not isinstance(node, dict):
            raise _Inexpressible("the schema is not an object")
        if "anyOf" in node and "properties" not in node:
            raise _Inexpressible("the root is an anyOf (it must be an object)")
        out = self.node(node, nesting=0, inlining=())
        if out.get("type") != "object":
            raise _Inexpressible("the root is not an object")
        return out

    def node(self, node, *, nesting: int, inlining: tuple[str, ...]) -> dict:
        self.nodes += 1
        if self.nodes > MAX_CONVERTED_NODES:
            raise _Inexpressible("a schema this large once its references are inlined")
        if self.depth >= MAX_SCHEMA_DEPTH:
            raise _Inexpressible(f"schemas nested more than {MAX_SCHEMA_DEPTH} deep")
        self.depth += 1
        try:
            return self._node(node, nesting=nesting, inlining=inlining)
        finally:
            self.depth -= 1

    def _node(self, node, *, nesting: int, inlining: tuple[str, ...]) -> dict:
        if not isinstance(node, dict):
            raise _Inexpressible("a boolean schema")
        node = self._merged_all_of(node)
        ref = node.get("$ref")
        if isinstance(ref, str) and set(node) - {"$ref"} - _ANNOTATIONS:
            return self._inlined(node, ref, nesting, inlining)
        unknown = sorted(set(node) - _KEPT - _ANNOTATIONS - _STRUCTURAL)
        if unknown:
            raise _Inexpressible(", ".join(unknown))
        if "format" in node and node["format"] not in SUPPORTED_FORMATS:
            raise _Inexpressible(f"format {node['format']!r}")
        if "enum" in node:
            self.enum_values += len(node["enum"]) if isinstance(node["enum"], list) else 0
            if self.enum_values > MAX_ENUM_VALUES:
                raise _Inexpressible(f"more than {MAX_ENUM_VALUES} enum values")
        out = {k: v for k, v in node.items() if k in _KEPT}
        if isinstance(ref, str):
            out["$ref"] = _checked_ref(ref)
        elif "type" not in node and "anyOf" not in node:
            out["type"] = _type_of_values(node)     # strict mode wants a type on every schema
        if node.get("type") == "array" and "items" not in node:
            raise _Inexpressible("an array with no items schema (any items)")
        if "items" in node:
            if not isinstance(node["items"], dict):
                raise _Inexpressible("items that is not a single schema")
            out["items"] = self.node(node["items"], nesting=nesting + 1, inlining=inlining)
        if "anyOf" in node:
            out["anyOf"] = [self.node(sub, nesting=nesting, inlining=inlining) for sub in node["anyOf"]]
        if _is_object(node):
            out.update(self._object(node, nesting + 1, inlining))
        elif "required" in node or "additionalProperties" in node:
            raise _Inexpressible("object keywords on a schema that is not an object")
        for where in ("$defs", "definitions"):
            if isinstance(node.get(where), dict):
                out[where] = {name: self.node(sub, nesting=nesting, inlining=inlining)
                              for name, sub in node[where].items()}
        return out

    def _object(self, node: dict, nesting: int, inlining: tuple[str, ...]) -> dict:
        if nesting > MAX_NESTING:
            raise _Inexpressible(f"objects nested more than {MAX_NESTING} deep")
        closed = node.get("additionalProperties", False)
        if closed is not False:
            raise _Inexpressible("additionalProperties other than false")
        properties = node.get("properties") or {}
        if not properties and "additionalProperties" not in node:
            raise _Inexpressible("an object with no listed properties (any object)")
        self.properties += len(properties)
        if self.properties > MAX_PROPERTIES:
            raise _Inexpressible(f"more than {MAX_PROPERTIES} properties")
        required = set(node.get("required") or ())
        if required - set(properties):
            raise _Inexpressible("required names a property that is not listed")
        converted = {}
        for name, sub in properties.items():
            strict_sub = self.node(sub, nesting=nesting, inlining=inlining)
            if name not in required and not accepts_null(sub, self.source, self.null_checks):
                strict_sub = _nullable(strict_sub)
            converted[name] = strict_sub
        return {"type": node.get("type", "object"), "properties": converted, "required": list(properties),
                "additionalProperties": False}

    def _merged_all_of(self, node: dict) -> dict:
        """A one-entry allOf is its entry (the SDK merges it the same way); more is inexpressible."""
        all_of = node.get("allOf")
        if all_of is None:
            return node
        if not isinstance(all_of, list) or len(all_of) != 1 or not isinstance(all_of[0], dict):
            raise _Inexpressible("allOf")
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return {**rest, **all_of[0]}

    def _inlined(self, node: dict, ref: str, nesting: int, inlining: tuple[str, ...]) -> dict:
        """A `$ref` with siblings is replaced by its target, the siblings winning (SDK behaviour)."""
        if ref in inlining:
            raise _Inexpressible("a recursive $ref with sibling keywords")
        target = resolve_local(self.source, _checked_ref(ref))
        if not isinstance(target, dict):
            raise _Inexpressible(f"$ref {ref!r} that is not a schema object")
        merged = {**{k: v for k, v in target.items() if k not in ("$defs", "definitions")},
                  **{k: v for k, v in node.items() if k != "$ref"}}
        return self.node(merged, nesting=nesting, inlining=inlining + (ref,))


_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (type(None), "null"))


def _type_of_values(node: dict):
    """The type an `enum` or `const` already implies (so adding it changes nothing); a schema with
    neither and no type accepts anything, which strict mode cannot say."""
    if "enum" in node and isinstance(node["enum"], list) and node["enum"]:
        values = node["enum"]
    elif "const" in node:
        values = [node["const"]]
    elif "properties" in node:
        return "object"
    else:
        raise _Inexpressible("a schema with no type")
    names = []
    for value in values:
        name = next((n for cls, n in _JSON_TYPES if type(value) is cls), None)
        if name is None:
            raise _Inexpressible("an enum of objects or arrays")
        if name not in names:
            names.append(name)
    if "integer" in names and "number" in names:
        names.remove("integer")
    return names[0] if len(names) == 1 else names


def _checked_ref(ref: str) -> str:
    if ref != "#" and not ref.startswith("#/"):
        raise _Inexpressible(f"$ref {ref[:100]!r} (only local references)")
    return ref


def _is_object(node: dict) -> bool:
    types = node.get("type")
    return types == "object" or isinstance(types, list) and "object" in types or "properties" in node


def _nullable(node: dict) -> dict:
    """`T` -> T or null. A plain scalar `type` gets "null" added (the docs' own example); anything
    else (objects, arrays, enum, const, $ref, anyOf) becomes `anyOf: [T, {"type": "null"}]`, which is
    what the SDK sends for an Optional field."""
    types = node.get("type")
    names = [types] if isinstance(types, str) else types if isinstance(types, list) else None
    if names and set(names) <= _SCALARS and not ({"enum", "const"} & node.keys()):
        return {**node, "type": [*names, "null"]}
    if set(node) == {"anyOf"}:
        return {"anyOf": [*node["anyOf"], {"type": "null"}]}
    return {"anyOf": [node, {"type": "null"}]}


def _deref(node, root: dict):
    """Follow a node's `$ref` chain (a ref with siblings is taken as its target, as in the SDK)."""
    for _ in range(_REF_HOPS):
        if not isinstance(node, dict) or not isinstance(node.get("$ref"), str):
            return node
        target = resolve_local(root, node["$ref"])
        if target is None:
            return node
        node = target
    return None


def accepts_null(node, root: dict, budget: list[int] | None = None) -> bool:
    """Whether `null` satisfies the schema, judged from its structure. An error either way is
    harmless: a null we think is excluded only makes the property nullable (and null is then read
    as "absent"); one we think is allowed keeps the property as strict as the caller wrote it."""
    return _accepts_null(node, root, _REF_HOPS, budget if budget is not None else [_NULL_CHECK_VISITS])


def _accepts_null(node, root: dict, hops: int, budget: list[int]) -> bool:
    budget[0] -= 1
    if hops <= 0 or budget[0] < 0:
        return False
    if isinstance(node, bool):
        return node
    if not isinstance(node, dict):
        return False
    if isinstance(node.get("$ref"), str):
        target = resolve_local(root, node["$ref"])
        if target is not None and not _accepts_null(target, root, hops - 1, budget):
            return False
    types = node.get("type")
    if isinstance(types, str) and types != "null" or isinstance(types, list) and "null" not in types:
        return False
    if "enum" in node and None not in (node["enum"] or ()):
        return False
    if "const" in node and node["const"] is not None:
        return False
    for key in ("anyOf", "oneOf"):
        branches = node.get(key)
        if isinstance(branches, list) and not any(_accepts_null(s, root, hops - 1, budget) for s in branches):
            return False
    branches = node.get("allOf")
    return not isinstance(branches, list) or all(_accepts_null(s, root, hops - 1, budget) for s in branches)


def strip_added_nulls(data, schema: dict, validator=None):
    """The answer without the nulls that stand for an optional property left out.

    A key is dropped only when its value is null, the property is optional, and its own schema does
    not accept null: then the null cannot be valid for the caller and can only mean "absent". For
    `anyOf`/`oneOf`, the first branch that the mapped value satisfies is used, which needs
    `validator` (a jsonschema validator of the caller's whole schema); without one, unions are left
    as they are. Returns a new value; `data` is not changed.
    """
    return _Stripper(schema, validator).walk(data, schema, 0)


class _Stripper:
    def __init__(self, root: dict, validator):
        self.root = root
        self.validator = validator
        self.visits = _STRIP_VISITS
        self.null_checks = [_NULL_CHECK_VISITS]
        self.union_tries = _STRIP_UNION_TRIES

    def walk(self, data, node, depth: int):
        self.visits -= 1
        node = _deref(node, self.root)
        if not isinstance(node, dict) or depth > _DATA_DEPTH or self.visits < 0:
            return data
        for sub in node.get("allOf") or ():
            data = self.walk(data, sub, depth + 1)
        if isinstance(data, dict):
            data = self._object(data, node, depth)
        elif isinstance(data, list):
            data = self._array(data, node, depth)
        for key in ("anyOf", "oneOf"):
            if isinstance(node.get(key), list) and self.validator is not None:
                data = self._union(data, node[key], depth)
        return data

    def _object(self, data: dict, node: dict, depth: int) -> dict:
        properties = node.get("properties") if isinstance(node.get("properties"), dict) else {}
        required = set(node.get("required") or ())
        extra = node.get("additionalProperties")
        out = {}
        for key, value in data.items():
            if key in properties:
                if value is None and key not in required \
                        and not accepts_null(properties[key], self.root, self.null_checks):
                    continue
                out[key] = self.walk(value, properties[key], depth + 1)
            elif isinstance(extra, dict):
                out[key] = self.walk(value, extra, depth + 1)
            else:
                out[key] = value
        return out

    def _array(self, data: list, node: dict, depth: int) -> list:
        prefix = node.get("prefixItems") if isinstance(node.get("prefixItems"), list) else []
        items = node.get("items")
        out = []
        for i, value in enumerate(data):
            sub = prefix[i] if i < len(prefix) else items if isinstance(items, dict) else None
            out.append(self.walk(value, sub, depth + 1) if sub is not None else value)
        return out

    def _union(self, data, branches: list, depth: int):
        for branch in branches:
            self.union_tries -= 1
            if self.union_tries < 0:
                return data
            try:
                candidate = self.walk(data, branch, depth + 1)
                if self.validator.evolve(schema=branch).is_valid(candidate):
                    return candidate
            except RecursionError:      # a branch that refers to itself without end matches nothing
                self.union_tries = 0
        return data
