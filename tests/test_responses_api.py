"""The Responses API: translation as tables (items -> Call, Answer -> Response, the event stream),
every request real n8n 1.123.81 sends (../shared/specs/fixtures/n8n/) answered, and the routes in
process (test client, the provider mocked with `responses`): store, previous_response_id, GET,
DELETE, input_items, tenants, retention, idempotency, the ledger, 400s before any provider is paid.
"""
from __future__ import annotations

import json
import uuid

import pytest
import responses
from sqlalchemy import select

from app.openai_api import responses as api
from app.openai_api import responses_output as output
from app.calls import Answer, Routing, TextPart, Tool, ToolCall, ToolCallPart, ToolChoice, ToolResultPart, Usage
from app.tenancy.db import ledger
from app.errors import ValidationError
from app.openai_api.response_store import ResponseStore
from specs import fixture_file

OPENAI = "https://api.openai.com/v1/chat/completions"
SSE = "text/event-stream"
KEYS = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "ANTHROPIC_API_KEY": "sk-ant-test-0123456789"}
PROMPT = "What is the capital of France?"


def fixture(name: str) -> dict:
    return json.loads(fixture_file(f"n8n/{name}").read_text())


def answer(text="Paris.", tool_calls=(), finish="stop", data=None) -> Answer:
    return Answer(text=text, data=data, model="gpt-4o-2024-08-06", provider="openai", finish_reason=finish,
                  usage=Usage(20, 8), cost=0.001, latency_ms=5,
                  routing=Routing(False, "openai.gpt-4o", 1.0, "requested"), request_id="rq1",
                  tool_calls=tuple(tool_calls))


def call_of(body: dict, history=()):
    return api.build_call(api.parse_request(body), tuple(history))


def field_of(body: dict, history=()) -> str:
    with pytest.raises(ValidationError) as info:
        call_of(body, history)
    return next(iter(info.value.fields))


# -- request translation (pure) -------------------------------------------------------------------------
def test_string_input_and_instructions():
    call = call_of({"model": "gpt-4o", "input": PROMPT, "instructions": "Be brief.", "temperature": 0.2,
                    "max_output_tokens": 64})
    assert [(m.role, m.parts) for m in call.messages] == [("system", (TextPart("Be brief."),)),
                                                          ("user", (TextPart(PROMPT),))]
    assert call.options.temperature == 0.2 and call.options.max_tokens == 64 and call.model == "gpt-4o"
    assert call.tools == () and call.tool_choice is None and call.response_format is None


def test_defaults_and_clamped_temperature():
    request = api.parse_request({"model": "gpt-4o", "input": PROMPT, "temperature": 1.5})
    call = api.build_call(request)
    assert call.options.temperature == 1.0 and call.options.max_tokens == 4096
    assert request.store is True and request.stream is False


def test_n8n_openai_node_v21():
    body = fixture("openai_node_v21_responses.json")["request"]["body"]
    request = api.parse_request(body)
    call = api.build_call(request)
    assert [(m.role, m.text) for m in call.messages] == [("user", PROMPT)]
    assert request.store is True and call.parallel_tool_calls is None and request.warnings == ()


def test_n8n_chain_with_empty_text():
    body = fixture("chain_chat13_default_responses.json")["request"]["body"]
    request = api.parse_request(body)
    assert request.text_format == {"type": "text"} and request.stream is False
    assert [(m.role, m.text) for m in api.build_call(request).messages] == [("user", PROMPT)]


@pytest.mark.parametrize("name", ["agent_calc_chat13_default_responses_1_tool_call.json",
                                  "agent_stream_webhook_responses_1_tool_call.json"])
def test_n8n_agent_first_turn_tools(name):
    body = fixture(name)["request"]["body"]
    call = call_of(body)
    [tool] = call.tools
    assert tool.name == "Calculator" and tool.strict is False and tool.description.startswith("Useful for")
    assert tool.parameters == {"type": "object", "properties": {"input": {"type": "string"}},
                               "additionalProperties": False}                # $schema dropped
    assert call.tool_choice == ToolChoice("auto")
    assert [m.role for m in call.messages] == ["user"]


@pytest.mark.parametrize("name", ["agent_calc_chat13_default_responses_2_tool_result.json",
                                  "agent_stream_webhook_responses_2_tool_result.json"])
def test_n8n_agent_second_turn_tool_result(name):
    body = fixture(name)["request"]["body"]
    call_id = body["input"][2]["call_id"]
    call = call_of(body)
    assert [m.role for m in call.messages] == ["user", "assistant", "tool"]
    assistant = call.messages[1]
    assert isinstance(assistant.parts[0], TextPart) and assistant.parts[0].text.startswith("Calling Calculator")
    assert assistant.parts[1] == ToolCallPart(ToolCall(call_id, "Calculator", {"input": "12 * 7", "id": call_id}))
    assert call.messages[2].parts == (ToolResultPart(call_id, "[{\"response\":\"84\"}]", name="Calculator"),)


def test_items_images_and_roles():
    call = call_of({"model": "gpt-4o", "input": [
        {"type": "message", "role": "developer", "content": "Rules."},
        {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                     {"type": "input_image", "image_url": "https://example.com/a.png",
                                      "detail": "low"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "A cat."}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"role": "user", "content": "Sure?"}]})
    assert [m.role for m in call.messages] == ["system", "user", "assistant", "user"]
    assert call.messages[1].parts[1].url == "https://example.com/a.png" and call.messages[1].parts[1].detail == "low"


def test_parallel_calls_are_one_assistant_turn_and_tool_choice():
    call = call_of({"model": "gpt-4o", "tool_choice": {"type": "function", "name": "add"}, "parallel_tool_calls": False,
                    "tools": [{"type": "function", "name": "add", "parameters": {"type": "object"}, "strict": True}],
                    "input": [{"role": "user", "content": "1+2, 3+4"},
                              {"type": "function_call", "call_id": "a", "name": "add", "arguments": "{\"x\": 1}"},
                              {"type": "function_call", "call_id": "b", "name": "add", "arguments": ""},
                              {"type": "function_call_output", "call_id": "a", "output": "3"},
                              {"type": "function_call_output", "call_id": "b",
                               "output": [{"type": "input_text", "text": "7"}]}]})
    assert [m.role for m in call.messages] == ["user", "assistant", "tool", "tool"]
    assert call.messages[1].tool_calls == (ToolCall("a", "add", {"x": 1}), ToolCall("b", "add", {}))
    assert call.messages[3].parts == (ToolResultPart("b", "7", name="add"),)
    assert call.tools == (Tool("add", None, {"type": "object"}, True),)
    assert call.tool_choice == ToolChoice("tool", "add") and call.parallel_tool_calls is False


def test_previous_conversation_goes_first_and_answers_its_calls():
    history = [{"type": "message", "id": "m1", "role": "user", "content": [{"type": "input_text", "text": "12*7?"}]},
               {"type": "function_call", "id": "fc1", "call_id": "c1", "name": "calc", "arguments": "{}"}]
    call = call_of({"model": "gpt-4o", "instructions": "New rules.", "previous_response_id": "resp_1",
                    "input": [{"type": "function_call_output", "call_id": "c1", "output": "84"}]}, history)
    assert [m.role for m in call.messages] == ["system", "user", "assistant", "tool"]
    assert call.messages[3].parts == (ToolResultPart("c1", "84", name="calc"),)


def test_structured_output_formats():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    call = call_of({"model": "gpt-4o", "input": PROMPT,
                    "text": {"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}}})
    assert (call.response_format.type, call.response_format.name, call.response_format.schema,
            call.response_format.strict) == ("json_schema", "city", schema, True)
    assert call_of({"model": "gpt-4o", "input": PROMPT,
                    "text": {"format": {"type": "json_object"}}}).response_format.type == "json_object"


def test_ignored_fields_warn():
    request = api.parse_request({"model": "gpt-4o", "input": PROMPT, "top_p": 0.5, "reasoning": {"effort": "high"},
                                 "metadata": {"a": "b"}, "user": "u", "truncation": "auto", "include": [],
                                 "service_tier": "auto", "store": False, "background": False})
    assert request.warnings == ("top_p is not supported by flowcall and was ignored.",)
    assert request.reasoning_effort == "high" and request.echo["reasoning"] == {"effort": "high", "summary": None}
    assert request.store is False and request.echo["metadata"] == {"a": "b"}
    assert api.parse_request({"model": "gpt-4o", "input": PROMPT, "top_p": 1,
                              "reasoning": {"effort": None, "summary": None}}).warnings == ()


@pytest.mark.parametrize("body, where", [
    ({"input": PROMPT}, "model"),
    ({"model": "gpt-4o"}, "input"),
    ({"model": "gpt-4o", "input": PROMPT, "frequency": 1}, "frequency"),
    ({"model": "gpt-4o", "input": PROMPT, "background": True}, "background"),
    ({"model": "gpt-4o", "input": PROMPT, "conversation": "conv_1"}, "conversation"),
    ({"model": "gpt-4o", "input": PROMPT, "tools": [{"type": "web_search"}]}, "tools.0.type"),
    ({"model": "gpt-4o", "input": PROMPT, "tools": [{"type": "mcp", "server_label": "x"}]}, "tools.0.type"),
    ({"model": "gpt-4o", "input": PROMPT, "tools": [{"type": "function", "name": "bad name"}]}, "tools.0.name"),
    ({"model": "gpt-4o", "input": PROMPT, "tools": [{"type": "function", "name": "f", "parameters": {"type": "array"}}]},
     "tools.0.parameters"),
    ({"model": "gpt-4o", "input": PROMPT, "tool_choice": "required"}, "tool_choice"),
    ({"model": "gpt-4o", "input": PROMPT, "tool_choice": {"type": "function", "name": "nope"},
      "tools": [{"type": "function", "name": "f"}]}, "tool_choice.name"),
    ({"model": "gpt-4o", "input": PROMPT, "text": {"format": {"type": "json_schema", "name": "x"}}},
     "text.format.schema"),
    ({"model": "gpt-4o", "input": PROMPT, "temperature": 3}, "temperature"),
    ({"model": "gpt-4o", "input": PROMPT, "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "gpt-4o", "input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
    ({"model": "gpt-4o", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input.0.content.0.type"),
    ({"model": "gpt-4o", "input": [{"type": "item_reference", "id": "x"}]}, "input.0.type"),
    ({"model": "gpt-4o", "input": [{"role": "assistant", "content": "hi"}]}, "input"),
    # a malformed tool conversation
    ({"model": "gpt-4o", "input": [{"role": "user", "content": "x"},
                                   {"type": "function_call_output", "call_id": "nowhere", "output": "1"}]},
     "input.1.call_id"),
    ({"model": "gpt-4o", "input": [{"role": "user", "content": "x"},
                                   {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"}]},
     "input.1.arguments"),
    ({"model": "gpt-4o", "input": [{"role": "user", "content": "x"},
                                   {"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]},
     "input.1.arguments"),
    ({"model": "gpt-4o", "input": [{"type": "function_call_output", "call_id": "c", "output": "1"},
                                   {"role": "user", "content": "x"},
                                   {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]},
     "input.0.call_id"),
])
def test_bad_requests_name_the_field(body, where):
    assert field_of(body) == where


# -- Answer -> Response (pure) --------------------------------------------------------------------------
def test_response_object_text():
    request = api.parse_request({"model": "gpt-4o", "input": PROMPT, "metadata": {"k": "v"}})
    body = output.completed_response(request, "resp_1", 100, answer("Paris."))
    assert body["object"] == "response" and body["status"] == "completed" and body["model"] == "openai.gpt-4o"
    [item] = body["output"]
    assert item["type"] == "message" and item["role"] == "assistant" and item["status"] == "completed"
    assert item["content"] == [{"type": "output_text", "text": "Paris.", "annotations": [], "logprobs": []}]
    assert body["usage"] == {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 8,
                             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 28}
    assert body["metadata"] == {"k": "v"} and body["store"] is True and body["flowcall"]["provider"] == "openai"


def test_response_object_tool_calls_and_incomplete():
    request = api.parse_request({"model": "gpt-4o", "input": PROMPT})
    body = output.completed_response(request, "resp_1", 100, answer("", [ToolCall("call_1", "calc", {"x": "12*7"})],
                                                                 finish="tool_calls"))
    [item] = body["output"]
    assert (item["type"], item["call_id"], item["name"], json.loads(item["arguments"]), item["status"]) == (
        "function_call", "call_1", "calc", {"x": "12*7"}, "completed")
    assert item["id"].startswith("fc_") and body["status"] == "completed"
    cut = output.completed_response(request, "resp_2", 100, answer("Par", finish="length"))
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}


def test_structured_output_is_the_parsed_json():
    request = api.parse_request({"model": "gpt-4o", "input": PROMPT, "text": {"format": {"type": "json_object"}}})
    body = output.completed_response(request, "resp_1", 1, answer("```json\n{\"a\": 1}\n```", data={"a": 1}))
    assert body["output"][0]["content"][0]["text"] == "{\"a\": 1}"


def events_of(text: str) -> list[dict]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        events.append(data)
    return events


def stream_of(request, final_answer, pieces=()) -> list[dict]:
    writer = output.EventWriter(request, "resp_1", 1, "openai.gpt-4o")
    text = "".join(writer.opening())
    for piece in pieces:
        text += "".join(writer.delta(piece))
    events, _ = writer.closing(final_answer)
    return events_of(text + "".join(events))


def collapsed(events: list[dict]) -> list[str]:
    """Event types with runs of one delta type counted once."""
    kinds = [e["type"] for e in events]
    return [k for i, k in enumerate(kinds) if not (k.endswith(".delta") and i and kinds[i - 1] == k)]


@pytest.mark.parametrize("name, pieces, final", [
    ("agent_stream_webhook_responses_1_tool_call.json", (),
     answer("", [ToolCall("call_11c4f67d6b9840eb93f9e176", "Calculator", {"input": "12 * 7"})], "tool_calls")),
    ("agent_stream_webhook_responses_2_tool_result.json", ("The", " tool", " said:", " [{\"response\":\"84\"}]"),
     answer("The tool said: [{\"response\":\"84\"}]")),
])
def test_event_sequence_is_the_one_n8n_accepted(name, pieces, final):
    recorded = fixture(name)
    request = api.parse_request(recorded["request"]["body"])
    events = stream_of(request, final, pieces)
    expected = recorded["answer_given"]["sse"]
    assert collapsed(events) == collapsed(expected)            # deltas may be cut differently
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    if name.endswith("2_tool_result.json"):
        assert [e["type"] for e in events] == [e["type"] for e in expected]
    mine_by_type = {}
    for e in events:
        mine_by_type.setdefault(e["type"], e)
    for theirs in expected:
        mine = mine_by_type[theirs["type"]]
        assert set(theirs) - {"obfuscation"} <= set(mine), mine["type"]
        if "item" in theirs:
            assert {k: v for k, v in mine["item"].items() if k != "id"} == \
                   {k: v for k, v in theirs["item"].items() if k != "id"}
        if "arguments" in theirs:
            assert json.loads(mine["arguments"]) == json.loads(theirs["arguments"])
    for kind in ("response.output_text.delta", "response.function_call_arguments.delta"):
        joined = "".join(e["delta"] for e in events if e["type"] == kind)
        assert joined == "".join(e["delta"] for e in expected if e["type"] == kind)
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output"] == [e["item"] for e in events
                                                                 if e["type"] == "response.output_item.done"]


def test_function_call_arguments_stream_whole():
    request = api.parse_request({"model": "gpt-4o", "input": PROMPT})
    events = stream_of(request, answer("Let me check.", [ToolCall("c1", "calc", {"x": 1})], "tool_calls"),
                       ("Let me", " check."))
    calls = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(c["output_index"], json.loads(c["arguments"])) for c in calls] == [(1, {"x": 1})]
    assert [i["type"] for i in events[-1]["response"]["output"]] == ["message", "function_call"]


# -- the store (pure, with a fake clock) -----------------------------------------------------------------
def test_store_retention_and_purge(app):
    now = [1000.0]
    store = ResponseStore(app.extensions["flowcall"].store.engine, retention_days=1, clock=lambda: now[0])
    store.save("t1", {"id": "resp_a", "output": [{"type": "message", "id": "m2"}]},
               [{"type": "message", "id": "m1"}], [{"type": "message", "id": "m0"}])
    assert store.get("t1", "resp_a")["id"] == "resp_a" and store.get("t2", "resp_a") is None
    assert [i["id"] for i in store.conversation("t1", "resp_a")] == ["m0", "m1", "m2"]
    assert store.delete("t2", "resp_a") is False
    now[0] += 86400.0
    assert store.get("t1", "resp_a") is None and store.input_items("t1", "resp_a") is None
    assert store.purge() == 1


def test_retention_setting_is_checked_at_start(config):
    from nodes import create_app
    with pytest.raises(SystemExit, match="FLOWCALL_RESPONSE_RETENTION_DAYS"):
        create_app({**config, "FLOWCALL_RESPONSE_RETENTION_DAYS": "0"})


# -- the routes, in process -------------------------------------------------------------------------------
@pytest.fixture
def config(config):
    return {**config, **KEYS}


@pytest.fixture
def other_tenant() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def other_key(app, other_tenant) -> str:
    return app.extensions["flowcall"].store.create_key(other_tenant, name="other")[1]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def post(client, key, body, **headers):
    return client.post("/v1/responses", json=body, headers={**bearer(key), **headers})


def openai_ok(text="Paris.", usage=(20, 8)):
    return {"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}


def openai_stream(*pieces) -> str:
    """Shaped like ../shared/specs/fixtures/test_openai/test_openai_moderation_stream.yaml (pydantic-ai, MIT)."""
    base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06"}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    chunks += [{**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
               {**base, "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}}]
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def sent(index: int = -1) -> dict:
    return json.loads(responses.calls[index].request.body)


def ledger_rows(app) -> list[dict]:
    with app.extensions["flowcall"].store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(ledger).order_by(ledger.c.id)).mappings()]


@responses.activate
@pytest.mark.parametrize("name", ["openai_node_v21_responses.json", "chain_chat13_default_responses.json"])
def test_n8n_text_requests_answered(client, api_key, app, name):
    responses.post(OPENAI, json=openai_ok("Paris."))
    r = post(client, api_key, fixture(name)["request"]["body"])
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["output"][0]["content"][0] == {"type": "output_text", "text": "Paris.", "annotations": [],
                                               "logprobs": []}
    upstream = sent()
    assert upstream["model"] == "gpt-4o" and upstream["messages"] == [{"role": "user", "content": PROMPT}]
    [row] = ledger_rows(app)
    assert (row["endpoint"], row["status"], row["input_tokens"], row["output_tokens"]) == (
        "openai_responses", 200, 20, 8)


@responses.activate
def test_stream_over_http_and_store(client, api_key, app):
    responses.post(OPENAI, body=openai_stream("The capital", " is Par", "is."), content_type=SSE)
    r = post(client, api_key, {"model": "gpt-4o", "input": PROMPT, "stream": True})
    assert r.status_code == 200 and r.mimetype == SSE
    events = events_of(r.get_data(as_text=True))
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "The capital is Paris."
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["usage"]["total_tokens"] == 28
    assert sent()["stream"] is True
    stored = client.get(f"/v1/responses/{final['id']}", headers=bearer(api_key)).get_json()
    assert stored == final
    [row] = ledger_rows(app)
    assert row["endpoint"] == "openai_responses" and row["output_tokens"] == 8


@responses.activate
def test_previous_response_id_and_stored_routes(client, api_key, other_key):
    responses.post(OPENAI, json=openai_ok("Noted, Ada."))
    responses.post(OPENAI, json=openai_ok("Your name is Ada."))
    first = post(client, api_key, {"model": "gpt-4o", "instructions": "Be kind.", "input": "I am Ada."}).get_json()
    second = post(client, api_key, {"model": "gpt-4o", "input": "Who am I?",
                                    "previous_response_id": first["id"]}).get_json()
    assert second["previous_response_id"] == first["id"] and second["instructions"] is None
    assert sent()["messages"] == [{"role": "user", "content": "I am Ada."},
                                  {"role": "assistant", "content": "Noted, Ada."},
                                  {"role": "user", "content": "Who am I?"}]
    items = client.get(f"/v1/responses/{second['id']}/input_items", headers=bearer(api_key)).get_json()
    assert items["object"] == "list" and [i["content"][0]["text"] for i in items["data"]] == ["Who am I?"]
    for method, path in [("get", f"/v1/responses/{first['id']}"), ("delete", f"/v1/responses/{first['id']}"),
                         ("get", f"/v1/responses/{first['id']}/input_items")]:
        r = getattr(client, method)(path, headers=bearer(other_key))
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "response_not_found"
    r = post(client, other_key, {"model": "gpt-4o", "input": "x", "previous_response_id": first["id"]})
    assert r.status_code == 404 and r.get_json()["error"]["param"] == "previous_response_id"
    assert len(responses.calls) == 2
    r = client.delete(f"/v1/responses/{first['id']}", headers=bearer(api_key))
    assert r.get_json() == {"id": first["id"], "object": "response.deleted", "deleted": True}
    assert client.get(f"/v1/responses/{first['id']}", headers=bearer(api_key)).status_code == 404


def test_input_items_pages(client, api_key):
    body = {"model": "mock.echo", "input": [{"role": "user", "content": str(i)} for i in range(5)]}
    rid = post(client, api_key, body).get_json()["id"]
    url = f"/v1/responses/{rid}/input_items"
    page = client.get(f"{url}?limit=2", headers=bearer(api_key)).get_json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["4", "3"] and page["has_more"] is True
    rest = client.get(f"{url}?limit=10&after={page['last_id']}", headers=bearer(api_key)).get_json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["2", "1", "0"] and rest["has_more"] is False
    asc = client.get(f"{url}?order=asc&limit=1", headers=bearer(api_key)).get_json()
    assert asc["first_id"] == asc["last_id"] and asc["data"][0]["content"][0]["text"] == "0"
    assert client.get(f"{url}?limit=0", headers=bearer(api_key)).get_json()["error"]["param"] == "limit"


def test_store_false_is_not_kept(client, api_key):
    rid = post(client, api_key, {"model": "mock.echo", "input": PROMPT, "store": False}).get_json()["id"]
    assert client.get(f"/v1/responses/{rid}", headers=bearer(api_key)).status_code == 404


@responses.activate
def test_idempotent_replay(client, api_key):
    responses.post(OPENAI, json=openai_ok())
    first = post(client, api_key, {"model": "gpt-4o", "input": PROMPT}, **{"Idempotency-Key": "k-1"})
    again = post(client, api_key, {"model": "gpt-4o", "input": PROMPT}, **{"Idempotency-Key": "k-1"})
    assert again.headers["Idempotent-Replay"] == "true" and again.get_json() == first.get_json()
    assert len(responses.calls) == 1
    responses.post(OPENAI, body=openai_stream("Par", "is."), content_type=SSE)
    streamed = post(client, api_key, {"model": "gpt-4o", "input": PROMPT, "stream": True},
                    **{"Idempotency-Key": "k-2"}).get_data(as_text=True)
    replay = post(client, api_key, {"model": "gpt-4o", "input": PROMPT, "stream": True},
                  **{"Idempotency-Key": "k-2"})
    assert replay.headers["Idempotent-Replay"] == "true"
    assert events_of(replay.get_data(as_text=True))[-1]["response"] == events_of(streamed)[-1]["response"]
    assert len(responses.calls) == 2


@responses.activate
@pytest.mark.parametrize("body, param", [
    ({"model": "gpt-4o", "input": [{"role": "user", "content": "x"},
                                   {"type": "function_call_output", "call_id": "c9", "output": "1"}]},
     "input.1.call_id"),
    ({"model": "gpt-4o", "input": [{"role": "user", "content": "x"},
                                   {"type": "function_call", "call_id": "c", "name": "f", "arguments": "nope"}]},
     "input.1.arguments"),
    ({"model": "gpt-4o", "input": PROMPT, "tools": [{"type": "file_search", "vector_store_ids": ["v"]}]},
     "tools.0.type"),
    ({"model": "gpt-4o", "input": PROMPT, "stream": True, "previous_response_id": "resp_nope"},
     "previous_response_id"),
])
def test_errors_before_any_provider_is_paid(client, api_key, body, param):
    r = post(client, api_key, body)
    assert 400 <= r.status_code < 500 and r.get_json()["error"]["param"] == param
    assert len(responses.calls) == 0


def test_a_call_id_from_another_tenants_response_is_refused(app, client, api_key, other_tenant):
    """Another tenant's stored function_call can neither be continued nor answered by its call id."""
    stored = app.extensions["flowcall"].responses
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_theirs", "name": "f", "arguments": "{}",
            "status": "completed"}
    stored.save(other_tenant, {"id": "resp_theirs", "output": [call]},
                [{"type": "message", "id": "m1", "role": "user", "content": [{"type": "input_text", "text": "x"}]}],
                [])
    output = {"type": "function_call_output", "call_id": "call_theirs", "output": "1"}
    r = post(client, api_key, {"model": "mock.echo", "previous_response_id": "resp_theirs", "input": [output]})
    assert r.status_code == 404 and r.get_json()["error"]["param"] == "previous_response_id"
    r = post(client, api_key, {"model": "mock.echo", "input": [{"role": "user", "content": "x"}, output]})
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "input.1.call_id"


def test_unauthenticated_and_unknown_routes_are_openai_errors(client, api_key):
    r = client.post("/v1/responses", json={"model": "gpt-4o", "input": PROMPT})
    assert r.status_code == 401 and r.get_json()["error"]["type"] == "authentication_error"
    r = client.get("/v1/responses/resp_x", headers=bearer(api_key))
    assert r.status_code == 404 and r.get_json()["error"]["type"] == "not_found_error"
    r = client.post("/v1/responses", data="{", headers={**bearer(api_key), "Content-Type": "application/json"})
    assert r.status_code == 400 and "error" in r.get_json()


# -- tools through the adapters: once the `tools` branch is merged -----------------------------------------
@responses.activate
def test_n8n_agent_tool_call_round_trip(client, api_key):
    responses.post(OPENAI, json={
        "id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None,
                     "tool_calls": [{"id": "call_1", "type": "function",
                                     "function": {"name": "Calculator", "arguments": "{\"input\": \"12 * 7\"}"}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}})
    responses.post(OPENAI, json=openai_ok("84."))
    first = post(client, api_key, fixture("agent_calc_chat13_default_responses_1_tool_call.json")["request"]["body"])
    [item] = first.get_json()["output"]
    assert item["type"] == "function_call" and item["call_id"] == "call_1"
    assert sent(0)["tools"][0]["function"]["name"] == "Calculator"
    second = post(client, api_key, fixture("agent_calc_chat13_default_responses_2_tool_result.json")["request"]["body"])
    assert second.status_code == 200 and second.get_json()["output"][0]["content"][0]["text"] == "84."
    assert [m["role"] for m in sent(1)["messages"]] == ["user", "assistant", "tool"]
