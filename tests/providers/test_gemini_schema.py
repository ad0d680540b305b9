"""JSON Schema -> Gemini `responseJsonSchema`, as pure translation tables.

Most input schemas are the real ones pydantic-ai sent to Gemini: shapes from
../shared/specs/fixtures/test_google/test_google_*_native_output*.yaml (pydantic-ai, MIT).
"""
from __future__ import annotations

import copy

import pytest

from app.errors import ValidationError
from app.providers.gemini_schema import JSON_SCHEMA_KEYWORDS, to_response_json_schema

def assert_json_schema_subset(node, path="(root)"):
    """Every keyword one the proto comment on `response_json_schema` lists as supported."""
    if isinstance(node, bool):
        return
    assert set(node) <= JSON_SCHEMA_KEYWORDS, f"{path}: {set(node) - JSON_SCHEMA_KEYWORDS}"
    if "$ref" in node:
        assert all(k.startswith("$") for k in node), f"{path}: $ref with non-$ siblings"
    for key in ("properties", "$defs"):
        for name, sub in node.get(key, {}).items():
            assert_json_schema_subset(sub, f"{path}.{key}.{name}")
    for key in ("anyOf", "oneOf", "prefixItems"):
        for i, sub in enumerate(node.get(key, [])):
            assert_json_schema_subset(sub, f"{path}.{key}[{i}]")
    for key in ("items", "additionalProperties"):
        if key in node:
            assert_json_schema_subset(node[key], f"{path}.{key}")


# -- real-world schemas -----------------------------------------------------------------------------
NESTED = {  # test_google_nested_models_with_native_output.yaml
    "$defs": {
        "MiddleModel": {"description": "Represents the middle nested level.", "properties": {
            "items": {"description": "List of nested items", "items": {"$ref": "#/$defs/NestedModel"}, "type": "array"},
            "title": {"description": "Title of the page", "type": "string"}},
            "required": ["title", "items"], "title": "MiddleModel", "type": "object"},
        "NestedModel": {"description": "Represents the deepest nested level.", "properties": {
            "name": {"description": "Name of the item", "type": "string"},
            "value": {"description": "Value of the item", "type": "integer"}},
            "required": ["name", "value"], "title": "NestedModel", "type": "object"}},
    "description": "Represents the top-level structure.",
    "properties": {"name": {"description": "Name of the collection", "type": "string"},
                   "pages": {"description": "List of pages", "items": {"$ref": "#/$defs/MiddleModel"}, "type": "array"}},
    "required": ["name", "pages"], "title": "TopModel", "type": "object"}

TREE = {  # test_google_recursive_schema_native_output.yaml
    "$defs": {"TreeNode": {"description": "A node in a tree structure.", "properties": {
        "children": {"default": [], "items": {"$ref": "#/$defs/TreeNode"}, "type": "array"},
        "value": {"type": "string"}}, "required": ["value"], "title": "TreeNode", "type": "object"}},
    "$ref": "#/$defs/TreeNode", "title": "TreeNode"}

OPTIONAL = {  # test_google_optional_fields_native_output.yaml
    "description": "A city and its country.",
    "properties": {"city": {"type": "string"},
                   "country": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
                   "population": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}},
    "required": ["city"], "title": "CityLocation", "type": "object"}

INT_ENUM = {  # test_google_integer_enum_native_output.yaml
    "$defs": {"Priority": {"enum": [1, 2, 3], "title": "Priority", "type": "integer"}},
    "description": "A task with a priority level.",
    "properties": {"name": {"type": "string"}, "priority": {"$ref": "#/$defs/Priority"}},
    "required": ["name", "priority"], "title": "Task", "type": "object"}

PETS = {  # test_google_discriminated_union_native_output.yaml
    "$defs": {
        "Cat": {"properties": {"meow_volume": {"type": "integer"},
                               "pet_type": {"default": "cat", "enum": ["cat"], "type": "string"}},
                "required": ["meow_volume"], "title": "Cat", "type": "object"},
        "Dog": {"properties": {"bark_volume": {"type": "integer"},
                               "pet_type": {"default": "dog", "enum": ["dog"], "type": "string"}},
                "required": ["bark_volume"], "title": "Dog", "type": "object"}},
    "description": "A response containing a pet.",
    "properties": {"pet": {"oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]}},
    "required": ["pet"], "title": "PetResponse", "type": "object"}

METADATA = {  # test_google_dict_with_additional_properties_native_output.yaml
    "description": "A response with configuration metadata.",
    "properties": {"metadata": {"additionalProperties": {"type": "string"}, "type": "object"},
                   "name": {"type": "string"}},
    "required": ["name", "metadata"], "title": "ConfigResponse", "type": "object"}

POINT = {  # test_google_prefix_items_native_output.yaml
    "description": "A 2D coordinate with latitude and longitude.",
    "properties": {"point": {"maxItems": 2, "minItems": 2, "prefixItems": [{"type": "number"}, {"type": "number"}],
                             "type": "array"}},
    "required": ["point"], "title": "Coordinate", "type": "object"}

DECIMAL = {  # test_google_decimal_native_output.yaml
    "properties": {"amount": {"anyOf": [{"type": "number"},
                                        {"pattern": "^(?!^[-+.]*$)[+-]?0*\\d*\\.?\\d*$", "type": "string"}]}},
    "required": ["amount"], "title": "Payment", "type": "object"}

INVOICE = {  # what a workflow author writes by hand (draft 2020-12, zod/JSON-schema style)
    "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://example.com/invoice.json",
    "title": "Invoice", "type": "object", "additionalProperties": False,
    "properties": {
        "number": {"type": "string", "pattern": "^INV-[0-9]+$"},
        "status": {"type": "string", "enum": ["draft", "sent", "paid"]},
        "currency": {"const": "EUR"},
        "customer": {"$ref": "#/$defs/Customer", "description": "Who pays"},
        "lines": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"$ref": "#/$defs/Line"}},
        "note": {"type": ["string", "null"], "maxLength": 200},
    },
    "required": ["number", "status", "customer", "lines", "note"],
    "$defs": {
        "Customer": {"type": "object", "additionalProperties": False,
                     "properties": {"name": {"type": "string"}, "vat": {"type": ["string", "null"]}},
                     "required": ["name", "vat"]},
        "Line": {"type": "object", "properties": {"sku": {"type": "string"},
                                                  "qty": {"type": "integer", "minimum": 1, "exclusiveMaximum": 1000}},
                 "required": ["sku", "qty"]},
    },
}

REAL_WORLD = [NESTED, TREE, OPTIONAL, INT_ENUM, PETS, METADATA, POINT, DECIMAL, INVOICE]


# -- responseJsonSchema -----------------------------------------------------------------------------
@pytest.mark.parametrize("schema", [NESTED, METADATA, POINT])
def test_json_schema_already_in_the_subset_is_sent_unchanged(schema):
    assert to_response_json_schema(schema).schema == schema
    assert to_response_json_schema(schema).dropped == ()


@pytest.mark.parametrize("schema", REAL_WORLD, ids=lambda s: s.get("title", "?"))
def test_json_schema_output_uses_only_listed_keywords_and_does_not_touch_the_input(schema):
    before = copy.deepcopy(schema)
    assert_json_schema_subset(to_response_json_schema(schema).schema)
    assert schema == before


def test_json_schema_drops_unlisted_keywords_and_reports_only_constraints():
    # default (fixture OPTIONAL) is an annotation: dropped silently; the rest of the schema unchanged
    result = to_response_json_schema(OPTIONAL)
    assert result.schema["properties"]["country"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert result.dropped == ()
    result = to_response_json_schema(DECIMAL)
    assert result.schema["properties"]["amount"] == {"anyOf": [{"type": "number"}, {"type": "string"}]}
    assert result.dropped == ("pattern",)


def test_json_schema_invoice_translation_exactly():
    result = to_response_json_schema(INVOICE)
    assert result.schema == {
        "$id": "https://example.com/invoice.json",
        "title": "Invoice", "type": "object", "additionalProperties": False,
        "properties": {
            "number": {"type": "string"},
            "status": {"type": "string", "enum": ["draft", "sent", "paid"]},
            "currency": {"type": "string", "enum": ["EUR"]},
            # a $ref may carry only $-siblings: a non-recursive one is inlined with its description
            "customer": {"type": "object", "additionalProperties": False,
                         "properties": {"name": {"type": "string"}, "vat": {"type": ["string", "null"]}},
                         "required": ["name", "vat"], "description": "Who pays"},
            "lines": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/Line"}},
            "note": {"type": ["string", "null"]},
        },
        "required": ["number", "status", "customer", "lines", "note"],
        "$defs": {
            "Customer": {"type": "object", "additionalProperties": False,
                         "properties": {"name": {"type": "string"}, "vat": {"type": ["string", "null"]}},
                         "required": ["name", "vat"]},
            "Line": {"type": "object", "properties": {"sku": {"type": "string"},
                                                      "qty": {"type": "integer", "minimum": 1}},
                     "required": ["sku", "qty"]},
        },
    }
    assert result.dropped == ("exclusiveMaximum", "maxLength", "pattern", "uniqueItems")


def test_json_schema_keeps_recursive_refs_and_strips_their_siblings():
    result = to_response_json_schema(TREE)
    assert result.schema == {"$defs": {"TreeNode": {
        "description": "A node in a tree structure.",
        "properties": {"children": {"items": {"$ref": "#/$defs/TreeNode"}, "type": "array"},
                       "value": {"type": "string"}},
        "required": ["value"], "title": "TreeNode", "type": "object"}}, "$ref": "#/$defs/TreeNode"}
    assert result.dropped == ()


def test_json_schema_recursive_ref_with_a_constraint_sibling_reports_it():
    schema = {"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N", "minProperties": 1}}}},
              "$ref": "#/$defs/N"}
    result = to_response_json_schema(schema)
    assert result.schema["$defs"]["N"]["properties"]["next"] == {"$ref": "#/$defs/N"}
    assert result.dropped == ("minProperties",)


def test_json_schema_recursion_through_properties_named_like_keywords_is_still_seen():
    # properties called "default" and "enum" are schemas, not keyword values: missing the cycle would
    # inline A into itself forever
    schema = {"$defs": {"A": {"type": "object", "properties": {"default": {"$ref": "#/$defs/A", "description": "x"},
                                                               "enum": {"$ref": "#/$defs/A", "title": "t"}}}},
              "$ref": "#/$defs/A"}
    assert to_response_json_schema(schema).schema == {
        "$defs": {"A": {"type": "object", "properties": {"default": {"$ref": "#/$defs/A"},
                                                         "enum": {"$ref": "#/$defs/A"}}}}, "$ref": "#/$defs/A"}


def test_json_schema_oneof_refs_kept_and_defaults_dropped():
    result = to_response_json_schema(PETS)
    assert result.schema["properties"]["pet"] == {"oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]}
    assert result.schema["$defs"]["Cat"]["properties"]["pet_type"] == {"enum": ["cat"], "type": "string"}


@pytest.mark.parametrize("given, sent, dropped", [
    ({"const": "EUR"}, {"type": "string", "enum": ["EUR"]}, ()),
    ({"const": 3}, {"type": "integer", "enum": [3]}, ()),
    ({"const": 2.5}, {"type": "number", "enum": [2.5]}, ()),
    ({"type": "string", "const": "x", "description": "d"}, {"type": "string", "enum": ["x"], "description": "d"}, ()),
    ({"const": None}, {"type": "null"}, ()),
    ({"const": True}, {"type": "boolean"}, ("const",)),
    ({"enum": ["a", None]}, {"anyOf": [{"enum": ["a"]}, {"type": "null"}]}, ()),
    ({"type": ["string", "null"], "enum": ["a", None]}, {"anyOf": [{"type": ["string"], "enum": ["a"]}, {"type": "null"}]}, ()),
    ({"enum": [None]}, {"type": "null"}, ()),
    ({"enum": [True, False]}, {}, ("enum",)),
    ({"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
     {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}, ()),
    ({"allOf": [{"$ref": "#/$defs/A"}], "description": "an A"},
     {"type": "object", "properties": {"a": {"type": "string"}}, "description": "an A"}, ()),
    ({"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]},
     {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a", "b"]}, ()),
    ({"type": "object", "patternProperties": {"^x": {}}, "not": {"required": ["y"]}}, {"type": "object"},
     ("not", "patternProperties")),
    ({"type": "string", "format": "date-time", "examples": ["2026-01-01T00:00:00Z"], "$comment": "c"},
     {"type": "string", "format": "date-time"}, ()),
])
def test_json_schema_keyword_rules(given, sent, dropped):
    schema = {"$defs": {"A": {"type": "object", "properties": {"a": {"type": "string"}}}},
              "type": "object", "properties": {"x": given}}
    result = to_response_json_schema(schema)
    assert result.schema["properties"]["x"] == sent
    assert result.dropped == dropped


def test_json_schema_allof_with_a_recursive_part_is_dropped_and_reported():
    schema = {"$defs": {"N": {"type": "object", "properties": {"kids": {"items": {"allOf": [{"$ref": "#/$defs/N"}]}}}}},
              "$ref": "#/$defs/N"}
    result = to_response_json_schema(schema)
    assert result.schema["$defs"]["N"]["properties"]["kids"] == {"items": {}}
    assert result.dropped == ("allOf",)


def test_json_schema_draft7_definitions_become_defs():
    schema = {"definitions": {"A": {"type": "string"}}, "type": "object",
              "properties": {"a": {"$ref": "#/definitions/A"}}}
    assert to_response_json_schema(schema).schema == {
        "type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {"type": "string"}}}


@pytest.mark.parametrize("ref", ["#/$defs/Missing", "https://example.com/other.json", "other.json#/A"])
def test_unresolvable_refs_are_the_callers_error(ref):
    schema = {"type": "object", "properties": {"a": {"$ref": ref, "description": "x"}}}
    with pytest.raises(ValidationError) as info:
        to_response_json_schema(schema)
    assert info.value.status == 400
    assert "response_format.json_schema.schema" in info.value.fields
