"""The node body's tool fields: what a malformed tool conversation gets (a 400 naming the field,
before any provider is paid), and which models routing may pick for a call with tools."""
from __future__ import annotations

import json

import pytest

from app import tool_ids
from app.calls import ToolCall
from app.catalog import Catalog
from app.config import Settings
from app.errors import CapabilityMissing, ValidationError
from app.routing.resolve import route
from app.answer_schemas import answer_to_dict
from app.schemas import CallSchema, call_from_body, load

CATALOG = Catalog.load()
CALC = {"name": "Calculator", "description": "math", "parameters": {
    "type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"],
    "$schema": "http://json-schema.org/draft-07/schema#"}}


def body(**kw) -> dict:
    base = {"model": "openai.gpt-4o", "messages": [{"role": "user", "content": "12*7?"}], "tools": [CALC]}
    base.update(kw)
    return base


def turn(call_id="call_1", arguments='{"input": "12*7"}', result_id=None) -> list[dict]:
    return [{"role": "user", "content": "12*7?"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": call_id, "name": "Calculator",
                                                                 "arguments": arguments}]},
            {"role": "tool", "tool_call_id": result_id or call_id, "content": "84"}]


def build(data: dict):
    return call_from_body(load(CallSchema(), data))


def error_of(data: dict) -> ValidationError:
    with pytest.raises(ValidationError) as err:
        build(data)
    return err.value


def test_a_whole_tool_turn_becomes_the_call():
    call = build(body(messages=turn(), tool_choice={"name": "Calculator"}, parallel_tool_calls=False))
    assert [m.role for m in call.messages] == ["user", "assistant", "tool"]
    assert call.messages[1].tool_calls == (ToolCall("call_1", "Calculator", {"input": "12*7"}),)
    result = call.messages[2].parts[0]
    assert (result.call_id, result.name, result.content) == ("call_1", "Calculator", "84")
    assert "$schema" not in call.tools[0].parameters
    assert call.tool_choice.name == "Calculator" and call.parallel_tool_calls is False


def test_openai_shaped_tools_and_calls_are_accepted_too():
    msgs = turn()
    msgs[1]["tool_calls"] = [{"id": "call_1", "type": "function",
                              "function": {"name": "Calculator", "arguments": "{\"input\": \"1\"}"}}]
    call = build(body(messages=msgs, tools=[{"type": "function", "function": CALC}],
                      tool_choice={"type": "function", "function": {"name": "Calculator"}}))
    assert call.messages[1].tool_calls[0].arguments == {"input": "1"}


@pytest.mark.parametrize("data, field", [
    (body(messages=turn(result_id="call_other")), "messages.2.tool_call_id"),           # answers no call
    (body(messages=turn(arguments="{not json")), "messages.1.tool_calls.0.arguments"),
    (body(messages=turn(arguments="[1, 2]")), "messages.1.tool_calls.0.arguments"),
    (body(messages=turn()[:2] + [{"role": "user", "content": "and?"}]), "messages.1.tool_calls"),   # no result
    (body(messages=turn()[:2]), "messages.1.tool_calls"),
    (body(messages=turn(call_id="fcs1.bm90IGpzb24")), "messages.1.tool_calls.0.id"),      # a tampered state id
    (body(tool_choice={"name": "Other"}), "tool_choice"),
    (body(tools=[], tool_choice="required"), "tool_choice"),
    (body(tools=[CALC, CALC]), "tools.1.name"),
    (body(tools=[{**CALC, "name": "has space"}]), "tools.0.name"),
    (body(tools=[{**CALC, "parameters": {"type": "string"}}]), "tools.0.parameters"),
    (body(tools=[{**CALC, "parameters": {"type": "object", "properties": {"a": {"$ref": "https://x/y"}}}}]),
     "tools.0.parameters"),
    (body(tools=[{**CALC, "parameters": {"type": "object", "description": "x" * 70_000}}]), "tools.0.parameters"),
    (body(tools=[{"name": f"t{i}"} for i in range(129)]), "tools"),
    (body(tools=[{"name": f"t{i}", "parameters": {"type": "object", "description": "x" * 60_000}}
                 for i in range(9)]), "tools"),
    (body(messages=[{"role": "tool", "content": "84"}]), "messages.0.tool_call_id"),
    (body(messages=[{"role": "user", "content": "x", "tool_calls": []}, {"role": "user", "content": "y",
                                                                        "tool_call_id": "a"}]), "messages.1.tool_call_id"),
])
def test_malformed_tool_conversations_are_400s_naming_the_field(data, field):
    assert field in error_of(data).fields


def test_a_result_for_a_call_made_in_another_conversation_is_refused():
    """A state-carrying id handed out to someone else is decoded, but it answers no call in this
    conversation: the rule that a result answers an earlier call holds for every id."""
    foreign = tool_ids.public_id(ToolCall("call_x", "Calculator", {}, {"thoughtSignature": "c2ln"}))
    msgs = turn()
    msgs[2]["tool_call_id"] = foreign
    assert "messages.2.tool_call_id" in error_of(body(messages=msgs)).fields


def test_answers_carry_tool_calls_flat_with_state_folded_into_the_id():
    from app.calls import Answer, Routing, Usage
    calls = (ToolCall("call_a", "Calculator", {"input": "1"}), ToolCall("call_b", "f", {}, {"thoughtSignature": "c2ln"}))
    answer = Answer(text="", data=None, model="m", provider="google", finish_reason="tool_calls", usage=Usage(),
                    cost=0.0, latency_ms=1, routing=Routing(False, "google.x", 1.0, "r"), tool_calls=calls)
    out = answer_to_dict(answer)["tool_calls"]
    assert out[0] == {"id": "call_a", "name": "Calculator", "arguments": {"input": "1"}}
    assert tool_ids.decode(out[1]["id"], "x") == ("call_b", {"thoughtSignature": "c2ln"})


# -- routing -------------------------------------------------------------------------------------------
SETTINGS = Settings.from_env({"OPENAI_API_KEY": "sk-x", "PERPLEXITY_API_KEY": "pplx-x", "GEMINI_API_KEY": "g"})


def test_a_model_that_cannot_call_tools_is_a_400():
    # a Perplexity preset: offering functions would replace the preset's own tools
    with pytest.raises(CapabilityMissing) as err:
        route(build(body(model="perplexity.sonar-pro")), CATALOG, SETTINGS)
    assert "cannot call tools" in err.value.message and err.value.fields == {"model": "model cannot call tools"}
    # the same model without tools is fine
    route(build(body(model="perplexity.sonar-pro") | {"tools": []}), CATALOG, SETTINGS)


def test_fallbacks_that_cannot_call_tools_are_skipped():
    chosen = route(build(body(fallbacks=["perplexity.sonar-pro", "google.gemini-2.5-flash"])), CATALOG, SETTINGS)
    assert [c.model.id for c in chosen.candidates] == ["openai.gpt-4o", "google.gemini-2.5-flash"]


@pytest.fixture
def sonar_without_tools(tmp_path):
    override = tmp_path / "models.json"
    override.write_text(json.dumps({"models": [{"id": "perplexity.sonar", "capabilities": {"tools": False}}]}))
    return Catalog.load(str(override))


def test_auto_picks_only_models_that_call_tools(sonar_without_tools):
    without_tools = route(build(body(model="auto") | {"tools": []}), sonar_without_tools, SETTINGS)
    assert "perplexity.sonar" in [c.model.id for c in without_tools.candidates]
    chosen = route(build(body(model="auto")), sonar_without_tools, SETTINGS)
    assert chosen.candidates and all(c.model.capabilities.tools for c in chosen.candidates)
    assert "perplexity.sonar" not in [c.model.id for c in chosen.candidates]


def test_auto_without_a_tool_calling_model_for_the_task_says_so(sonar_without_tools):
    with pytest.raises(CapabilityMissing) as err:
        route(build(body(model="auto", context={"task": "web_search"})), sonar_without_tools, SETTINGS)
    assert "tool calling" in err.value.fields["tools"]
