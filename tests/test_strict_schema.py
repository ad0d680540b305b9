"""app.strict_schema: a caller's schema in OpenAI's strict subset, and the answer mapped back.

The rules checked here are OpenAI's "Supported schemas" (platform.openai.com/docs/guides/
structured-outputs#supported-schemas): root an object and not anyOf; "All fields must be required";
"additionalProperties: false must always be set in objects"; optional fields emulated "by using a
union type with null"; allOf/not/dependentRequired/dependentSchemas/if/then/else "not yet
supported"; string properties `pattern` and the listed `format`s; number properties multipleOf and
the bounds; array properties minItems/maxItems; 5000 properties, 10 levels of nesting, 1000 enum
values. The reference transformation is the SDK's own (openai-python
`src/openai/lib/_pydantic.py::_ensure_strict_json_schema`, installed with the test tools).
"""
from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from openai.lib._pydantic import _ensure_strict_json_schema

from app.postprocess import validator_for
from app.strict_schema import accepts_null, strip_added_nulls, to_strict

# One schema with everything the acceptance asks for: optional fields, nested objects, enums, arrays.
CONTACT = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Full name"},
        "email": {"type": "string", "format": "email"},
        "age": {"type": "integer", "minimum": 0},
        "plan": {"type": "string", "enum": ["free", "pro"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                    "required": ["city"]},
        "nickname": {"type": ["string", "null"]},
    },
    "required": ["name", "plan"],
}

STRICT_CONTACT = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Full name"},
        "email": {"type": ["string", "null"], "format": "email"},
        "age": {"type": ["integer", "null"], "minimum": 0},
        "plan": {"type": "string", "enum": ["free", "pro"]},
        "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}, "maxItems": 5}, {"type": "null"}]},
        "address": {"anyOf": [
            {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": ["string", "null"]}},
             "required": ["city", "zip"], "additionalProperties": False},
            {"type": "null"}]},
        "nickname": {"type": ["string", "null"]},       # already nullable: left as the caller wrote it
    },
    "required": ["name", "email", "age", "plan", "tags", "address", "nickname"],
    "additionalProperties": False,
}


def assert_openai_strict(schema: dict) -> None:
    """The docs' rules, written independently of the code under test."""
    supported = {"type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf",
                 "$ref", "$defs", "definitions", "description", "title", "pattern", "format", "multipleOf",
                 "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems"}
    assert schema.get("type") == "object" and "anyOf" not in schema, "root must be an object, not anyOf"

    def visit(node, path):
        assert isinstance(node, dict), path
        assert set(node) <= supported, (path, set(node) - supported)
        types = node.get("type")
        if types == "object" or isinstance(types, list) and "object" in types:
            assert node.get("additionalProperties") is False, path
            assert sorted(node.get("required", [])) == sorted(node.get("properties", {})), path
        for name, sub in (node.get("properties") or {}).items():
            visit(sub, f"{path}/properties/{name}")
        for where in ("$defs", "definitions"):
            for name, sub in (node.get(where) or {}).items():
                visit(sub, f"{path}/{where}/{name}")
        if "items" in node:
            visit(node["items"], f"{path}/items")
        for i, sub in enumerate(node.get("anyOf") or ()):
            visit(sub, f"{path}/anyOf/{i}")
    visit(schema, "#")


def test_optional_fields_become_required_and_nullable_nested_enums_arrays_kept():
    form = to_strict(CONTACT)
    assert form.strict and form.reason is None
    assert form.schema == STRICT_CONTACT
    assert_openai_strict(form.schema)
    assert CONTACT["required"] == ["name", "plan"]      # the caller's schema is not changed


def test_the_strict_schema_is_a_valid_json_schema_that_only_narrows_the_callers():
    jsonschema.Draft202012Validator.check_schema(STRICT_CONTACT)
    answer = {"name": "Ada", "email": None, "age": 36, "plan": "pro", "tags": None,
              "address": {"city": "London", "zip": None}, "nickname": None}
    jsonschema.validate(answer, STRICT_CONTACT)
    mapped = strip_added_nulls(answer, CONTACT, validator_for(json.dumps(CONTACT, sort_keys=True)))
    assert mapped == {"name": "Ada", "age": 36, "plan": "pro", "address": {"city": "London"}, "nickname": None}
    jsonschema.validate(mapped, CONTACT)


# Schemas whose every property is required: ours and the SDK's transformation must agree exactly.
SDK_CASES = [
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
    {"type": "object", "properties": {"steps": {"type": "array", "items": {"$ref": "#/$defs/step"}}},
     "required": ["steps"],
     "$defs": {"step": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}}},
    {"type": "object", "properties": {"p": {"$ref": "#/$defs/pt", "description": "where"}}, "required": ["p"],
     "$defs": {"pt": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}}},
    {"type": "object", "properties": {"u": {"anyOf": [{"type": "string"}, {"type": "object", "properties": {
        "k": {"type": "integer"}}, "required": ["k"]}]}}, "required": ["u"]},
    {"type": "object", "properties": {"m": {"allOf": [{"type": "object", "properties": {
        "k": {"type": "integer"}}, "required": ["k"]}]}}, "required": ["m"]},
]


@pytest.mark.parametrize("schema", SDK_CASES)
def test_same_as_the_openai_sdks_own_transformation(schema):
    sdk = _ensure_strict_json_schema(copy.deepcopy(schema), path=(), root=copy.deepcopy(schema))
    ours = to_strict(schema)
    assert ours.strict
    assert json.dumps(ours.schema, sort_keys=True) == json.dumps(sdk, sort_keys=True)
    assert_openai_strict(ours.schema)


def test_recursive_schema_is_kept_with_its_refs():
    tree = {"type": "object", "properties": {"value": {"type": "number"},
                                             "children": {"type": "array", "items": {"$ref": "#"}}},
            "required": ["value"]}
    form = to_strict(tree)
    assert form.strict
    assert form.schema["properties"]["children"] == {
        "anyOf": [{"type": "array", "items": {"$ref": "#"}}, {"type": "null"}]}
    assert_openai_strict(form.schema)


def test_annotations_are_left_out_and_a_null_default_with_them():
    form = to_strict({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                      "properties": {"a": {"type": "string", "default": None, "examples": ["x"]}},
                      "required": ["a"]})
    assert form.schema == {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
                           "additionalProperties": False}


@pytest.mark.parametrize("schema, reason", [
    ({"type": "array", "items": {"type": "string"}}, "the root is not an object"),
    ({"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}}}]}, "the root is an anyOf"),
    ({"type": "object"}, "an object with no listed properties"),
    ({"type": "object", "properties": {"meta": {"type": "object"}}}, "an object with no listed properties"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": True},
     "additionalProperties other than false"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}},
     "additionalProperties other than false"),
    ({"type": "object", "properties": {"a": {"type": "string", "minLength": 2}}}, "minLength"),
    ({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}, "oneOf"),
    ({"type": "object", "properties": {"a": {"type": "string", "format": "uri"}}}, "format 'uri'"),
    ({"type": "object", "properties": {"a": {"type": "array", "prefixItems": [{"type": "string"}]}}},
     "prefixItems"),
    ({"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}, "uniqueItems"),
    ({"type": "object", "properties": {"a": {"allOf": [{"type": "string"}, {"maxLength": 3}]}}}, "allOf"),
    ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "if": {"required": ["a"]}}, "if"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "patternProperties": {"^x": {}}},
     "patternProperties"),
    ({"type": "object", "properties": {"a": True}}, "a boolean schema"),
    ({"type": "object", "properties": {"a": {}}}, "a schema with no type"),
    ({"type": "object", "properties": {"a": {"type": "array"}}}, "an array with no items schema"),
    ({"type": "object", "properties": {"a": {"enum": [{"k": 1}]}}}, "an enum of objects or arrays"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]},
     "required names a property that is not listed"),
    ({"type": "object", "properties": {"a": {"type": "string", "enum": list(map(str, range(1001)))}}},
     "more than 1000 enum values"),
])
def test_what_the_subset_cannot_express_is_reported_and_the_schema_kept(schema, reason):
    form = to_strict(schema)
    assert not form.strict
    assert reason in form.reason
    assert form.schema is schema


def test_an_enum_or_const_without_a_type_gets_the_type_its_values_already_have():
    form = to_strict({"type": "object", "required": ["a", "b", "c"], "properties": {
        "a": {"enum": ["x", "y"]}, "b": {"const": 3}, "c": {"enum": [1, 2.5, None]}}})
    assert form.strict
    assert form.schema["properties"] == {"a": {"enum": ["x", "y"], "type": "string"},
                                         "b": {"const": 3, "type": "integer"},
                                         "c": {"enum": [1, 2.5, None], "type": ["number", "null"]}}


def test_a_strict_schema_is_its_own_strict_form():
    """Schemas already in the subset (what OpenAI's SDK `.parse()` sends on /v1) pass through unchanged."""
    assert to_strict(STRICT_CONTACT) == to_strict(CONTACT)
    assert to_strict(STRICT_CONTACT).schema == STRICT_CONTACT


def test_nesting_and_size_limits():
    deep = {"type": "object", "properties": {"leaf": {"type": "string"}}, "required": ["leaf"]}
    for _ in range(9):
        deep = {"type": "object", "properties": {"n": deep}, "required": ["n"]}
    assert to_strict(deep).strict                       # 10 levels
    deeper = {"type": "object", "properties": {"n": deep}, "required": ["n"]}
    assert "nested more than 10" in to_strict(deeper).reason
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5001)}}
    assert "more than 5000 properties" in to_strict(wide).reason


@pytest.mark.parametrize("schema, nullable", [
    ({"type": "string"}, False), ({"type": ["string", "null"]}, True), ({"enum": ["a", None]}, True),
    ({"enum": ["a"]}, False), ({"const": None}, True), ({}, True), (True, True), (False, False),
    ({"anyOf": [{"type": "string"}, {"type": "null"}]}, True), ({"anyOf": [{"type": "string"}]}, False),
    ({"$ref": "#/$defs/n"}, True), ({"$ref": "#/$defs/s"}, False),
])
def test_accepts_null(schema, nullable):
    root = {"$defs": {"n": {"type": "null"}, "s": {"type": "string"}}}
    assert accepts_null(schema, root) is nullable


def test_strip_added_nulls_keeps_required_and_nullable_and_follows_unions_and_refs():
    schema = {"type": "object", "required": ["must"],
              "properties": {"must": {"type": ["string", "null"]}, "opt": {"type": "string"},
                             "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
                             "either": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/item"}]}},
              "$defs": {"item": {"type": "object", "properties": {"k": {"type": "integer"}, "v": {"type": "string"}},
                                 "required": ["k"]}}}
    data = {"must": None, "opt": None, "items": [{"k": 1, "v": None}, {"k": 2, "v": "x"}],
            "either": {"k": 3, "v": None}}
    validator = validator_for(json.dumps(schema, sort_keys=True))
    assert strip_added_nulls(data, schema, validator) == {
        "must": None, "items": [{"k": 1}, {"k": 2, "v": "x"}], "either": {"k": 3}}
    assert data["opt"] is None                              # not mutated
    assert strip_added_nulls(data, schema)["either"] == {"k": 3, "v": None}   # no validator: unions as they are


def test_strip_added_nulls_stops_at_its_depth_limit():
    schema = {"type": "object", "properties": {"next": {"$ref": "#"}, "x": {"type": "string"}}}
    assert strip_added_nulls({"next": {"x": None}}, schema) == {"next": {}}
    data: dict = {"x": None}
    for _ in range(100):
        data = {"next": data}
    node = strip_added_nulls(data, schema)
    for _ in range(100):
        node = node["next"]
    assert node == {"x": None}      # below the limit the answer is left as it is (validation still judges it)


def test_without_added_nulls_is_the_one_call_for_tool_arguments_too():
    from app.postprocess import without_added_nulls
    arguments = {"name": "Ada", "email": None, "age": None, "plan": "free", "tags": ["x"], "address": None,
                 "nickname": None}
    assert without_added_nulls(arguments, CONTACT) == {"name": "Ada", "plan": "free", "tags": ["x"],
                                                      "nickname": None}


def test_hostile_schemas_are_bounded_not_expanded():
    """These run in a worker every tenant shares: exponential inlining and deep nesting stop at a cap
    (the schema then goes best-effort), and mapping an answer back stops at its own."""
    defs = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}", "description": "x"},
                                {"$ref": f"#/$defs/d{i + 1}", "title": "y"}]} for i in range(30)}
    defs["d30"] = {"type": "string"}
    laughs = {"type": "object", "properties": {"root": {"$ref": "#/$defs/d0", "description": "r"}},
              "required": ["root"], "$defs": defs}
    assert "this large once its references are inlined" in to_strict(laughs).reason
    deep: dict = {"type": "string"}
    for _ in range(200):
        deep = {"anyOf": [deep]}
    assert "nested more than 64" in to_strict({"type": "object", "properties": {"a": deep}, "required": ["a"]}).reason
    unions = {"anyOf": [{"$ref": "#"}, {"$ref": "#"}, {"type": "object", "properties": {"x": {"type": "string"}}}]}
    data: dict = {"x": None}
    for _ in range(40):
        data = {"x": None, "n": data}
    unions["anyOf"][2]["properties"]["n"] = {"$ref": "#"}
    # `{"anyOf": [{"$ref": "#"}, ...]}` refers to itself without consuming anything: jsonschema
    # recurses without end on it, so that branch simply matches nothing here.
    assert strip_added_nulls(data, unions, validator_for(json.dumps(unions, sort_keys=True))) == data


def test_a_schema_that_refers_to_itself_without_end_is_a_clear_502_not_a_crash():
    from app.calls import Completion, ResponseFormat, Usage
    from app.errors import InvalidStructuredOutput
    from app.postprocess import parse_structured
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/loop"}},
              "$defs": {"loop": {"anyOf": [{"$ref": "#/$defs/loop"}, {"type": "string"}]}}}
    completion = Completion(text='{"a": 1}', finish_reason="stop", usage=Usage(), model="m")
    with pytest.raises(InvalidStructuredOutput, match="reference cycle that matches nothing"):
        parse_structured(completion, ResponseFormat("json_schema", "x", schema, True), "openai")
