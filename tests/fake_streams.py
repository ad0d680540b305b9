"""The streams the fake provider (tests/fake_provider.py) sends when a request asks for one.

The whole answer of tests/fake_answers.py as server-sent events, a few characters per event so stop
sequences land across event boundaries, in each provider's real event shapes:
OpenAI chunks from ../shared/specs/fixtures/test_openai/test_openai_moderation_stream.yaml,
Anthropic events from fixtures/test_anthropic/test_anthropic_model_thinking_part_stream.yaml,
Gemini chunks from fixtures/test_google/test_google_model_stream.yaml (pydantic-ai, MIT).
Pure: events as bytes, split into the text events and the closing ones so a scripted fault can cut
the stream after any of them.
"""
from __future__ import annotations

import json

from fake_answers import anthropic_answer, gemini_answer, openai_answer

PIECE = 4       # characters of answer text per event

MID_STREAM_ERRORS = {
    "openai": ("", {"error": {"message": "The server had an error while processing your request.",
                              "type": "server_error", "param": None, "code": None}}),
    "anthropic": ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    "gemini": ("", {"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                              "status": "UNAVAILABLE"}}),
}


def pieces(text: str) -> list[str]:
    return [text[i:i + PIECE] for i in range(0, len(text), PIECE)] or [""]


def event(data, name: str = "") -> bytes:
    """One server-sent event: an optional `event:` line and its JSON (or literal) data."""
    payload = data if isinstance(data, str) else json.dumps(data)
    return ((f"event: {name}\n" if name else "") + f"data: {payload}\n\n").encode()


def openai_events(body: dict) -> tuple[list[bytes], list[bytes]]:
    """(text events, closing events) of a chat.completion.chunk stream."""
    answer = openai_answer(body)
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": answer["created"],
            "model": answer["model"], "service_tier": "default", "system_fingerprint": None}
    usage = (body.get("stream_options") or {}).get("include_usage")
    extra = {"usage": None} if usage else {}

    def chunk(delta, finish=None):
        return event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})
    text = answer["choices"][0]["message"]["content"]
    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": p}) for p in pieces(text)]
    closing = [chunk({}, "stop")]
    if usage:
        closing.append(event({**base, "choices": [], "usage": answer["usage"]}))
    return events, [*closing, event("[DONE]")]


def anthropic_events(body: dict) -> tuple[list[bytes], list[bytes]]:
    answer = anthropic_answer(body)
    start = {**answer, "content": [], "stop_reason": None, "usage": {**answer["usage"], "output_tokens": 1}}
    events = [event({"type": "message_start", "message": start}, "message_start")]
    block = answer["content"][0]
    if block["type"] == "tool_use":
        events.append(event({"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}, "content_block_start"))
        events += [event({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "input_json_delta", "partial_json": p}}, "content_block_delta")
                   for p in pieces(json.dumps(block["input"]))]
    else:
        events.append(event({"type": "content_block_start", "index": 0,
                              "content_block": {"type": "text", "text": ""}}, "content_block_start"))
        events.append(event({"type": "ping"}, "ping"))
        events += [event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
                          "content_block_delta") for p in pieces(block["text"])]
    closing = [event({"type": "content_block_stop", "index": 0}, "content_block_stop"),
               event({"type": "message_delta", "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": None},
                       "usage": answer["usage"]}, "message_delta"),
               event({"type": "message_stop"}, "message_stop")]
    return events, closing


def gemini_events(body: dict, model: str) -> tuple[list[bytes], list[bytes]]:
    answer = gemini_answer(body, model)
    text = answer["candidates"][0]["content"]["parts"][0]["text"]
    running = {"promptTokenCount": 12, "totalTokenCount": 12}

    def chunk(piece, finish=None):
        candidate = {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        usage = answer["usageMetadata"] if finish else running
        return event({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
                       "responseId": "fake-response-id"})
    parts = pieces(text)
    return [chunk(p) for p in parts[:-1]], [chunk(parts[-1], "STOP")]


def stream_for(path: str, body: dict):
    """(format, text events, closing events), or None when the request is not a streaming one."""
    if path.endswith("/chat/completions") and body.get("stream"):
        return ("openai", *openai_events(body))
    if path.endswith("/v1/messages") and body.get("stream"):
        return ("anthropic", *anthropic_events(body))
    if ":streamGenerateContent" in path:
        model = path.split("?", 1)[0].rsplit("/", 1)[-1].split(":")[0]
        return ("gemini", *gemini_events(body, model))
    return None
