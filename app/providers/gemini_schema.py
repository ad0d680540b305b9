"""A call's structured output as Gemini's `generationConfig` takes it, and a caller's JSON Schema as
`responseJsonSchema` (and a tool's `parametersJsonSchema`), as pure translations.

Wire facts (../shared/specs/gemini/generative_service.proto `GenerationConfig`): `responseJsonSchema`
is JSON Schema of which only a listed set of keywords is supported; `$ref` and `$defs` work (cyclic
refs are unrolled "to a limited degree"), but "if `$ref` is set on a sub-schema, no other
properties, except for those starting as a `$`, may be set". The other form, `responseSchema` (the
proto's OpenAPI 3.0 subset), is not sent: every recorded request of the catalog's Gemini models uses
`responseJsonSchema` (see _schema_config).

The translation reports the constraints it had to leave out, so the adapter can say so; when the
call is strict, postprocess still validates the answer against the caller's full schema.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.calls import Call
from app.errors import ValidationError
from app.json_schema import reachable_refs, resolve_local
from app.providers.common import schema_instruction

SCHEMA_FIELD = "response_format.json_schema.schema"
JSON_MIME = "application/json"

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


@dataclass(frozen=True)
class Translation:
    schema: dict
    dropped: tuple[str, ...] = ()    # constraints the schema sent no longer carries


def to_response_json_schema(schema: dict) -> Translation:
    """The caller's schema for `responseJsonSchema`: unsupported keywords out, `$ref`s kept."""
    cleaner = _JsonSchemaCleaner(schema)
    return Translation(cleaner.clean(cleaner.root), tuple(sorted(cleaner.dropped)))


# -- generationConfig ------------------------------------------------------------------------------
def _schema_config(fmt, warnings: list[str]) -> dict:
    """`responseJsonSchema`, never `responseSchema` (the proto's OpenAPI subset).

    Every recorded structured-output request in fixtures/test_google for gemini-2.0-flash and
    gemini-2.5-flash (nested models, $defs/$ref, recursive refs, integer enums, anyOf-null,
    additionalProperties, prefixItems) uses `responseJsonSchema` and got a 200, so current models take
    JSON Schema directly and keep $ref, nullability and tuples that the OpenAPI subset loses. Only the
    oldest recording (native_output_multiple, 2.0-flash) used `responseSchema`. The proto in
    ../shared/specs names the field's JSON form `_responseJsonSchema`; the recordings, google-genai
    and the google-ai-generativelanguage 0.12.1 protos all use `responseJsonSchema`.
    """
    translated = to_response_json_schema(fmt.schema)
    if translated.dropped:
        warnings.append(
            "Gemini does not support these JSON Schema keywords, which were left out of the schema sent: "
            + ", ".join(translated.dropped) + (
                "; the answer was still validated against the full schema." if fmt.strict else "."))
    return {"responseMimeType": JSON_MIME, "responseJsonSchema": translated.schema}


def structured_config(call: Call, model, warnings: list[str]) -> tuple[dict, str | None]:
    """(generationConfig entries, extra system instruction) for the call's response_format."""
    fmt, caps = call.response_format, model.capabilities
    if fmt is None:
        return {}, None
    if fmt.type == "json_schema" and fmt.schema is not None and caps.json_schema:
        return _schema_config(fmt, warnings), None
    if fmt.type == "json_schema":
        warnings.append("This model has no native JSON-schema mode: the schema was put in the prompt "
                        "and the answer validated against it.")
        instruction = schema_instruction(fmt)
    else:
        instruction = None
    if caps.json_object:
        return {"responseMimeType": JSON_MIME}, instruction
    warnings.append("This model has no JSON mode: JSON was asked for in the prompt.")
    return {}, schema_instruction(fmt)


# -- $ref resolution -------------------------------------------------------------------------------
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
            self._recursive[ref] = ref in reachable_refs(self.target(ref), self.target)
        return self._recursive[ref]



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
