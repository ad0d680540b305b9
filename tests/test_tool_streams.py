"""Tool calls in provider streams: each format's own stream (recorded shapes) turned into OpenAI-style
tool-call pieces, and put together again into exactly the answer the whole call gives."""
from __future__ import annotations

import json

import pytest
import responses
import yaml

from app.calls import Call, Message, TextPart, Tool, ToolCall
from app.catalog import Catalog
from app.config import Settings
from app.dispatch import Dispatcher
from app.errors import InvalidProviderResponse
from app.providers import gemini
from app.providers.streams import ToolCallDelta
from app.streaming import StreamingDispatcher
from specs import fixture_file

CATALOG = Catalog.load()
ENV = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
       "GEMINI_API_KEY": "gem-test-0123456789"}
SSE = "text/event-stream; charset=utf-8"
N8N_SSE = json.loads(fixture_file("n8n/agent_stream_webhook_chat_1_tool_call.json").read_text())["answer_given"]["sse"]
GEMINI_STREAM = yaml.safe_load(fixture_file("test_google/test_google_streaming_tool_call_thought_signature.yaml")
                               .read_text())["interactions"][0]["response"]["body"]["string"]


def dispatcher() -> StreamingDispatcher:
    return StreamingDispatcher(Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None))


def call(model: str, *tools: Tool) -> Call:
    return Call((Message("user", (TextPart("What is 12 times 7?"),)),), model, tools=tools or (Tool("Calculator"),),
                request_id="req-1")


def sse(*events) -> str:
    return "".join((f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n" for name, data in events)


@responses.activate
def test_openai_tool_call_pieces_from_n8ns_recorded_stream():
    responses.post("https://api.openai.com/v1/chat/completions", content_type=SSE,
                   body="".join(f"data: {json.dumps(e)}\n\n" for e in N8N_SSE) + "data: [DONE]\n\n")
    opened = dispatcher().open(call("openai.gpt-4o"))
    pieces = list(opened)
    assert all(isinstance(p, ToolCallDelta) for p in pieces)
    assert pieces[0] == ToolCallDelta(0, "call_7bf17a294829435384fe6b19", "Calculator", "")
    assert "".join(p.arguments for p in pieces) == '{"input": "12 * 7"}'
    assert opened.answer.finish_reason == "tool_calls" and opened.answer.text == ""
    assert opened.answer.tool_calls == (ToolCall("call_7bf17a294829435384fe6b19", "Calculator", {"input": "12 * 7"}),)
    assert json.loads(responses.calls[0].request.body)["tools"][0]["function"]["name"] == "Calculator"


def _anthropic_tool_stream(partials: list[str]) -> str:
    """Event shapes of anthropic/streaming docs as tests/fake_streams.py sends them: a text
    block, then a client tool_use block whose input arrives as input_json_delta pieces."""
    start = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6", "content": [],
             "stop_reason": None, "usage": {"input_tokens": 40, "output_tokens": 1}}
    return sse(("message_start", {"type": "message_start", "message": start}),
               ("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}}),
               ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": "Let me calculate."}}),
               ("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
                   "type": "tool_use", "id": "toolu_01A", "name": "Calculator", "input": {}}}),
               *[("content_block_delta", {"type": "content_block_delta", "index": 1,
                                          "delta": {"type": "input_json_delta", "partial_json": p}}) for p in partials],
               ("content_block_stop", {"type": "content_block_stop", "index": 1}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                  "usage": {"output_tokens": 30}}),
               ("message_stop", {"type": "message_stop"}))


@responses.activate
def test_anthropic_tool_use_stream_becomes_tool_call_pieces():
    responses.post("https://api.anthropic.com/v1/messages", content_type=SSE,
                   body=_anthropic_tool_stream(['{"inp', 'ut": "12', ' * 7"}']))
    opened = dispatcher().open(call("anthropic.claude-sonnet-4-6"))
    pieces = list(opened)
    assert pieces[0] == "Let me calculate."
    assert pieces[1:] == [ToolCallDelta(0, "toolu_01A", "Calculator"), ToolCallDelta(0, arguments='{"inp'),
                          ToolCallDelta(0, arguments='ut": "12'), ToolCallDelta(0, arguments=' * 7"}')]
    answer = opened.answer
    assert answer.finish_reason == "tool_calls" and answer.text == "Let me calculate."
    assert answer.tool_calls == (ToolCall("toolu_01A", "Calculator", {"input": "12 * 7"}),)


@responses.activate
def test_a_streamed_tool_call_whose_arguments_are_not_json_fails_the_stream():
    responses.post("https://api.anthropic.com/v1/messages", content_type=SSE,
                   body=_anthropic_tool_stream(['{"input": ']))
    opened = dispatcher().open(call("anthropic.claude-sonnet-4-6"))
    with pytest.raises(InvalidProviderResponse):
        list(opened)


@responses.activate
def test_gemini_recorded_stream_keeps_the_signature_and_matches_the_whole_answer():
    url = "https://generativelanguage.googleapis.com/v1beta/models/gemini-3.1-pro-preview:streamGenerateContent?alt=sse"
    responses.post(url, content_type="text/event-stream", body=GEMINI_STREAM)
    c = call("google.gemini-3.1-pro-preview", Tool("get_country"))
    opened = dispatcher().open(c)
    (piece,) = list(opened)
    chunks = [json.loads(line[6:]) for line in GEMINI_STREAM.split("\r\n") if line.startswith("data: ")]
    signature = chunks[0]["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    assert piece.name == "get_country" and piece.arguments == "{}" and piece.state == {"thoughtSignature": signature}
    assert opened.answer.finish_reason == "tool_calls"
    # the same answer whole (its chunks' parts merged) gives the same call, id included
    merged = {**chunks[-1], "candidates": [{**chunks[-1]["candidates"][0], "content": {
        "role": "model", "parts": [p for ch in chunks for p in ch["candidates"][0]["content"]["parts"]]}}]}
    whole = gemini.function_calls(merged["candidates"][0], merged["responseId"], "google")
    assert opened.answer.tool_calls == whole
    assert whole[0].id == piece.id and whole[0].state == piece.state


def test_an_idempotent_replay_streams_the_stored_tool_calls():
    """A repeated Idempotency-Key on a streamed call replays the stored completion as chunks: the tool
    calls come back whole, ids (state folded in) unchanged."""
    from app.openai_api import chat_completions as compat
    stored = {"id": "chatcmpl-r", "created": 1, "model": "google.gemini-3.1-pro-preview", "usage": {},
              "flowcall": {}, "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                  "role": "assistant", "content": None, "tool_calls": [
                      {"id": "fcs1.abc", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}},
                      {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}}]}
    events = [json.loads(e[len("data: "):]) for e in compat.replay_events(stored, include_usage=False)
              if e.startswith("data: {")]
    deltas = [e["choices"][0]["delta"]["tool_calls"][0] for e in events
              if e["choices"] and "tool_calls" in e["choices"][0]["delta"]]
    assert deltas == [{"index": 0, **stored["choices"][0]["message"]["tool_calls"][0]},
                      {"index": 1, **stored["choices"][0]["message"]["tool_calls"][1]}]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
