"""Anthropic structured output, as a pure translation: a caller's JSON Schema as the native
`output_config.format` (on the models the catalog marks `structured: "native"`, when the schema fits
the subset it compiles) or as a single forced tool whose input is the answer.

Wire facts: ../shared/specs/anthropic/build-with-claude_structured-outputs.md ("JSON Schema
limitations", "Schema complexity limits").
"""
from __future__ import annotations

from dataclasses import dataclass

from app.calls import Call
from app.json_schema import reachable_refs, resolve_local

# structured-outputs.md "JSON Schema limitations": what output_config.format cannot express. A schema
# using any of these goes the forced-tool way instead, where the model sees the schema whole.
_UNSUPPORTED_KEYWORDS = frozenset({
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
    "maxItems", "uniqueItems", "contains", "minContains", "maxContains", "minProperties", "maxProperties",
    "patternProperties", "propertyNames", "dependentRequired", "dependentSchemas", "unevaluatedProperties",
    "unevaluatedItems", "prefixItems", "oneOf", "not", "if", "then", "else"})
_SUPPORTED_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4",
                                "ipv6", "uuid"})
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "allOf")


class NotNative(Exception):
    """A schema feature Anthropic's native structured output rejects with a 400."""


@dataclass(frozen=True)
class Structured:
    """How a call's structured output is asked for. build_request sends it, parse_response recomputes
    it (it is a pure function of the call and the model) to know which tool_use block is the answer."""
    native_schema: dict | None = None   # output_config.format.schema
    tool: dict | None = None            # the single forced tool whose input is the answer
    wrapped: bool = False               # a non-object schema sits under "value" (tool input must be an object)
    warning: str | None = None

    def request_fields(self) -> dict:
        if self.native_schema is not None:
            return {"output_config": {"format": {"type": "json_schema", "schema": self.native_schema}}}
        if self.tool is not None:
            return {"tools": [self.tool], "tool_choice": {"type": "tool", "name": self.tool["name"]}}
        return {}


def _close_objects(node):
    """The schema as output_config needs it: every object `additionalProperties: false` (required;
    anything else is a 400). Raises NotNative for what the grammar compiler cannot take."""
    if isinstance(node, list):
        return [_close_objects(n) for n in node]
    if not isinstance(node, dict):
        return node
    unsupported = sorted(_UNSUPPORTED_KEYWORDS & node.keys())
    if unsupported:
        raise NotNative(", ".join(unsupported))
    if node.get("minItems", 0) not in (0, 1):
        raise NotNative("minItems above 1")
    if "format" in node and node["format"] not in _SUPPORTED_FORMATS:
        raise NotNative(f"format {node['format']!r}")
    if node.get("additionalProperties", False) is not False:
        raise NotNative("additionalProperties other than false")
    if node.get("type") == "object" and not node.get("properties") and "additionalProperties" not in node:
        # closing it would turn "any object" into "only {}": the forced tool keeps it open
        raise NotNative("an object with no listed properties")
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#/"):
        raise NotNative("a recursive or external $ref")
    if any(isinstance(sub, dict) and "$ref" in sub for sub in node.get("allOf") or ()):
        raise NotNative("allOf with $ref")
    closed = {}
    for key, value in node.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            closed[key] = {name: _close_objects(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS or key == "items":
            closed[key] = _close_objects(value)
        else:
            closed[key] = value                 # enum, const, default, description...: data, not schemas
    types = node.get("type")
    if (types == "object" or isinstance(types, list) and "object" in types or "properties" in node) \
            and "additionalProperties" not in node:
        closed["additionalProperties"] = False
    return closed


def _check_not_recursive(schema: dict) -> None:
    """Recursive schemas are unsupported: refuse any $ref the schema uses that can reach itself
    (definitions it does not use do not count). A `#` ref is not followed: _close_objects refuses it."""
    def target(ref: str):
        return resolve_local(schema, ref) if ref.startswith("#/") else None

    used = reachable_refs({k: v for k, v in schema.items() if k not in ("$defs", "definitions")}, target)
    if any(ref in reachable_refs(target(ref), target) for ref in used):
        raise NotNative("a recursive schema")


# structured-outputs.md "Schema complexity limits": totals across the request's strict schemas.
MAX_OPTIONAL_PARAMETERS = 24
MAX_UNION_PARAMETERS = 16


def _check_complexity(schema: dict) -> None:
    """A schema past the explicit limits is a 400 ("Schema is too complex"): the forced tool, which
    is not compiled into a grammar, takes it instead."""
    optional = unions = 0
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        properties = node.get("properties")
        if isinstance(properties, dict):
            required = set(node.get("required") or ())
            optional += sum(1 for name in properties if name not in required)
            unions += sum(1 for sub in properties.values()
                          if isinstance(sub, dict) and ("anyOf" in sub or isinstance(sub.get("type"), list)))
        stack.extend(v for k, v in node.items() if k not in ("enum", "const", "default", "examples"))
    if optional > MAX_OPTIONAL_PARAMETERS:
        raise NotNative(f"more than {MAX_OPTIONAL_PARAMETERS} optional properties")
    if unions > MAX_UNION_PARAMETERS:
        raise NotNative(f"more than {MAX_UNION_PARAMETERS} properties with union types")


def native_schema(schema: dict) -> dict:
    """The schema rewritten for output_config.format; raises NotNative when it cannot be."""
    _check_not_recursive(schema)
    _check_complexity(schema)
    return _close_objects(schema)


def _answer_tool(call: Call, schema: dict | None) -> tuple[dict, bool]:
    """The forced tool: its input_schema must be an object, so other schemas are wrapped."""
    if schema is None:
        input_schema, wrapped = {"type": "object"}, False      # json_object: an open object
    elif schema.get("type") == "object":
        input_schema, wrapped = schema, False
    else:
        input_schema, wrapped = {"type": "object", "properties": {"value": schema}, "required": ["value"]}, True
    name = (call.response_format.name if call.response_format else None) or "response"
    return {"name": name, "description": "Give your final answer by calling this tool; its input is the answer.",
            "input_schema": input_schema}, wrapped


def structured_output(call: Call, model) -> Structured:
    """Native output_config where the model has it and the schema fits the supported subset; else a
    forced tool. json_object always takes the tool: output_config requires `additionalProperties:
    false` on every object, so "any object" cannot be said natively (structured-outputs.md)."""
    fmt = call.response_format
    if fmt is None:
        return Structured()
    schema = fmt.schema if fmt.type == "json_schema" and fmt.schema is not None else None
    warning = None
    if schema is not None and model.capabilities.structured == "native":
        try:
            return Structured(native_schema=native_schema(schema))
        except NotNative as why:
            warning = (f"Anthropic's native structured output does not support this schema ({why}): it was "
                       "sent as a forced tool instead.")
    tool, wrapped = _answer_tool(call, schema)
    return Structured(tool=tool, wrapped=wrapped, warning=warning)
