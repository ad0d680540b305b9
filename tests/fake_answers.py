"""The whole answers the fake provider (tests/fake_provider.py) gives, built from what it was sent.

OpenAI Chat Completions, Anthropic Messages, Gemini generateContent and Perplexity Agent, shaped like
the real recorded answers in ../shared/specs/fixtures. The text echoes the last user message
("Echo: ..."), honours native stop sequences the way providers do, and is schema-conforming JSON
when structured output is asked for. Embeddings (OpenAI /embeddings, Gemini :batchEmbedContents)
are `vector_for(text, size)`: bags of words, deterministic, never zero, so a test can check every
vector it gets back and which document a query is nearest to. Pure: no I/O, so streams and faults
build on the same answers.
"""
from __future__ import annotations

import hashlib
import json
import re
import time

from app.providers.mock import example_for

def _last_user_text(items, text_of) -> str:
    for item in reversed(items or []):
        if item.get("role") == "user":
            return text_of(item)
    return ""


def _openai_text(msg) -> str:
    c = msg.get("content")
    if isinstance(c, str):
        return c
    return " ".join(p.get("text", "") for p in c or [] if p.get("type") in ("text", "input_text"))


def _cut(text: str, stops) -> tuple[str, bool]:
    idx = [text.find(s) for s in stops or [] if s and text.find(s) >= 0]
    return (text[:min(idx)], True) if idx else (text, False)


def _answer_text(prompt: str, schema, json_mode: bool) -> str:
    if schema is not None:
        return json.dumps(example_for(schema))
    if json_mode:
        return json.dumps({"echo": prompt})
    return "Echo: " + prompt


def openai_answer(body: dict) -> dict:
    rf = body.get("response_format") or {}
    schema = (rf.get("json_schema") or {}).get("schema") if rf.get("type") == "json_schema" else None
    text = _answer_text(_last_user_text(body.get("messages"), _openai_text), schema, rf.get("type") == "json_object")
    text, stopped = _cut(text, body.get("stop"))
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"), "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                 "annotations": []},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0,
                                                    "rejected_prediction_tokens": 0}},
            "service_tier": "default"}


def anthropic_answer(body: dict) -> dict:
    def text_of(m):
        c = m.get("content")
        return c if isinstance(c, str) else " ".join(b.get("text", "") for b in c if b.get("type") == "text")
    prompt = _last_user_text(body.get("messages"), text_of)
    usage = {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
             "output_tokens": 7, "service_tier": "standard"}
    base = {"id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model"),
            "stop_sequence": None, "usage": usage}
    tools = body.get("tools") or []
    if tools:
        tool = tools[0]
        return {**base, "stop_reason": "tool_use", "content": [
            {"type": "tool_use", "id": "toolu_fake", "name": tool["name"],
             "input": example_for(tool.get("input_schema"))}]}
    fmt = ((body.get("output_config") or {}).get("format") or {})
    text = _answer_text(prompt, fmt.get("schema"), False)
    text, stopped = _cut(text, body.get("stop_sequences"))
    return {**base, "stop_reason": "stop_sequence" if stopped else "end_turn",
            "content": [{"type": "text", "text": text}]}


def gemini_answer(body: dict, model: str) -> dict:
    def text_of(c):
        return " ".join(p.get("text", "") for p in c.get("parts", []) if "text" in p)
    prompt = _last_user_text(body.get("contents"), text_of)
    cfg = body.get("generationConfig") or {}
    schema = cfg.get("responseJsonSchema")
    text = _answer_text(prompt, schema,
                        cfg.get("responseMimeType") == "application/json")
    text, _ = _cut(text, cfg.get("stopSequences"))
    return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19,
                              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}]},
            "modelVersion": model, "responseId": "fake-response-id"}


def perplexity_answer(body: dict) -> dict:
    inp = body.get("input")
    if isinstance(inp, str):
        prompt = inp
    else:
        prompt = _last_user_text(inp, lambda m: m["content"] if isinstance(m.get("content"), str) else
                                 " ".join(p.get("text", "") for p in m.get("content", []) if "text" in p))
    rf = body.get("response_format") or {}
    schema = (rf.get("json_schema") or {}).get("schema") if rf.get("type") == "json_schema" else None
    text = _answer_text(prompt, schema, rf.get("type") == "json_object")
    return {"id": "resp_fake", "object": "response", "created_at": int(time.time()), "status": "completed",
            "model": body.get("model") or "perplexity/sonar",
            "output": [{"type": "message", "id": "msg_fake", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19,
                      "cost": {"currency": "USD", "input_cost": 0.000003, "output_cost": 0.0000175,
                               "tool_calls_cost": 0.005, "total_cost": 0.0050205}}}


EMBEDDING_SIZE = 16         # the fake's vector size when the request sets none


def vector_for(text, size: int = EMBEDDING_SIZE) -> list[float]:
    """The fake's embedding of `text` (a string or a token array): its words hashed into `size`
    dimensions (a bag of words), so a query is nearest to the document that shares most of its words and
    a retrieval test has a right answer; plus a small part from a hash of the whole text, so two texts
    almost surely differ and no value is zero. Values are multiples of 1/256 in [1/256, 255/256],
    exact in float32, so base64's float32 round-trips them unchanged."""
    words = re.findall(r"\w+", text.lower()) if isinstance(text, str) else [str(token) for token in text]
    counts = [0] * size
    for word in words:
        counts[int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % size] += 1
    peak = max(counts) or 1
    digest = hashlib.sha256(json.dumps(text).encode()).digest()
    return [(1 + digest[i % len(digest)] % 16 + round(239 * counts[i] / peak)) / 256 for i in range(size)]


def openai_embeddings_answer(body: dict) -> dict:
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)) else inputs
    size = body.get("dimensions") or EMBEDDING_SIZE
    return {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": vector_for(text, size)}
                                       for i, text in enumerate(inputs)],
            "model": body.get("model"),
            "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)}}


def gemini_embeddings_answer(body: dict) -> dict:
    return {"embeddings": [{"values": vector_for(" ".join(p.get("text", "") for p in r["content"]["parts"]),
                                                 r.get("outputDimensionality") or EMBEDDING_SIZE)}
                           for r in body.get("requests") or []]}


def answer(path: str, body: dict) -> dict:
    """The whole answer of the provider whose route `path` is."""
    if path.endswith("/chat/completions"):
        return openai_answer(body)
    if path.endswith("/v1/messages"):
        return anthropic_answer(body)
    if ":generateContent" in path:
        return gemini_answer(body, path.rsplit("/", 1)[-1].split(":")[0])
    if path.endswith("/v1/agent"):
        return perplexity_answer(body)
    if path.endswith("/embeddings"):
        return openai_embeddings_answer(body)
    if ":batchEmbedContents" in path:
        return gemini_embeddings_answer(body)
    return {"error": {"message": f"fake provider: unknown path {path}"}}
