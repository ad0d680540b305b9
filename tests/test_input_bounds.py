"""Checks that happen before any provider is paid: caller schemas within the providers' published
limits (app/schema_bounds.py), no reference loop or remote reference, the body's size besides
images (app/body_bounds.py); mock.echo never answers a schema it cannot satisfy with a 502; an
Anthropic conversation may open with the assistant, as the real API accepts."""
from __future__ import annotations

import json

import pytest
import responses

from app.body_bounds import MAX_BODY_VALUES, check_body_values, non_image_bytes
from app.calls import Call, Message, TextPart
from app.errors import ValidationError
from app.providers.mock import _example
from app.schema_bounds import caller_schema_problem

SCHEMA_FIELD = "response_format.json_schema.schema"
ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "{}", "refusal": None},
                       "finish_reason": "stop", "logprobs": None}],
          "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


def obj(**props):
    return {"type": "object", "properties": props, "required": sorted(props), "additionalProperties": False}


def nested(levels):
    schema = {"type": "string"}
    for _ in range(levels):
        schema = obj(a=schema)
    return schema


# -- the limits: just under each is accepted, just over is refused with what was crossed ------------
@pytest.mark.parametrize("fits, over, words", [
    (obj(**{f"p{i}": {"type": "string"} for i in range(5_000)}),
     obj(**{f"p{i}": {"type": "string"} for i in range(5_001)}), "5000 object properties"),
    (nested(11), nested(12), "nested more than 10 levels"),
    ({"enum": [f"v{i}" for i in range(1_000)]}, {"enum": [f"v{i}" for i in range(1_001)]}, "1000 enum values"),
    ({"enum": ["x" * 1000] * 120}, {"enum": ["x" * 1000] * 121}, "120000 characters"),
    ({"enum": ["x" * 60] * 250}, {"enum": ["x" * 60] * 251}, "15000 characters"),
    ({"anyOf": [{"type": "string"}] * 9_999}, {"anyOf": [{"type": "string"}] * 10_000}, "10000 subschemas"),
])
def test_schema_limits(fits, over, words):
    assert caller_schema_problem(fits) is None
    assert words in caller_schema_problem(over)


def test_property_and_definition_names_count_toward_the_string_total():
    names = {"$defs": {"d" * 60_000: {"type": "string"}}, **obj(**{"p" * 60_001: {"type": "string"}})}
    assert "120000 characters" in caller_schema_problem(names)


def test_a_deeply_nested_default_is_refused_before_any_walk():
    deep: list = []
    for _ in range(150):
        deep = [deep]
    assert "nested more than 100 levels" in caller_schema_problem({"type": "array", "default": deep})


# -- references -------------------------------------------------------------------------------------
@pytest.mark.parametrize("schema", [
    {"$ref": "#"},
    {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}, {"type": "null"}]}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
     "type": "object"},
    {"type": "object", "properties": {"x": {"not": {"$ref": "#/properties/x"}}}},
    {"properties": {"not": {"$ref": "#/properties"}}, "$ref": "#/properties"},
])
def test_a_reference_loop_that_never_reaches_a_property_or_item_is_refused(schema):
    assert "loop back without reaching a property or an item" in caller_schema_problem(schema)


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}},
     "required": ["name", "children"], "additionalProperties": False},
    {"$defs": {"node": obj(value={"type": "integer"}, next={"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]})},
     "$ref": "#/$defs/node"},
])
def test_recursion_through_properties_or_items_is_accepted(schema):
    assert caller_schema_problem(schema) is None


@pytest.mark.parametrize("schema, words", [
    ({"$dynamicRef": "https://attacker.example/schema"}, "points outside the schema"),
    ({"type": "object", "properties": {"a": {"$dynamicRef": "http://169.254.169.254/x#meta"}}}, "points outside"),
    ({"$dynamicRef": "#nowhere"}, "does not resolve"),
])
def test_a_dynamic_ref_must_stay_inside_the_schema(schema, words):
    assert words in caller_schema_problem(schema)


def test_a_local_dynamic_ref_is_accepted():
    schema = {"$dynamicAnchor": "node", **obj(kids={"type": "array", "items": {"$dynamicRef": "#node"}})}
    assert caller_schema_problem(schema) is None


def call_body(schema, model="openai.gpt-4o"):
    return {"model": model, "prompt": "hi", "response_format": {
        "type": "json_schema", "json_schema": {"name": "out", "strict": True, "schema": schema}}}


@pytest.mark.parametrize("schema", [
    {"$ref": "#"},
    {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    {"$dynamicRef": "https://attacker.example/schema"},
    {"enum": list(range(1_001))},
])
@pytest.mark.parametrize("path", ["/api/v3/llm/public/call", "/v1/chat/completions"])
@responses.activate
def test_the_schema_is_refused_before_the_provider_is_called(app, client, api_key, schema, path):
    app.extensions["flowcall"].settings.provider_env["OPENAI_API_KEY"] = "sk-test-0123456789"
    responses.add(responses.POST, "https://api.openai.com/v1/chat/completions", json=ANSWER)
    body = call_body(schema)
    if path.startswith("/v1"):
        body = {"model": body["model"], "messages": [{"role": "user", "content": "hi"}],
                "response_format": body["response_format"]}
    auth = {"Authorization": f"Bearer {api_key}"} if path.startswith("/v1") else {"X-Api-Key": api_key}
    resp = client.post(path, json=body, headers=auth)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    error = resp.get_json()["error"]
    where = error["flowcall"]["fields"] if path.startswith("/v1") else error["fields"]
    assert SCHEMA_FIELD in where, where
    assert len(responses.calls) == 0


# -- the body ---------------------------------------------------------------------------------------
def test_image_data_uris_are_not_counted_as_body_bytes():
    uri = "data:image/png;base64," + "A" * 1000
    raw = json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": uri}}]}]}).encode()
    assert non_image_bytes(raw) == len(raw) - len(uri) - 2


def test_the_value_count_stops_at_the_limit():
    check_body_values({"k": list(range(MAX_BODY_VALUES - 2))})
    with pytest.raises(ValidationError) as err:
        check_body_values({"k": list(range(MAX_BODY_VALUES))})
    assert err.value.fields == {"body": f"more than {MAX_BODY_VALUES} JSON values"}


def test_duplicate_keys_are_still_refused(client, api_key):
    raw = b'{"model": "mock.echo", "prompt": "a", "prompt": "b"}'
    resp = client.post("/api/v3/llm/public/call", data=raw, content_type="application/json",
                       headers={"X-Api-Key": api_key})
    assert resp.status_code == 400 and "duplicate key 'prompt'" in resp.get_json()["error"]["message"]


# -- mock.echo --------------------------------------------------------------------------------------
@pytest.mark.parametrize("schema, words", [
    ({"type": "string", "pattern": "^[0-9]{3}$"}, "does not match"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "is not of type"),
    ({"allOf": [obj(a={"type": "string"}), {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]},
     "Additional properties are not allowed"),
    ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 3}}, "required": ["n"]},
     "is "),
])
def test_mock_refuses_with_a_400_a_schema_it_cannot_satisfy(client, api_key, schema, words):
    resp = client.post("/api/v3/llm/public/call", json=call_body(schema, "mock.echo"), headers={"X-Api-Key": api_key})
    assert resp.status_code == 400, resp.get_data(as_text=True)
    error = resp.get_json()["error"]
    assert error["code"] == "capability_missing" and error["retryable"] is False
    assert words in error["fields"][SCHEMA_FIELD]


def test_mock_refuses_a_huge_min_length_without_building_it(client, api_key):
    resp = client.post("/api/v3/llm/public/call", json=call_body({"type": "string", "minLength": 10**9}, "mock.echo"),
                       headers={"X-Api-Key": api_key})
    assert resp.status_code == 400 and resp.get_json()["error"]["retryable"] is False
    assert resp.get_json()["error"]["fields"] == {SCHEMA_FIELD: "example too large"}


@pytest.mark.parametrize("schema", [
    {"type": "string", "minLength": 20, "maxLength": 30},
    {"allOf": [{"properties": {"a": {"type": "string"}}, "required": ["a"]},
               {"properties": {"b": {"type": "integer", "minimum": 5}}, "required": ["b"]}]},
    {"type": "integer", "maximum": -3},
    {"type": "number", "exclusiveMinimum": 2, "maximum": 10},
    {"$defs": {"x": {"type": "integer", "minimum": 1}}, **obj(v={"$ref": "#/$defs/x"})},
    {"type": "object", "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}},
     "required": ["name", "children"]},
])
def test_mock_examples_satisfy_richer_schemas(client, api_key, schema):
    import jsonschema
    jsonschema.validate(_example(schema), schema)
    resp = client.post("/api/v3/llm/public/call", json=call_body(schema, "mock.echo"), headers={"X-Api-Key": api_key})
    assert resp.status_code == 200, resp.get_data(as_text=True)


# -- Anthropic: the conversation may open with the assistant ----------------------------------------
def test_an_anthropic_conversation_opening_with_the_assistant_is_sent_as_the_real_api_takes_it():
    """fixtures/test_anthropic/test_anthropic_model_empty_message_on_history.yaml: assistant first,
    then user, answered 200."""
    from app.catalog import Catalog
    from app.config import Settings
    from app.dispatch import Dispatcher
    from app.providers import anthropic
    catalog = Catalog.load()
    target = Dispatcher(Settings.from_env({"ANTHROPIC_API_KEY": "sk-ant-test-0123456789"}), catalog,
                        sleep=lambda s: None).target(catalog.resolve("anthropic.claude-sonnet-4-5").model)
    call = Call(messages=(Message("system", (TextPart("You are a helpful assistant."),)),
                          Message("assistant", (TextPart("Hello, how can I help you?"),)),
                          Message("user", (TextPart("I need a potato!"),))), model="anthropic.claude-sonnet-4-5")
    plan = anthropic.build_request(call, target)
    assert plan.request.json["messages"] == [{"role": "assistant", "content": "Hello, how can I help you?"},
                                             {"role": "user", "content": "I need a potato!"}]
    assert plan.warnings == ()


# -- one budget per request for schemas not checked before ------------------------------------------
def distinct_schema(n: int, size: int = 20) -> dict:
    return {"title": f"schema {n}", "anyOf": [{"type": "string", "description": f"{n}.{i}"} for i in range(size - 1)]}


def test_a_batch_of_distinct_schemas_over_the_budget_is_refused_before_any_item(client, api_key, monkeypatch):
    from app import schema_bounds
    monkeypatch.setattr(schema_bounds, "MAX_SUBSCHEMAS", 50)
    items = [call_body(distinct_schema(n), "mock.echo") for n in range(3)]
    resp = client.post("/api/v3/llm/batch", json={"items": items}, headers={"X-Api-Key": api_key})
    assert resp.status_code == 413, resp.get_data(as_text=True)
    assert "more than 50 subschemas in all" in resp.get_json()["error"]["fields"]["items"]
    one_schema = {"items": [{"model": "mock.echo", "prompt": f"item {n}"} for n in range(3)],
                  "defaults": {"response_format": call_body(distinct_schema(99))["response_format"]}}
    resp = client.post("/api/v3/llm/batch", json=one_schema, headers={"X-Api-Key": api_key})
    assert resp.status_code == 200 and resp.get_json()["failed"] == 0, resp.get_data(as_text=True)


def test_schemas_checked_in_one_request_share_one_budget(app, monkeypatch):
    from app import schema_bounds
    monkeypatch.setattr(schema_bounds, "MAX_SUBSCHEMAS", 50)
    with app.test_request_context():
        assert caller_schema_problem(distinct_schema(1000)) is None
        assert caller_schema_problem(distinct_schema(1000)) is None           # checked before: free
        assert caller_schema_problem(distinct_schema(1001)) is None
        assert "more than 50 subschemas in all" in caller_schema_problem(distinct_schema(1002))
    with app.test_request_context():
        assert caller_schema_problem(distinct_schema(1002)) is None


def test_an_answer_too_deep_to_validate_is_a_502_not_a_500():
    from app.calls import Completion, ResponseFormat, Usage
    from app.errors import InvalidStructuredOutput
    from app.postprocess import parse_structured
    data: list = []
    for _ in range(400):                     # fine for json.dumps, too deep for the validator's recursion
        data = [data]
    completion = Completion(text="", finish_reason="stop", usage=Usage(1, 1), model="m", data=data)
    fmt = ResponseFormat("json_schema", name="tree", schema={"type": "array", "items": {"$ref": "#"}}, strict=True)
    with pytest.raises(InvalidStructuredOutput) as err:
        parse_structured(completion, fmt, "openai")
    # refused by the depth bound on provider JSON (app/http.py) or, past it, by the validator's guard
    assert err.value.status == 502 and ("nested deeper" in err.value.message
                                        or "recursed too deeply" in err.value.message)
