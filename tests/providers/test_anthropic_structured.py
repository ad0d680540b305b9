"""Anthropic structured output: a caller's schema rewritten for the native output_config.format, or
refused (then the adapter sends a forced tool), as pure translation tables.

Limits from ../shared/specs/anthropic/build-with-claude_structured-outputs.md.
"""
from __future__ import annotations

import pytest

from app.providers import anthropic_structured


@pytest.mark.parametrize("schema, native", [
    ({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "object", "properties": {
        "minimum": {"type": "integer"}}}}}},                   # a property *named* minimum is fine
     {"type": "object", "additionalProperties": False, "properties": {"tags": {"type": "array", "items": {
         "type": "object", "additionalProperties": False, "properties": {"minimum": {"type": "integer"}}}}}}),
    ({"type": ["object", "null"], "properties": {}},
     {"type": ["object", "null"], "properties": {}, "additionalProperties": False}),
    ({"anyOf": [{"type": "object", "properties": {"a": {"type": "string", "format": "email"}}}, {"type": "null"}]},
     {"anyOf": [{"type": "object", "properties": {"a": {"type": "string", "format": "email"}},
                 "additionalProperties": False},
                {"type": "null"}]}),
    ({"$ref": "#/$defs/p", "$defs": {"p": {"type": "object", "properties": {"n": {"enum": [{"minimum": 1}]}}}}},
     {"$ref": "#/$defs/p", "$defs": {"p": {"type": "object", "properties": {"n": {"enum": [{"minimum": 1}]}},
                                           "additionalProperties": False}}}),
    ({"type": "array", "items": {"type": "string"}, "minItems": 1},
     {"type": "array", "items": {"type": "string"}, "minItems": 1}),
])
def test_native_schema_closes_every_object(schema, native):
    assert anthropic_structured.native_schema(schema) == native


@pytest.mark.parametrize("schema, reason", [
    ({"type": "string", "maxLength": 5}, "maxLength"),
    ({"type": "array", "minItems": 2}, "minItems above 1"),
    ({"type": "string", "format": "binary"}, "format 'binary'"),
    ({"type": "object", "additionalProperties": True}, "additionalProperties other than false"),
    ({"type": "object", "additionalProperties": {"type": "string"}}, "additionalProperties other than false"),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "oneOf"),
    ({"allOf": [{"$ref": "#/$defs/a"}], "$defs": {"a": {"type": "object"}}}, "allOf with \\$ref"),
    ({"type": "object", "properties": {"child": {"$ref": "#"}}}, "recursive or external"),
    ({"$ref": "https://example.com/s.json"}, "recursive or external"),
    ({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}}}, "a recursive schema"),
])
def test_schemas_native_output_cannot_take(schema, reason):
    with pytest.raises(anthropic_structured.NotNative, match=reason):
        anthropic_structured.native_schema(schema)


def test_an_unused_recursive_definition_does_not_count():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "$defs": {"node": {
        "type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}}}
    native = anthropic_structured.native_schema(schema)
    assert native["additionalProperties"] is False and native["$defs"]["node"]["additionalProperties"] is False


def test_recursion_through_any_local_pointer_is_refused():
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {
        "b": {"$ref": "#/properties/a"}}}}}
    with pytest.raises(anthropic_structured.NotNative, match="a recursive schema"):
        anthropic_structured.native_schema(schema)
