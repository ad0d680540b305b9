"""app/schemas.py's `narrowed`: a body loads with a schema narrowed to the fields it names (plus the
required and defaulted ones) to the same data, or fails with the same errors, as with the whole
schema; anything the narrowing cannot stand for loads with the whole schema; the memo is bounded."""
from __future__ import annotations

import json

import pytest
from marshmallow import ValidationError as MarshmallowError

from app import schemas
from app.openai_api.chat_completions_schema import ChatCompletionRequestSchema
from app.schemas import AgentAiSchema, CallSchema, narrowed
from specs import fixture_file

USER = [{"role": "user", "content": "hi"}]

CHAT_BODIES = [
    {"model": "openai.gpt-4o", "messages": USER},
    {"model": "openai.gpt-4o", "messages": USER, "temperature": 0.2, "max_tokens": 10, "stop": ["x"]},
    {"model": "openai.gpt-4o", "messages": USER, "stream": True, "stream_options": {"include_usage": True}},
    {"model": "openai.gpt-4o", "messages": USER, "user": "u1", "seed": 3},                # ignored fields
    {"model": "openai.gpt-4o", "messages": USER, "temperature": 5},                      # out of range
    {"model": "openai.gpt-4o", "messages": []},                                          # too short
    {"model": "openai.gpt-4o", "messages": USER, "stream": "yes"},                       # not a boolean
    {"model": "openai.gpt-4o", "messages": [{"role": "function", "content": "x"}]},      # schema validator
    {"model": "openai.gpt-4o", "messages": USER, "response_format": {"type": "json_schema"}},
    {"messages": USER},                                                                  # model missing
    {"model": "openai.gpt-4o"},                                                          # messages missing
    {"model": "openai.gpt-4o", "messages": USER, "mystery": 1},                          # unknown field
    {},
]
CALL_BODIES = [
    {"model": "openai.gpt-4o", "prompt": "hi"},
    {"model": "openai.gpt-4o", "prompt": "hi", "options": {"temperature": 0.5, "maxTokens": 20}},
    {"model": "openai.gpt-4o", "prompt": "hi", "options": {"temperature": "hot"}},
    {"model": "openai.gpt-4o", "prompt": "hi", "messages": USER},
    {"model": "auto", "prompt": "hi", "context": {"task": "summarize"}},
    {"prompt": "hi"},
    {"model": 7, "prompt": "hi"},
    {"model": "openai.gpt-4o", "prompt": "hi", "unknownThing": True},
]
AGENT_BODIES = [{"instructions": "hi"}, {"instructions": "hi", "llm_engine": "gpt4o"}, {"llm_engine": "x"},
                {"instructions": ""}]


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    """Each test narrows its own schemas (the memo holds at most _NARROWED_SCHEMAS of them)."""
    monkeypatch.setattr(schemas, "_narrowings", {})


def outcome(schema, body):
    try:
        return "data", schema.load(body)
    except MarshmallowError as err:
        return "errors", err.messages


@pytest.mark.parametrize("schema_cls, body", [
    *[(ChatCompletionRequestSchema, b) for b in CHAT_BODIES],
    *[(CallSchema, b) for b in CALL_BODIES],
    *[(AgentAiSchema, b) for b in AGENT_BODIES]])
def test_a_narrowed_schema_loads_a_body_as_the_whole_schema_does(schema_cls, body):
    whole = schema_cls()
    assert outcome(narrowed(whole, body), body) == outcome(whole, body)


@pytest.mark.parametrize("name", ["agent_calc_chat13_noresp_chat_1_tool_call.json",
                                  "agent_calc_chat13_noresp_chat_2_tool_result.json"])
def test_real_n8n_agent_bodies_load_as_with_the_whole_schema(name):
    body = json.loads(fixture_file(f"n8n/{name}").read_text())["request"]["body"]
    whole = ChatCompletionRequestSchema()
    kind, data = outcome(narrowed(whole, body), body)
    assert kind == "data" and data["tools"] and (kind, data) == outcome(whole, body)


def test_only_the_named_required_and_defaulted_fields_are_visited():
    chat = ChatCompletionRequestSchema()
    assert len(chat.load_fields) > 30
    assert set(narrowed(chat, {"model": "m", "messages": USER}).load_fields) == {"model", "messages"}
    assert set(narrowed(chat, {"model": "m", "messages": USER, "seed": 1}).load_fields) == {"model", "messages", "seed"}
    agent = AgentAiSchema()
    assert set(narrowed(agent, {"instructions": "hi"}).load_fields) == {"instructions", "llm_engine"}  # its default
    assert narrowed(agent, {"instructions": "hi"}).load({"instructions": "hi"}) == {"instructions": "hi",
                                                                                   "llm_engine": "gpt4o"}


def test_unknown_fields_non_objects_and_schemas_built_with_options_use_the_whole_schema():
    chat = ChatCompletionRequestSchema()
    assert narrowed(chat, {"model": "m", "messages": USER, "mystery": 1}) is chat
    assert narrowed(chat, ["not", "an", "object"]) is chat
    partial = CallSchema(partial=True)
    assert narrowed(partial, {"model": "m"}) is partial


def test_the_same_key_set_reuses_its_schema_and_the_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(schemas, "NARROWED_PER_SCHEMA", 3)
    chat = ChatCompletionRequestSchema()
    first = narrowed(chat, {"model": "a", "messages": USER})
    assert narrowed(chat, {"messages": USER, "model": "b"}) is first
    extra = ["seed", "user", "n", "logprobs"]
    built = [narrowed(chat, {"model": "a", "messages": USER, name: 1}) for name in extra]
    assert [s is chat for s in built] == [False, False, True, True]          # 3 key sets kept, then the whole
    assert len(schemas._narrowings[chat].by_keys) == 3


def test_past_the_schema_bound_schemas_load_whole(monkeypatch):
    monkeypatch.setattr(schemas, "_NARROWED_SCHEMAS", 2)
    body = {"model": "a", "messages": USER}
    kept = [ChatCompletionRequestSchema() for _ in range(3)]
    assert [narrowed(s, body) is s for s in kept] == [False, False, True]
