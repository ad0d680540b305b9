"""Answers of the fake provider's tool-loop mode (tests/fake_provider.py): one tool loop, for real clients.

OpenAI chat completions (`/openai/v1/chat/completions`), Anthropic messages (`/anthropic/v1/messages`)
and Gemini generateContent (`/gemini/v1beta/models/{model}:generateContent`), non-streamed, answered
the way each provider answers (shapes from ../shared/specs and its recorded fixtures):

- a request that offers tools and carries no tool result: a call of the first tool with
  `{"input": "6 * 7"}` (the argument n8n's Calculator tool takes);
- a request that carries a tool result: the text "The tool said: <result>.";
- anything else: "Echo: <last user text>".

Embeddings (OpenAI `/embeddings`, Gemini `:batchEmbedContents`) are no turn of the loop: they get the
fake's ordinary answer (tests/fake_answers.py), so an agent can search a vector store in this mode.

Gemini's call carries a `thoughtSignature`, and a later turn that sends the call back without it gets
the 400 Gemini gives ("Function call is missing a thought_signature"), so the round trip of provider
state is tested, not assumed. Pure: (status, answer) from (path, body).
"""
from __future__ import annotations

import json
import re

import fake_answers

ARGUMENTS = {"input": "6 * 7"}
SIGNATURE = "Q2lYQVk0K2Z0aG91Z2h0LXNpZ25hdHVyZQ=="
USAGE = {"input": 40, "output": 12}


def _texts(value) -> list[str]:
    """Every string inside a JSON value (tool results arrive as strings, blocks or objects; n8n's
    Calculator answers `[{"response": "42"}]` as a string of JSON)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return [value]
        return _texts(parsed) if isinstance(parsed, (dict, list)) else [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def openai_turn(body: dict) -> tuple[int, dict]:
    messages = body.get("messages", [])
    results = [m for m in messages if m.get("role") == "tool"]
    message: dict = {"role": "assistant", "content": None}
    if results:
        message["content"] = f"The tool said: {' '.join(_texts(results[-1].get('content')))}."
        finish = "stop"
    elif body.get("tools"):
        name = body["tools"][0]["function"]["name"]
        message["tool_calls"] = [{"id": "call_fake_1", "type": "function",
                                  "function": {"name": name, "arguments": json.dumps(ARGUMENTS)}}]
        finish = "tool_calls"
    else:
        users = [m for m in messages if m.get("role") == "user"]
        message["content"] = f"Echo: {' '.join(_texts(users[-1].get('content'))) if users else ''}"
        finish = "stop"
    return 200, {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1764000000,
                 "model": body.get("model", "gpt-4o"), "system_fingerprint": "fp_fake",
                 "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                 "usage": {"prompt_tokens": USAGE["input"], "completion_tokens": USAGE["output"],
                           "total_tokens": USAGE["input"] + USAGE["output"]}}


def anthropic_turn(body: dict) -> tuple[int, dict]:
    blocks = [b for m in body.get("messages", []) if isinstance(m.get("content"), list) for b in m["content"]]
    results = [b for b in blocks if b.get("type") == "tool_result"]
    if results:
        content = [{"type": "text", "text": f"The tool said: {' '.join(_texts(results[-1].get('content')))}."}]
        stop = "end_turn"
    elif body.get("tools"):
        content = [{"type": "text", "text": "Let me calculate that."},
                   {"type": "tool_use", "id": "toolu_fake_01", "name": body["tools"][0]["name"], "input": ARGUMENTS}]
        stop = "tool_use"
    else:
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        content = [{"type": "text", "text": f"Echo: {' '.join(_texts(users[-1].get('content'))) if users else ''}"}]
        stop = "end_turn"
    return 200, {"id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model"),
                 "content": content, "stop_reason": stop, "stop_sequence": None,
                 "usage": {"input_tokens": USAGE["input"], "output_tokens": USAGE["output"]}}


def gemini_turn(body: dict, model: str) -> tuple[int, dict]:
    parts = [p for c in body.get("contents", []) for p in c.get("parts", [])]
    for part in parts:
        if "functionCall" in part and part.get("thoughtSignature") != SIGNATURE:
            return 400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                   "message": "Function call is missing a thought_signature in functionCall parts. "
                                              "This is required for tools to work correctly."}}
    results = [p["functionResponse"] for p in parts if "functionResponse" in p]
    if results:
        out = [{"text": f"The tool said: {' '.join(_texts(results[-1].get('response')))}."}]
    elif body.get("tools"):
        declarations = [d for t in body["tools"] for d in t.get("functionDeclarations", [])]
        out = [{"functionCall": {"name": declarations[0]["name"], "args": ARGUMENTS}, "thoughtSignature": SIGNATURE}]
    else:
        users = [c for c in body.get("contents", []) if c.get("role") == "user"]
        out = [{"text": f"Echo: {' '.join(_texts(users[-1].get('parts'))) if users else ''}"}]
    return 200, {"candidates": [{"content": {"role": "model", "parts": out}, "finishReason": "STOP", "index": 0}],
                 "usageMetadata": {"promptTokenCount": USAGE["input"], "candidatesTokenCount": USAGE["output"],
                                   "totalTokenCount": USAGE["input"] + USAGE["output"]},
                 "modelVersion": model, "responseId": "fake-response"}


def answer(path: str, body: dict) -> tuple[int, dict]:
    """(status, answer) of the provider whose route `path` is."""
    gemini = re.match(r"^/gemini/v1beta/models/([^:/]+):generateContent", path)
    if path.startswith("/openai/v1/chat/completions"):
        return openai_turn(body)
    if path.startswith("/anthropic/v1/messages"):
        return anthropic_turn(body)
    if gemini:
        return gemini_turn(body, gemini.group(1))
    if path.endswith("/embeddings") or ":batchEmbedContents" in path:
        return 200, fake_answers.answer(path, body)
    return 404, {"error": {"message": f"no route {path}"}}
