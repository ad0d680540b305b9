"""End to end: the official `openai` package's Responses API client against flowcall under gunicorn,
the fake provider (tests/fake_provider.py) on 127.0.0.1 behind it, for an OpenAI, an
Anthropic and a Gemini model: create, stream, previous_response_id, structured output, the stored
response's retrieve / delete / input_items, and another tenant's id a 404.
"""
from __future__ import annotations

import json

import openai
import pytest
import yaml
from pydantic import BaseModel

from service import SDK_ENV, create_key, e2e_service, openai_client, received, script, usage_totals
from specs import fixture_file

pytestmark = pytest.mark.e2e
PROMPT = "What is the capital of France?"
ECHO = f"Echo: {PROMPT}"
FAMILIES = [
    # (model, path the fake must receive for a whole call, for a streamed call)
    ("openai.gpt-4o", "/openai/v1/chat/completions", "/openai/v1/chat/completions"),
    ("anthropic.claude-sonnet-4-6", "/anthropic/v1/messages", "/anthropic/v1/messages"),
    ("google.gemini-2.5-flash", "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
     "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
]
MODELS = [f[0] for f in FAMILIES]
CALCULATOR = {"type": "function", "name": "Calculator", "description": "Evaluates a math expression.",
              "parameters": {"type": "object", "properties": {"input": {"type": "string"}},
                             "required": ["input"], "additionalProperties": False}}


class City(BaseModel):
    city: str
    population: int


@pytest.fixture(scope="module")
def service(fake, tmp_path_factory):
    with e2e_service(tmp_path_factory.mktemp("e2e-responses-sdk"), fake, extra_env=SDK_ENV) as svc:
        svc["other_key"], _ = create_key(svc["env"])        # a second tenant
        yield svc


@pytest.fixture
def client(service):
    with openai_client(service) as sdk:
        yield sdk


@pytest.fixture
def other_tenant(service):
    with openai_client(service, service["other_key"]) as sdk:
        yield sdk


def sent_text(body: dict) -> str:
    """Every text the provider was sent, whatever its request shape."""
    return json.dumps(body, ensure_ascii=False)


@pytest.mark.parametrize("model, path, _", FAMILIES)
def test_create(client, fake, service, model, path, _):
    before = usage_totals(service)
    response = client.responses.create(model=model, instructions="Answer briefly.", input=PROMPT)
    assert response.status == "completed" and response.output_text == ECHO and response.model == model
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.usage.input_tokens == 12 and response.usage.output_tokens == 7
    assert response.id.startswith("resp_")
    [sent] = received(fake)
    assert sent["path"] == path
    assert "Answer briefly." in sent_text(sent["body"]) and PROMPT in sent_text(sent["body"])
    after = usage_totals(service)
    assert after["calls"] == before["calls"] + 1 and after["input_tokens"] - before["input_tokens"] == 12


@pytest.mark.parametrize("model, _, path", FAMILIES)
def test_stream(client, fake, model, _, path):
    with client.responses.stream(model=model, input=PROMPT) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == ECHO and len(deltas) > 3
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == ECHO and final.status == "completed" and final.usage.input_tokens == 12
    [sent] = received(fake)
    assert sent["path"] == path


@pytest.mark.parametrize("model", MODELS)
def test_previous_response_id_continues_the_conversation(client, fake, model):
    first = client.responses.create(model=model, input="My name is Ada.")
    second = client.responses.create(model=model, input=PROMPT, previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.output_text == ECHO
    history = sent_text(received(fake)[1]["body"])
    assert "My name is Ada." in history and "Echo: My name is Ada." in history and PROMPT in history


@pytest.mark.parametrize("model", MODELS)
def test_structured_output(client, fake, model):
    parsed = client.responses.parse(model=model, input="Paris, 2.1 million people.", text_format=City)
    assert parsed.output_parsed == City(city="example", population=0)
    [sent] = received(fake)
    assert "population" in sent_text(sent["body"])           # the schema went to the provider natively


def test_stored_response_retrieve_input_items_delete(client, other_tenant):
    created = client.responses.create(model="openai.gpt-4o", input=[
        {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": PROMPT}])
    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == created.output_text
    items = client.responses.input_items.list(created.id, order="asc")
    assert [i.role for i in items.data] == ["user", "assistant", "user"]
    assert items.data[0].content[0].text == "first" and items.data[2].content[0].text == PROMPT
    for call in (lambda c: c.responses.retrieve(created.id), lambda c: c.responses.input_items.list(created.id),
                 lambda c: c.responses.delete(created.id),
                 lambda c: c.responses.create(model="openai.gpt-4o", input="hi", previous_response_id=created.id)):
        with pytest.raises(openai.NotFoundError):
            call(other_tenant)
    client.responses.retrieve(created.id)                   # the other tenant deleted nothing
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_store_false_keeps_nothing(client):
    created = client.responses.create(model="anthropic.claude-sonnet-4-6", input=PROMPT, store=False)
    assert created.store is False and created.output_text == ECHO
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_bad_requests_are_400_before_any_provider(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="openai.gpt-4o", input=PROMPT, tools=[{"type": "web_search"}])
    assert info.value.param == "tools.0.type" and "web_search" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="openai.gpt-4o", input=[
            {"role": "user", "content": PROMPT},
            {"type": "function_call_output", "call_id": "call_nowhere", "output": "84"}])
    assert info.value.param == "input.1.call_id"
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="openai.gpt-4o", input=[
            {"role": "user", "content": PROMPT},
            {"type": "function_call", "call_id": "c1", "name": "Calculator", "arguments": "12 * 7"}])
    assert info.value.param == "input.1.arguments"
    assert received(fake) == []


def test_failure_after_the_first_event_raises_in_the_sdk(client, fake):
    script(fake, [{"fail_after": 3}])
    deltas = []
    with (pytest.raises(openai.APIError) as info,
          client.responses.stream(model="openai.gpt-4o", input=PROMPT) as stream):
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    assert deltas and ECHO.startswith("".join(deltas)) and "".join(deltas) != ECHO
    assert info.value.body["code"] == "provider_overloaded"
    assert len(received(fake)) == 1


# -- tool calls: the adapters send and parse tools once the `tools` branch is merged -----------------------
TOOL_ANSWERS = {
    "openai.gpt-4o": {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                      "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                          "role": "assistant", "content": None, "tool_calls": [{
                              "id": "call_1", "type": "function",
                              "function": {"name": "Calculator", "arguments": "{\"input\": \"12 * 7\"}"}}]}}],
                      "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}},
    "anthropic.claude-sonnet-4-6": {"id": "msg_1", "type": "message", "role": "assistant",
                                    "model": "claude-sonnet-4-6", "stop_reason": "tool_use", "stop_sequence": None,
                                    "content": [{"type": "tool_use", "id": "call_1", "name": "Calculator",
                                                 "input": {"input": "12 * 7"}}],
                                    "usage": {"input_tokens": 12, "output_tokens": 7}},
    "google.gemini-2.5-flash": {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "Calculator", "args": {"input": "12 * 7"}}}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19},
        "modelVersion": "gemini-2.5-flash"},
}


@pytest.mark.parametrize("model", MODELS)
def test_function_call_and_its_output(client, fake, model):
    script(fake, [{"status": 200, "body": TOOL_ANSWERS[model]}])
    first = client.responses.create(model=model, input="What is 12 times 7?", tools=[CALCULATOR])
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "Calculator" and json.loads(call.arguments) == {"input": "12 * 7"}
    second = client.responses.create(model=model, tools=[CALCULATOR], input=[
        {"role": "user", "content": "What is 12 times 7?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "84"}])
    assert second.status == "completed" and second.output          # the fake may call the tool again
    body = sent_text(received(fake)[1]["body"])
    assert "Calculator" in body and "84" in body and "12 * 7" in body
    third = client.responses.create(model=model, tools=[CALCULATOR], previous_response_id=first.id,
                                    input=[{"type": "function_call_output", "call_id": call.call_id,
                                            "output": "84"}])
    assert third.status == "completed" and third.previous_response_id == first.id
    body = sent_text(received(fake)[2]["body"])
    assert "What is 12 times 7?" in body and "12 * 7" in body and "84" in body


_N8N_STREAM = json.loads(fixture_file("n8n/agent_stream_webhook_chat_1_tool_call.json").read_text())
_GEMINI_STREAM = yaml.safe_load(fixture_file("test_google/test_google_streaming_tool_call_thought_signature.yaml")
                                .read_text())["interactions"][0]["response"]["body"]["string"]
GET_COUNTRY = {"type": "function", "name": "get_country", "description": "",
               "parameters": {"type": "object", "properties": {}}}
# Streamed first turns: (model, tools, script for the fake, the call the client must see). The scripts are
# providers' recorded streams (the fake's `sse_raw` step); Anthropic's is the fake's own tool_use stream.
STREAMED_CALLS = [
    ("openai.gpt-4o", CALCULATOR,
     [{"sse_raw": "".join(f"data: {json.dumps(e)}\n\n" for e in _N8N_STREAM["answer_given"]["sse"]) +
       "data: [DONE]\n\n"}], ("Calculator", {"input": "12 * 7"})),
    ("anthropic.claude-sonnet-4-6", CALCULATOR, [], ("Calculator", None)),
    ("google.gemini-3.1-pro-preview", GET_COUNTRY, [{"sse_raw": _GEMINI_STREAM}], ("get_country", {})),
]


@pytest.mark.parametrize("model, tool, steps, expected", STREAMED_CALLS)
def test_streamed_function_call(client, fake, model, tool, steps, expected):
    script(fake, steps)
    with client.responses.stream(model=model, input="Call the tool.", tools=[tool]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert {"response.function_call_arguments.delta", "response.function_call_arguments.done"} <= set(kinds)
    [call] = [item for item in final.output if item.type == "function_call"]
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert call.name == expected[0] and [d.arguments for d in done] == [call.arguments]
    assert isinstance(json.loads(call.arguments), dict)
    if expected[1] is not None:
        assert json.loads(call.arguments) == expected[1]
    [sent] = received(fake)
    assert tool["name"] in sent_text(sent["body"])


def test_gemini_thought_signature_survives_the_round_trip(client, fake):
    """Gemini 3 must get its thoughtSignature back with the call: the call id handed out carries it."""
    signature = json.loads(_GEMINI_STREAM.split("\r\n")[0][len("data: "):])[
        "candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    script(fake, [{"sse_raw": _GEMINI_STREAM}])
    model = "google.gemini-3.1-pro-preview"
    with client.responses.stream(model=model, input="Where am I?", tools=[GET_COUNTRY]) as stream:
        final = stream.get_final_response()
    [call] = [item for item in final.output if item.type == "function_call"]
    client.responses.create(model=model, tools=[GET_COUNTRY], input=[
        {"role": "user", "content": "Where am I?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "Mexico"}])
    client.responses.create(model=model, tools=[GET_COUNTRY], previous_response_id=final.id, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "Mexico"}])
    for sent in received(fake)[1:]:
        parts = [p for c in sent["body"]["contents"] for p in c["parts"]]
        [with_call] = [p for p in parts if "functionCall" in p]
        assert with_call["thoughtSignature"] == signature
        [result] = [p for p in parts if "functionResponse" in p]
        assert result["functionResponse"]["name"] == "get_country"
