"""A caller's JSON Schema in the two forms Gemini's `generationConfig` takes, as pure translations.

Wire facts (../shared/specs/gemini/generative_service.proto `GenerationConfig`, content.proto `Schema`):
- `responseJsonSchema` is JSON Schema of which only a listed set of keywords is supported; `$ref` and
  `$defs` work (cyclic refs are unrolled "to a limited degree"), but "if `$ref` is set on a sub-schema,
  no other properties, except for those starting as a `$`, may be set".
- `responseSchema` is the proto `Schema` message, an OpenAPI 3.0 subset: one upper-case `type`,
  `nullable`, string-only `enum`, no `$ref`, and any field the message lacks is a 400 ("Unknown name
  "$schema" at 'generation_config.response_schema': Cannot find field"), so it is rebuilt field by field.

Both translations report the constraints they had to leave out, so the adapter can say so; when the
call is strict, postprocess still validates the answer against the caller's full schema.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ValidationError
from ..json_pointer import resolve_local

SCHEMA_FIELD = "response_format.json_schema.schema"

# The keywords the proto comment on `response_json_schema` lists as supported (plus propertyOrdering).
JSON_SCHEMA_KEYWORDS = frozenset({
    "$id", "$defs", "$ref", "$anchor", "type", "format", "title", "description", "enum", "items",
    "prefixItems", "minItems", "maxItems", "minimum", "maximum", "anyOf", "oneOf", "properties",
    "additionalProperties", "required", "propertyOrdering"})

# Keywords that do not constrain the answer: leaving them out needs no warning.
ANNOTATIONS = frozenset({
    "$schema", "$comment", "$vocabulary", "$dynamicAnchor", "title", "description", "default",
    "examples", "example", "deprecated", "readOnly", "writeOnly", "contentMediaType", "contentEncoding",
    "contentSchema"})

# A recursive $ref is inlined at most this many times along one path in `responseSchema`.
RECURSION_LIMIT = 3

_OPENAPI_TYPES = {"string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN",
                  "array": "ARRAY", "object": "OBJECT", "null": "NULL"}
# proto `Schema` fields, per type; a field of another type makes Gemini answer 400 ("field predicate
# failed: $type == Type.ARRAY"), and JSON Schema ignores it for other types anyway.
_OPENAPI_COMMON = ("format", "title", "description", "example", "default")
_OPENAPI_BY_TYPE = {
    "STRING": ("minLength", "maxLength", "pattern"),
    "NUMBER": ("minimum", "maximum"),
    "INTEGER": ("minimum", "maximum"),
    "ARRAY": ("minItems", "maxItems"),
    "OBJECT": ("minProperties", "maxProperties"),
}


@dataclass(frozen=True)
class Translation:
    schema: dict
    dropped: tuple[str, ...] = ()    # constraints the schema sent no longer carries


def to_response_json_schema(schema: dict) -> Translation:
    """The caller's schema for `responseJsonSchema`: unsupported keywords out, `$ref`s kept."""
    cleaner = _JsonSchemaCleaner(schema)
    return Translation(cleaner.clean(cleaner.root), tuple(sorted(cleaner.dropped)))


def to_response_schema(schema: dict) -> Translation:
    """The caller's schema as a proto `Schema` for `responseSchema`: every `$ref` inlined."""
    converter = _OpenApiConverter(schema)
    out = converter.convert(converter.root, ())
    if out is _CUT:   # pragma: no cover - the root is never past the recursion limit
        raise ValidationError("The schema cannot be expressed for Gemini.", fields={SCHEMA_FIELD: "unsupported"})
    return Translation(out, tuple(sorted(converter.dropped)))


# -- shared: $ref resolution ----------------------------------------------------------------------
_NOT_SUBSCHEMAS = ("enum", "const", "default", "examples", "example")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")


class _Refs:
    """Local `$ref`s (`#/$defs/X`, `#/definitions/X`, any `#/...` pointer) and which ones recurse."""

    def __init__(self, root: dict):
        self.root = root
        self._recursive: dict[str, bool] = {}

    def target(self, ref: str) -> dict:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise ValidationError(f"Only local $refs (starting with #) can be sent to Gemini; got {ref!r}.",
                                  fields={SCHEMA_FIELD: f"unsupported $ref {ref!r}"})
        node = resolve_local(self.root, ref)
        if node is None:
            raise ValidationError(f"The schema's $ref {ref!r} points nowhere.",
                                  fields={SCHEMA_FIELD: f"unresolvable $ref {ref!r}"})
        if node is True:
            return {}
        if not isinstance(node, dict):
            raise ValidationError(f"The schema's $ref {ref!r} does not point to a schema.",
                                  fields={SCHEMA_FIELD: f"unresolvable $ref {ref!r}"})
        return node

    def is_recursive(self, ref: str) -> bool:
        """Whether the schema `ref` points to can reach `ref` again."""
        if ref not in self._recursive:
            self._recursive[ref] = ref in self._reachable(self.target(ref))
        return self._recursive[ref]

    def _reachable(self, start: dict) -> set[str]:
        seen: set[str] = set()
        stack = [start]
        while stack:
            node = stack.pop()
            if isinstance(node, list):
                stack.extend(node)
                continue
            if not isinstance(node, dict):
                continue
            ref = node.get("$ref")
            if isinstance(ref, str) and ref not in seen:
                seen.add(ref)
                stack.append(self.target(ref))
            for key, value in node.items():
                if key in _SCHEMA_MAPS and isinstance(value, dict):   # names here are not keywords
                    stack.extend(value.values())
                elif key not in _NOT_SUBSCHEMAS:
                    stack.append(value)
        return seen


def _merge_all_of(node: dict, parts: list[dict]) -> dict:
    """`allOf` folded into its parent: properties and required united, the parent's own keys win."""
    merged = {k: v for k, v in node.items() if k != "allOf"}
    for part in parts:
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**value, **merged.get("properties", {})}
            elif key == "required" and isinstance(value, list):
                merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
            else:
                merged.setdefault(key, value)
    return merged


def _literal_type(value) -> str:
    return "string" if isinstance(value, str) else "integer" if isinstance(value, int) else "number"


def _is_enum_literal(value) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


# -- responseJsonSchema -----------------------------------------------------------------------------
class _JsonSchemaCleaner:
    def __init__(self, schema: dict):
        self.root = self._hoist_definitions(schema)
        self.refs = _Refs(self.root)
        self.dropped: set[str] = set()

    @staticmethod
    def _hoist_definitions(schema: dict) -> dict:
        """Draft-7 `definitions` become `$defs` (the keyword Gemini lists), refs rewritten to match."""
        if not isinstance(schema, dict) or "definitions" not in schema:
            return schema

        def rewrite(node):
            if isinstance(node, dict):
                return {k: (v.replace("#/definitions/", "#/$defs/", 1)
                            if k == "$ref" and isinstance(v, str) else rewrite(v)) for k, v in node.items()}
            if isinstance(node, list):
                return [rewrite(v) for v in node]
            return node

        root = {k: v for k, v in schema.items() if k != "definitions"}
        root["$defs"] = {**schema["definitions"], **schema.get("$defs", {})}
        return rewrite(root)

    def clean(self, node):
        if not isinstance(node, dict):
            return node          # boolean schemas are JSON Schema too
        node = self._normalise(node)
        if "$ref" in node:       # only `$` keywords are left beside it
            return {k: ({n: self.clean(sub) for n, sub in v.items()} if k == "$defs" else v)
                    for k, v in node.items()}
        out: dict = {}
        for key, value in node.items():
            if key in ("properties", "$defs"):
                out[key] = {name: self.clean(sub) for name, sub in value.items()}
            elif key in ("anyOf", "oneOf", "prefixItems"):
                out[key] = [self.clean(sub) for sub in value]
            elif key in ("items", "additionalProperties"):
                out[key] = self.clean(value)
            elif key in JSON_SCHEMA_KEYWORDS:
                out[key] = value
            elif key not in ANNOTATIONS:
                self.dropped.add(key)
        return out

    def _normalise(self, node: dict):
        if "allOf" in node:
            parts = [self._deref(p) for p in node["allOf"] if isinstance(p, dict)]
            if any("$ref" in p for p in parts):     # a recursive part cannot be folded in
                self.dropped.add("allOf")
                node = {k: v for k, v in node.items() if k != "allOf"}
            else:
                node = _merge_all_of(node, parts)
        if "const" in node:
            node = self._const(node["const"]) | {k: v for k, v in node.items() if k != "const"}
        if "enum" in node:
            node = self._enum(node)
        if "$ref" in node:
            node = self._ref(node)
        if "items" in node and isinstance(node["items"], list):   # draft-4 tuple form
            node = {k: v for k, v in node.items() if k != "items"} | {"prefixItems": node["items"]}
        return node

    def _deref(self, node: dict) -> dict:
        """A non-recursive `$ref` replaced by what it points to (siblings kept); recursive left as is."""
        ref = node.get("$ref")
        if not isinstance(ref, str) or self.refs.is_recursive(ref):
            return node
        target = self._deref(self.refs.target(ref))
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}

    def _ref(self, node: dict):
        """A `$ref` may carry only `$` siblings: inline it when it can be, else drop the siblings."""
        siblings = [k for k in node if not k.startswith("$")]
        if not siblings:
            return node
        if not self.refs.is_recursive(node["$ref"]):
            return self._normalise(self._deref(node))
        self.dropped.update(k for k in siblings if k not in ANNOTATIONS)
        return {k: v for k, v in node.items() if k.startswith("$")}

    def _const(self, value) -> dict:
        if _is_enum_literal(value):
            return {"type": _literal_type(value), "enum": [value]}
        if value is None:
            return {"type": "null"}
        self.dropped.add("const")     # a boolean or object constant: only its type survives
        return {"type": "boolean"} if isinstance(value, bool) else {}

    def _enum(self, node: dict):
        """Gemini takes `enum` "for strings and numbers": null becomes an anyOf branch."""
        values = node["enum"]
        literals = [v for v in values if _is_enum_literal(v)]
        rest = {k: v for k, v in node.items() if k != "enum"}
        if len(literals) + values.count(None) < len(values):   # booleans, objects: not expressible
            self.dropped.add("enum")
            return rest
        if None not in values:
            return node
        branch = {**rest, "enum": literals}
        if isinstance(branch.get("type"), list):
            types = [t for t in branch.pop("type") if t != "null"]
            if types:
                branch["type"] = types
        return {"anyOf": [branch, {"type": "null"}]} if literals else {**rest, "type": "null"}


# -- responseSchema (OpenAPI 3.0 subset) ----------------------------------------------------------
_CUT = object()   # a recursive branch past RECURSION_LIMIT: the parent leaves it out


class _OpenApiConverter:
    def __init__(self, schema: dict):
        self.root = schema
        self.refs = _Refs(schema)
        self.dropped: set[str] = set()

    def convert(self, node, stack: tuple[str, ...]):
        """One (sub)schema as a proto `Schema`, or _CUT when it is a recursion past the limit."""
        if node is True:
            return {}
        if not isinstance(node, dict):
            self.dropped.add("false schema")
            return {}
        node, stack = self._resolve(node, stack)
        if node is _CUT:
            return _CUT
        if "const" in node:
            node = {k: v for k, v in node.items() if k != "const"} | {"enum": [node["const"]]}
        types, nullable = self._types(node)
        if len(types) > 1:     # ["string", "integer"]: one branch per type
            branches = [self.convert({**node, "type": t.lower()}, stack) for t in types]
            return {"anyOf": [b for b in branches if b is not _CUT]} | ({"nullable": True} if nullable else {})
        out = self._union(node, stack)
        if out is _CUT:
            return _CUT
        branch_type = out.pop("_type", None)
        nullable = out.pop("nullable", False) or nullable
        type_ = types[0] if types else branch_type or self._infer_type(node)
        if type_:
            out["type"] = type_
        self._copy_fields(node, type_, out)
        if type_ in ("ARRAY", None) and self._items(node, stack, out) is _CUT:
            return _CUT
        if type_ in ("OBJECT", None):
            self._properties(node, stack, out)
        if nullable or out.pop("_null_enum", False):
            out["nullable"] = True
        self._note_unsupported(node)
        return out

    def _resolve(self, node: dict, stack: tuple[str, ...]):
        """`$ref` and `allOf` inlined; a ref already RECURSION_LIMIT deep on this path is cut."""
        while "$ref" in node or "allOf" in node:
            if "$ref" in node:
                ref = node["$ref"]
                if stack.count(ref) >= RECURSION_LIMIT:
                    self.dropped.add(f"recursion deeper than {RECURSION_LIMIT} levels")
                    return _CUT, stack
                target = self.refs.target(ref)
                node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
                stack = (*stack, ref)
            else:
                parts = []
                for part in node["allOf"]:
                    part, stack = self._resolve(part, stack) if isinstance(part, dict) else ({}, stack)
                    if part is _CUT:
                        return _CUT, stack
                    parts.append(part)
                node = _merge_all_of(node, parts)
        return node, stack

    @staticmethod
    def _types(node: dict) -> tuple[list[str], bool]:
        raw = node.get("type")
        names = [raw] if isinstance(raw, str) else list(raw or [])
        nullable = "null" in names or node.get("nullable") is True
        types = [_OPENAPI_TYPES.get(t, str(t).upper()) for t in names if t != "null"]
        if not types and names:       # {"type": "null"}
            types = ["NULL"]
            nullable = False
        return types, nullable

    def _union(self, node: dict, stack) -> dict:
        """anyOf/oneOf as `anyOf`; a null branch becomes `nullable`, a lone branch is merged in."""
        branches_raw = node.get("anyOf") or node.get("oneOf")
        if "anyOf" in node and "oneOf" in node:
            self.dropped.add("oneOf")
        if not branches_raw:
            return {}
        branches = [self.convert(b, stack) for b in branches_raw]
        branches = [b for b in branches if b is not _CUT]
        if not branches:
            return _CUT
        real = [b for b in branches if b != {"type": "NULL"}]
        nullable = len(real) < len(branches)
        if len(real) == 1:
            merged = dict(real[0])
            merged["_type"] = merged.pop("type", None)
            return merged | ({"nullable": True} if nullable else {})
        if not real:
            return {"_type": "NULL"}
        return {"anyOf": real} | ({"nullable": True} if nullable else {})

    @staticmethod
    def _infer_type(node: dict) -> str | None:
        if any(k in node for k in ("properties", "required", "additionalProperties")):
            return "OBJECT"
        if "items" in node or "prefixItems" in node:
            return "ARRAY"
        values = node.get("enum")
        if isinstance(values, list) and values:
            kinds = {type(v) for v in values if v is not None}
            if kinds == {str}:
                return "STRING"
            if kinds == {bool}:
                return "BOOLEAN"
            if kinds == {int}:
                return "INTEGER"
            if kinds <= {int, float}:
                return "NUMBER"
        if any(k in node for k in ("minLength", "maxLength", "pattern")):
            return "STRING"
        if any(k in node for k in ("minimum", "maximum")):
            return "NUMBER"
        return None

    def _copy_fields(self, node: dict, type_: str | None, out: dict) -> None:
        names = _OPENAPI_COMMON + (_OPENAPI_BY_TYPE.get(type_, ()) if type_ else
                                   tuple(f for fs in _OPENAPI_BY_TYPE.values() for f in fs))
        for name in names:
            if name in node:
                out[name] = node[name]
        values = node.get("enum")
        if isinstance(values, list):
            if None in values:
                out["_null_enum"] = True
            strings = [v for v in values if v is not None]
            if strings and all(isinstance(v, str) for v in strings) and type_ in ("STRING", None):
                out["enum"] = strings      # the proto's `enum` is `repeated string`
            elif strings:
                self.dropped.add("enum (non-string values)")

    def _items(self, node: dict, stack, out: dict):
        items = node.get("items")
        if isinstance(items, dict) or items is True:
            converted = self.convert(items, stack)
            if converted is _CUT:
                return _CUT
            out["items"] = converted
        elif isinstance(node.get("prefixItems"), list) or isinstance(items, list):
            tuple_items = node.get("prefixItems") if isinstance(node.get("prefixItems"), list) else items
            self.dropped.add("prefixItems")
            variants = []
            for sub in tuple_items:
                converted = self.convert(sub, stack)
                if converted is not _CUT and converted not in variants:
                    variants.append(converted)
            if variants:
                out["items"] = variants[0] if len(variants) == 1 else {"anyOf": variants}
        return None

    def _properties(self, node: dict, stack, out: dict) -> None:
        props = node.get("properties")
        if isinstance(props, dict):
            converted = {name: self.convert(sub, stack) for name, sub in props.items()}
            kept = {name: sub for name, sub in converted.items() if sub is not _CUT}
            out["properties"] = kept
            required = [r for r in node.get("required", []) if r in kept]
            if required:
                out["required"] = required
            # responseSchema answers in alphabetical order unless told otherwise (the SDKs send it too).
            ordering = node.get("propertyOrdering")
            out["propertyOrdering"] = [p for p in ordering if p in kept] if isinstance(ordering, list) \
                else list(kept)
        elif node.get("required"):
            out["required"] = list(node["required"])
        if isinstance(node.get("additionalProperties"), dict) and node["additionalProperties"]:
            self.dropped.add("additionalProperties")

    def _note_unsupported(self, node: dict) -> None:
        handled = {"$ref", "$defs", "definitions", "allOf", "anyOf", "oneOf", "type", "nullable", "enum",
                   "const", "items", "prefixItems", "properties", "required", "propertyOrdering",
                   "additionalProperties", "$id", "$anchor", *_OPENAPI_COMMON,
                   *(f for fs in _OPENAPI_BY_TYPE.values() for f in fs)}
        self.dropped.update(k for k in node if k not in handled and k not in ANNOTATIONS)
