"""Tool calling in every adapter: request bodies compared with recorded real requests, answers parsed
from recorded real answers (../shared/specs/fixtures, pydantic-ai recordings (MIT) and n8n's own)."""
from __future__ import annotations

import json

import pytest
import responses as responses_lib
import yaml

from app.openai_api import chat_completions as compat
from app import tool_ids
from app.calls import Call, Message, TextPart, Tool, ToolCall, ToolCallPart, ToolChoice, ToolResultPart
from app.catalog import Catalog
from app.config import Settings
from app.dispatch import Dispatcher
from app.errors import InvalidProviderResponse
from app.http import HttpResponse
from app.providers import anthropic, gemini, mock, openai_chat
from app.schemas import CallSchema, call_from_body, load
from specs import fixture_file

CATALOG = Catalog.load()
ENV = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
       "GEMINI_API_KEY": "gem-test-0123456789", "GROQ_API_KEY": "gsk_test0123456789abcdef"}


def target(spec: str):
    return Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None).target(CATALOG.resolve(spec).model)


def recorded(path: str) -> list[dict]:
    return yaml.safe_load(fixture_file(path).read_text())["interactions"]


def n8n(name: str) -> dict:
    return json.loads(fixture_file(f"n8n/{name}").read_text())


def resp(body: dict) -> HttpResponse:
    return HttpResponse(200, json.dumps(body).encode(), {})


COUNTRY = Tool("get_user_country", None, {"additionalProperties": False, "properties": {}, "type": "object"})


# -- OpenAI family -------------------------------------------------------------------------------------
def test_openai_body_is_n8ns_own_second_turn():
    """n8n's AI Agent second turn, through /v1's translation, reaches OpenAI as n8n sent it (bar the
    `$schema` dialect marker and the arguments' JSON spacing)."""
    sent = n8n("agent_calc_chat13_noresp_chat_2_tool_result.json")["request"]["body"]
    call = call_from_body(compat.parse_request(sent).body)
    body = openai_chat.build_request(call, target("openai.gpt-4o")).request.json
    expected_tool = json.loads(json.dumps(sent["tools"][0]))
    del expected_tool["function"]["parameters"]["$schema"]
    assert body["tools"] == [expected_tool]
    assert "tool_choice" not in body and "parallel_tool_calls" not in body
    user, assistant, tool = body["messages"]
    assert user == sent["messages"][0]
    original = sent["messages"][1]["tool_calls"][0]
    assert assistant["content"] is None and len(assistant["tool_calls"]) == 1
    call_out = assistant["tool_calls"][0]
    assert call_out["id"] == original["id"] and call_out["type"] == "function"
    assert call_out["function"]["name"] == "Calculator"
    assert json.loads(call_out["function"]["arguments"]) == json.loads(original["function"]["arguments"])
    assert tool == sent["messages"][2]


@pytest.mark.parametrize("choice, native", [
    (ToolChoice("auto"), "auto"), (ToolChoice("none"), "none"), (ToolChoice("required"), "required"),
    (ToolChoice("tool", "get_user_country"), {"type": "function", "function": {"name": "get_user_country"}})])
def test_openai_tool_choice_and_parallel(choice, native):
    call = Call((Message("user", (TextPart("hi"),)),), "groq.llama-3.3-70b-versatile", tools=(COUNTRY,),
                tool_choice=choice, parallel_tool_calls=False)
    body = openai_chat.build_request(call, target("groq.llama-3.3-70b-versatile")).request.json
    assert body["tool_choice"] == native and body["parallel_tool_calls"] is False
    assert body["tools"] == [{"type": "function", "function": {"name": "get_user_country",
                                                               "parameters": COUNTRY.parameters}}]


def test_openai_parses_recorded_tool_calls():
    answer = recorded("test_openai/test_compatible_api_with_tool_calls_without_id.yaml")[0]["response"]["parsed_body"]
    call = Call((Message("user", (TextPart("time?"),)),), "openai.gpt-4o", tools=(Tool("get_current_time"),))
    done = openai_chat.parse_response(resp(answer), call, target("openai.gpt-4o"))
    assert done.finish_reason == "tool_calls"
    (tc,) = done.tool_calls
    assert tc.name == "get_current_time" and tc.arguments == {}
    assert tc.id.startswith("call_") and len(tc.id) == 29      # the server sent id "": one is derived


def test_openai_arguments_that_are_not_json_are_the_providers_fault():
    answer = {"id": "x", "model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": "}}]}}]}
    call = Call((Message("user", (TextPart("x"),)),), "openai.gpt-4o", tools=(Tool("f"),))
    with pytest.raises(InvalidProviderResponse) as err:
        openai_chat.parse_response(resp(answer), call, target("openai.gpt-4o"))
    assert err.value.retryable


# -- Anthropic ---------------------------------------------------------------------------------------
def test_anthropic_round_trip_matches_the_recording():
    first, second = recorded("test_anthropic/test_anthropic_text_output_function.yaml")
    question = first["request"]["parsed_body"]["messages"][0]["content"][0]["text"]
    call = Call((Message("user", (TextPart(question),)),), "anthropic.claude-sonnet-4-5-20250929", tools=(COUNTRY,),
                tool_choice=ToolChoice("auto"))
    t = target("anthropic.claude-sonnet-4-5-20250929")
    body = anthropic.build_request(call, t).request.json
    recorded_tools = first["request"]["parsed_body"]["tools"]
    assert body["tools"] == [{k: v for k, v in recorded_tools[0].items() if k != "description"}]   # '' not sent
    assert body["tool_choice"] == {"type": "auto"}

    done = anthropic.parse_response(resp(first["response"]["parsed_body"]), call, t)
    assert done.finish_reason == "tool_calls"
    assert done.tool_calls == (ToolCall("toolu_01JJ8TequDsrEU2pv1QFRWAK", "get_user_country", {}),)
    assert done.text.startswith("I'll help find the largest city")

    nxt = Call(call.messages + (Message("assistant", (TextPart(done.text),) + tuple(ToolCallPart(c) for c in done.tool_calls)),
                                Message("tool", (ToolResultPart("toolu_01JJ8TequDsrEU2pv1QFRWAK", "Mexico",
                                                                "get_user_country"),))),
               call.model, tools=call.tools, tool_choice=call.tool_choice)
    body = anthropic.build_request(nxt, t).request.json
    want = second["request"]["parsed_body"]["messages"]
    assert body["messages"][1] == want[1]
    assert body["messages"][2] == {"role": "user", "content": [
        {k: v for k, v in want[2]["content"][0].items() if k != "is_error"}]}
    final = anthropic.parse_response(resp(second["response"]["parsed_body"]), nxt, t)
    assert final.finish_reason == "stop" and not final.tool_calls


def test_anthropic_parallel_results_are_one_user_turn_results_first_and_ids_made_valid():
    calls = (ToolCall("call:1", "a", {"x": 1}), ToolCall("call:2", "b", {}))
    msgs = (Message("user", (TextPart("go"),)), Message("assistant", tuple(ToolCallPart(c) for c in calls)),
            Message("tool", (ToolResultPart("call:1", "one", "a"),)), Message("tool", (ToolResultPart("call:2", "two", "b"),)),
            Message("user", (TextPart("and?"),)))
    call = Call(msgs, "anthropic.claude-sonnet-4-6", tools=(Tool("a"), Tool("b")), tool_choice=ToolChoice("required"),
                parallel_tool_calls=False)
    body = anthropic.build_request(call, target("anthropic.claude-sonnet-4-6")).request.json
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "a", "input": {"x": 1}},
        {"type": "tool_use", "id": "call_2", "name": "b", "input": {}}]
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "one"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "two"},
        {"type": "text", "text": "and?"}]}
    assert len(body["messages"]) == 3
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["tools"] == [{"name": "a", "input_schema": {"type": "object"}},
                             {"name": "b", "input_schema": {"type": "object"}}]


# -- Gemini ------------------------------------------------------------------------------------------
def test_gemini_call_from_another_provider_gets_the_standin_signature_as_recorded():
    """fixtures/test_google/test_thinking_with_tool_calls_from_other_model: a call OpenAI made, sent on
    to gemini-3-pro-preview, with the documented stand-in signature (answered 200)."""
    rec = recorded("test_google/test_thinking_with_tool_calls_from_other_model.yaml")
    req = next(i for i in rec if "gemini-3" in i["request"]["uri"])["request"]["parsed_body"]
    msgs = (Message("user", (TextPart("What is the capital of the country?"),)),
            Message("assistant", (ToolCallPart(ToolCall("call_1w9YRdMtRTRucwZShoZYlLJp", "get_country", {})),)),
            Message("tool", (ToolResultPart("call_1w9YRdMtRTRucwZShoZYlLJp", "Mexico", "get_country"),)))
    call = Call(msgs, "google.gemini-3.1-pro-preview", tools=(Tool("get_country", None, {
        "additionalProperties": False, "properties": {}, "type": "object"}),))
    body = gemini.build_request(call, target("google.gemini-3.1-pro-preview")).request.json
    assert body["contents"][1] == req["contents"][1]
    assert body["contents"][2] == {"role": "user", "parts": [{"functionResponse": {
        "id": "call_1w9YRdMtRTRucwZShoZYlLJp", "name": "get_country", "response": {"result": "Mexico"}}}]}
    assert body["tools"] == [{"functionDeclarations": [{"name": "get_country", "description": ""}]}]
    assert "toolConfig" not in body


def test_gemini_thought_signature_survives_the_round_trip_through_the_call_id():
    rec = recorded("test_google/test_thinking_with_tool_calls_from_other_model.yaml")
    answer = next(i for i in rec if "gemini-3" in i["request"]["uri"])["response"]["parsed_body"]
    signature = answer["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    schema = {"type": "object", "properties": {"city": {"type": "string", "minLength": 1},
                                               "country": {"type": "string"}}, "required": ["city", "country"]}
    body = {"model": "google.gemini-3.1-pro-preview", "messages": [{"role": "user", "content": "Where?"}],
            "tools": [{"name": "final_result", "description": "The final response", "parameters": schema}],
            "tool_choice": "required"}
    call = call_from_body(load(CallSchema(), body))
    t = target("google.gemini-3.1-pro-preview")
    sent = gemini.build_request(call, t).request.json
    assert sent["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["properties"]["country"] == {
        "type": "string"}
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    done = gemini.parse_response(resp(answer), call, t)
    assert done.finish_reason == "tool_calls"
    (tc,) = done.tool_calls
    assert tc.arguments == {"city": "Mexico City", "country": "Mexico"} and tc.state == {"thoughtSignature": signature}

    public = tool_ids.public_id(tc)          # what the client sees and sends back
    assert public.startswith("fcs1.") and signature not in public
    body["messages"] += [{"role": "assistant", "content": None, "tool_calls": [
                             {"id": public, "name": tc.name, "arguments": json.dumps(tc.arguments)}]},
                         {"role": "tool", "tool_call_id": public, "content": "{\"ok\": true}"}]
    nxt = call_from_body(load(CallSchema(), body))
    sent = gemini.build_request(nxt, t).request.json
    assert sent["contents"][1] == {"role": "model", "parts": [{
        "functionCall": {"id": tc.id, "name": "final_result", "args": tc.arguments}, "thoughtSignature": signature}]}
    assert sent["contents"][2]["parts"] == [{"functionResponse": {"id": tc.id, "name": "final_result",
                                                                  "response": {"ok": True}}}]
    # The same conversation moved to OpenAI is valid there: the provider id, no state.
    sent = openai_chat.build_request(nxt, target("openai.gpt-4o")).request.json
    assert sent["messages"][1]["tool_calls"][0]["id"] == tc.id
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": tc.id, "content": "{\"ok\": true}"}


# -- mock.echo ---------------------------------------------------------------------------------------
def test_mock_calls_the_first_tool_with_fitting_arguments_then_echoes_the_result():
    schema = {"type": "object", "properties": {"input": {"type": "string"}, "n": {"type": "integer", "minimum": 2}},
              "required": ["input", "n"]}
    call = Call((Message("user", (TextPart("12*7"),)),), "mock.echo", tools=(Tool("Calculator", None, schema), Tool("b")))
    done = mock.complete(call, None)
    assert done.finish_reason == "tool_calls"
    assert done.tool_calls == (ToolCall("call_mock_0", "Calculator", {"input": "example", "n": 2}),)
    nxt = Call(call.messages + (Message("assistant", (ToolCallPart(done.tool_calls[0]),)),
                                Message("tool", (ToolResultPart("call_mock_0", "84", "Calculator"),))),
               "mock.echo", tools=call.tools)
    final = mock.complete(nxt, None)
    assert final.finish_reason == "stop" and final.text == "84" and not final.tool_calls
    named = mock.complete(Call(call.messages, "mock.echo", tools=call.tools, tool_choice=ToolChoice("tool", "b")), None)
    assert named.tool_calls[0].name == "b"
    assert not mock.complete(Call(call.messages, "mock.echo", tools=call.tools, tool_choice=ToolChoice("none")),
                             None).tool_calls


# -- Perplexity (Agent API) ------------------------------------------------------------------------------
PPLX_ENV = {**ENV, "PERPLEXITY_API_KEY": "pplx-test-0123456789"}


def pplx_target(spec="perplexity.sonar"):
    return Dispatcher(Settings.from_env(PPLX_ENV), CATALOG, sleep=lambda s: None).target(CATALOG.resolve(spec).model)


def pplx_function_call(status: str) -> dict:
    """perplexity-py types: response_create_response / output_item.py FunctionCallOutputItem."""
    return {"id": "resp_fc1", "object": "response", "created_at": 1763800000, "model": "perplexity/sonar",
            "status": status, "output": [
                {"id": "fc_1", "type": "function_call", "call_id": "call_abc", "name": "Calculator",
                 "arguments": "{\"input\": \"12 * 7\"}", "status": "completed", "thought_signature": "c2ln"}],
            "usage": {"input_tokens": 80, "output_tokens": 12, "total_tokens": 92,
                      "cost": {"currency": "USD", "total_cost": 0.0001}}}


@pytest.mark.parametrize("status", ["completed", "requires_action"])
def test_perplexity_function_tools_round_trip(status):
    from app.providers import perplexity
    calc = Tool("Calculator", "math", {"type": "object", "properties": {"input": {"type": "string"}}})
    call = Call((Message("system", (TextPart("Be brief."),)), Message("user", (TextPart("12*7?"),))),
                "perplexity.sonar", tools=(calc,))
    t = pplx_target()
    body = perplexity.build_request(call, t).request.json
    assert body["tools"] == [{"type": "web_search"}, {"type": "function", "name": "Calculator", "description": "math",
                                                       "parameters": calc.parameters}]
    assert "tool_choice" not in body and "parallel_tool_calls" not in body      # the API has neither
    done = perplexity.parse_response(resp(pplx_function_call(status)), call, t)
    assert done.finish_reason == "tool_calls"
    assert done.tool_calls == (ToolCall("call_abc", "Calculator", {"input": "12 * 7"}, {"thought_signature": "c2ln"}),)
    nxt = Call(call.messages + (Message("assistant", (ToolCallPart(done.tool_calls[0]),)),
                                Message("tool", (ToolResultPart("call_abc", "84", "Calculator"),))),
               call.model, tools=call.tools)
    items = perplexity.build_request(nxt, t).request.json["input"]
    assert items[1:] == [
        {"type": "function_call", "call_id": "call_abc", "name": "Calculator", "arguments": '{"input": "12 * 7"}',
         "thought_signature": "c2ln"},
        {"type": "function_call_output", "call_id": "call_abc", "output": "84", "name": "Calculator"}]


def test_perplexity_cannot_be_made_to_call_a_tool():
    from app.errors import CapabilityMissing
    from app.providers import perplexity
    call = Call((Message("user", (TextPart("x"),)),), "perplexity.sonar", tools=(Tool("f"),),
                tool_choice=ToolChoice("required"))
    with pytest.raises(CapabilityMissing) as err:
        perplexity.build_request(call, pplx_target())
    assert err.value.fields == {"tool_choice": "auto or none only"}
    none = Call(call.messages, call.model, tools=call.tools, tool_choice=ToolChoice("none"))
    assert perplexity.build_request(none, pplx_target()).request.json["tools"] == [{"type": "web_search"}]


# -- dispatch -------------------------------------------------------------------------------------------
@responses_lib.activate
def test_a_stop_sequence_cut_in_the_text_leaves_the_tool_calls_and_their_finish_reason():
    answer = {"id": "chatcmpl-1", "model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Calling the tool. END of plan", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}
    responses_lib.post("https://api.openai.com/v1/chat/completions", json=answer)
    from app.calls import Options
    call = Call((Message("user", (TextPart("go"),)),), "openai.gpt-4o", tools=(Tool("f"),),
                options=Options(stop=("END",)))
    done = Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None).execute(call)
    assert done.text == "Calling the tool. " and done.finish_reason == "tool_calls"
    assert done.tool_calls == (ToolCall("call_1", "f", {}),)


# -- strict tools ------------------------------------------------------------------------------------------
STRICT = Tool("lookup", None, {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
              strict=True)


def test_anthropic_strict_tool_use_on_native_models_with_objects_closed():
    call = Call((Message("user", (TextPart("x"),)),), "anthropic.claude-sonnet-4-6", tools=(STRICT,))
    plan = anthropic.build_request(call, target("anthropic.claude-sonnet-4-6"))
    assert plan.request.json["tools"] == [{"name": "lookup", "strict": True, "input_schema": {
        **STRICT.parameters, "additionalProperties": False}}]
    loose = Tool("lookup", None, {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}, strict=True)
    plan = anthropic.build_request(Call(call.messages, call.model, tools=(loose,)), target("anthropic.claude-sonnet-4-6"))
    assert plan.request.json["tools"] == [{"name": "lookup", "input_schema": loose.parameters}]
    assert any("minimum" in w and "without strict" in w for w in plan.warnings)


def test_gemini_strict_tools_are_validated_calls():
    call = Call((Message("user", (TextPart("x"),)),), "google.gemini-2.5-flash", tools=(STRICT,))
    body = gemini.build_request(call, target("google.gemini-2.5-flash")).request.json
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "VALIDATED"}}
    forced = Call(call.messages, call.model, tools=(STRICT,), tool_choice=ToolChoice("tool", "lookup"))
    body = gemini.build_request(forced, target("google.gemini-2.5-flash")).request.json
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}}


def test_openai_strict_tools_are_sent_strict():
    call = Call((Message("user", (TextPart("x"),)),), "openai.gpt-4o", tools=(STRICT,))
    body = openai_chat.build_request(call, target("openai.gpt-4o")).request.json
    assert body["tools"][0]["function"]["strict"] is True


# -- strict tools: the strict subset out, the caller's shape back (issue 14, "same for tool parameter schemas")
LOOKUP = Tool("lookup", "Find a contact.", {
    "type": "object", "properties": {"name": {"type": "string"}, "city": {"type": "string"}},
    "required": ["name"], "additionalProperties": False}, strict=True)


def test_a_strict_tools_parameters_go_out_in_openais_strict_subset():
    """OpenAI's strict function calling takes only its subset (every property required, objects
    closed: platform.openai.com/docs/guides/function-calling, "Strict mode"); an optional property
    becomes required and nullable, as the openai SDK's own to_strict_json_schema does."""
    call = Call(messages=(Message("user", (TextPart("find Ada"),)),), model="openai.gpt-4o", tools=(LOOKUP,))
    body = openai_chat.build_request(call, target("openai.gpt-4o")).request.json
    function = body["tools"][0]["function"]
    assert function["strict"] is True
    assert function["parameters"]["required"] == ["name", "city"]
    assert function["parameters"]["properties"]["city"] == {"type": ["string", "null"]}
    assert function["parameters"]["additionalProperties"] is False


@responses_lib.activate
def test_a_strict_tools_arguments_come_back_in_the_callers_shape():
    """The null the strict subset made the model send for the left-out optional `city` is removed."""
    responses_lib.post("https://api.openai.com/v1/chat/completions", json={
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "lookup", "arguments": json.dumps({"name": "Ada", "city": None})}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}})
    call = Call(messages=(Message("user", (TextPart("find Ada"),)),), model="openai.gpt-4o", tools=(LOOKUP,))
    answer = Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None).execute(call)
    assert answer.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in answer.tool_calls] == [("lookup", {"name": "Ada"})]
