"""The OpenAI-compatible endpoint: request and answer translation as tables, then over HTTP (Flask's
test client, providers mocked with `responses`): whole and streamed answers, errors in OpenAI's
shape, limits, idempotency and the ledger.

Shapes are OpenAI's (../shared/specs/openai/openapi.yaml CreateChatCompletionRequest/Response,
CreateChatCompletionStreamResponse, ErrorResponse, ListModelsResponse).
"""
from __future__ import annotations

import json
import uuid

import pytest
import responses
from sqlalchemy import select

from app.openai_api import chat_completions as compat
from app.calls import Answer, Routing, Usage
from app.catalog import Catalog
from app.config import Settings
from app.tenancy.db import ledger
from app.errors import (BudgetExceeded, ProviderAuthFailed, ProviderOverloaded, RateLimited,
                        Unauthorized, ValidationError)
from app.tenancy.store import Limits

OPENAI = "https://api.openai.com/v1/chat/completions"
ANTHROPIC = "https://api.anthropic.com/v1/messages"
SSE = "text/event-stream"
KEYS = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
        "GROQ_API_KEY": "gsk_test0123456789"}
USER = [{"role": "user", "content": "What is the capital of France?"}]


# -- request translation (pure) -------------------------------------------------------------------------
def req(**extra) -> dict:
    return {"model": "gpt-4o", "messages": USER, **extra}


BASE_OPTIONS = {"maxTokens": compat.COMPAT_DEFAULT_MAX_TOKENS}


@pytest.mark.parametrize("extra, options, rest, warnings", [
    ({}, BASE_OPTIONS, {}, ()),
    ({"temperature": 0.3, "max_tokens": 100}, {"temperature": 0.3, "maxTokens": 100}, {}, ()),
    ({"temperature": 1.5}, {**BASE_OPTIONS, "temperature": 1.0}, {},
     ("temperature 1.5 was sent as 1: flowcall takes 0..1 on every provider.",)),
    ({"temperature": None, "stop": None, "max_tokens": None}, BASE_OPTIONS, {}, ()),
    ({"max_tokens": 100, "max_completion_tokens": 200}, {"maxTokens": 200}, {},
     ("max_tokens 100 and max_completion_tokens 200 differ; max_completion_tokens was used.",)),
    ({"max_tokens": 100, "max_completion_tokens": 100}, {"maxTokens": 100}, {}, ()),
    ({"stop": "END"}, {**BASE_OPTIONS, "stop": ["END"]}, {}, ()),
    ({"stop": ["a", "", "b"]}, {**BASE_OPTIONS, "stop": ["a", "b"]}, {}, ()),
    ({"stop": [""]}, BASE_OPTIONS, {}, ()),
    ({"response_format": {"type": "text"}}, BASE_OPTIONS, {}, ()),
    ({"response_format": {"type": "json_object"}}, BASE_OPTIONS, {"response_format": {"type": "json_object"}}, ()),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"},
                                                                 "strict": None, "description": "x"}}},
     BASE_OPTIONS, {"response_format": {"type": "json_schema", "json_schema": {
         "name": "city", "strict": False, "schema": {"type": "object"}}}}, ()),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}, "strict": True}}},
     BASE_OPTIONS, {"response_format": {"type": "json_schema", "json_schema": {
         "name": "response", "strict": True, "schema": {"type": "object"}}}}, ()),
    ({"fallbacks": ["claude-sonnet-4-6"], "flowcall": {"task": "summarize", "timeoutMs": 25000}},
     {**BASE_OPTIONS, "timeoutMs": 25000}, {"fallbacks": ["claude-sonnet-4-6"], "context": {"task": "summarize"}}, ()),
    # what SDKs and frameworks send by default, or bookkeeping: accepted in silence
    ({"user": "u-1", "metadata": {"a": "b"}, "store": False, "seed": 7, "service_tier": "auto", "n": 1,
      "prompt_cache_key": "k", "safety_identifier": "s", "parallel_tool_calls": True, "logprobs": False,
      "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "tools": [],
      "tool_choice": "none", "modalities": ["text"], "top_logprobs": 0, "audio": None}, BASE_OPTIONS, {}, ()),
    ({"top_p": 0.5, "presence_penalty": 0.4, "logit_bias": {"1234": 5}}, BASE_OPTIONS, {},
     ("top_p is not supported by flowcall and was ignored.",
      "presence_penalty is not supported by flowcall and was ignored.",
      "logit_bias is not supported by flowcall and was ignored.")),
    # reasoning_effort is honoured: it becomes options.reasoningEffort (null: the model's default)
    ({"reasoning_effort": "low"}, {**BASE_OPTIONS, "reasoningEffort": "low"}, {}, ()),
    ({"reasoning_effort": None}, BASE_OPTIONS, {}, ()),
])
def test_request_translation(extra, options, rest, warnings):
    chat = compat.parse_request(req(**extra))
    assert chat.body == {"model": "gpt-4o", "messages": USER, "options": options, **rest}
    assert chat.warnings == warnings and chat.stream is False and chat.include_usage is False


def test_messages_translation():
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "system", "content": [{"type": "text", "text": "Answer in French."}], "name": "ops"},
        {"role": "user", "content": [
            {"type": "text", "text": "Describe", "prompt_cache_breakpoint": {"type": "ephemeral"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}]},
        {"role": "assistant", "content": None, "refusal": None},
        {"role": "assistant", "content": "Sure:"},
    ]
    assert compat.parse_request(req(messages=messages)).body["messages"] == [
        {"role": "developer", "content": "Be brief."},
        {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Describe"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}]},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "Sure:"},
    ]


@pytest.mark.parametrize("extra, include_usage", [
    ({"stream": True}, False),
    ({"stream": True, "stream_options": {"include_usage": True, "include_obfuscation": False}}, True),
    ({"stream": False, "stream_options": {"include_usage": True}}, False),
])
def test_stream_flags(extra, include_usage):
    chat = compat.parse_request(req(**extra))
    assert chat.stream is bool(extra["stream"]) and chat.include_usage is include_usage


@pytest.mark.parametrize("extra, field", [
    ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools.0"),      # only function tools
    ({"tool_choice": "required"}, "tool_choice"),                                 # without tools
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"function_call": {"name": "f"}}, "function_call"),
    ({"n": 2}, "n"),
    ({"n": True}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"temperature": 2.5}, "temperature"),
    ({"reasoning_effort": "xhigh"}, "reasoning_effort"),
    ({"reasoning_effort": 3}, "reasoning_effort"),
    ({"temperature": True}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["x"] * 17}, "stop"),
    ({"stop": 5}, "stop"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"chunk_size": 5}}, "stream_options.chunk_size"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
     "response_format.json_schema.schema"),
    ({"flowcall": {"task_type": "x"}}, "flowcall.task_type"),
    ({"fallbacks": ["a"] * 6}, "fallbacks"),
    ({"prompt": "hi"}, "prompt"),                                  # flowcall's own field, not OpenAI's
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "function", "content": "42", "name": "f"}]}, "messages.0.role"),
    ({"messages": [{"role": "tool", "content": "42"}]}, "messages.0.tool_call_id"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "call_1"}]}]},
     "messages.0.tool_calls.0.name"),
    ({"messages": [{"role": "user", "content": None}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "messages.0.content.0.type"),
    ({"messages": [{"role": "user", "content": "hi", "weight": 1}]}, "messages.0.weight"),
])
def test_rejected_requests_name_the_field(extra, field):
    with pytest.raises(ValidationError) as info:
        compat.parse_request(req(**extra))
    assert field in info.value.fields and info.value.status == 400


def test_unknown_field_message_does_not_point_at_flowcalls_own_body():
    with pytest.raises(ValidationError) as info:
        compat.parse_request(req(task="x"))
    assert info.value.fields == {"task": "Unknown field: not an OpenAI Chat Completions field flowcall accepts."}


# -- answer translation (pure) ------------------------------------------------------------------------
def answer(**kw) -> Answer:
    base = dict(text="Paris.", data=None, model="gpt-4o-2024-08-06", provider="openai", finish_reason="stop",
                usage=Usage(input_tokens=13, output_tokens=7, reasoning_tokens=2, cached_input_tokens=4),
                cost=0.0001, latency_ms=420,
                routing=Routing(is_auto_routed=False, model_chosen="openai.gpt-4o", confidence=1.0,
                                reason="openai.gpt-4o was requested.", attempts=1),
                warnings=("a warning",), request_id="rid-1")
    return Answer(**{**base, **kw})


FLOWCALL_EXT = {"request_id": "rid-1", "provider": "openai", "provider_model": "gpt-4o-2024-08-06",
                "finish_reason": "stop", "cost": 0.0001, "latency_ms": 420,
                "routing": {"is_auto_routed": False, "model_chosen": "openai.gpt-4o", "confidence": 1.0,
                            "reason": "openai.gpt-4o was requested.", "fallbacks": [], "attempts": 1},
                "warnings": ["translation warning", "a warning"]}
USAGE_BODY = {"prompt_tokens": 13, "completion_tokens": 7, "total_tokens": 20,
              "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 2}}


def test_completion_body():
    assert compat.completion_body(answer(), created=1700000000, structured=False,
                                  warnings=("translation warning",)) == {
        "id": "chatcmpl-rid-1", "object": "chat.completion", "created": 1700000000, "model": "openai.gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris.", "refusal": None,
                                             "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": USAGE_BODY, "flowcall": FLOWCALL_EXT}


@pytest.mark.parametrize("ours, theirs", [("stop", "stop"), ("length", "length"), ("content_filter", "content_filter"),
                                          ("tool_calls", "tool_calls"), ("other", "stop")])
def test_finish_reasons(ours, theirs):
    body = compat.completion_body(answer(finish_reason=ours), created=0, structured=False)
    assert body["choices"][0]["finish_reason"] == theirs and body["flowcall"]["finish_reason"] == ours


def test_structured_content_is_the_parsed_json():
    body = compat.completion_body(answer(text='```json\n{"city": "Paris"}\n```', data={"city": "Paris"}),
                                  created=0, structured=True)
    assert body["choices"][0]["message"]["content"] == '{"city": "Paris"}'


def events_of(text: str) -> list:
    """SSE text -> the data of each event, JSON-decoded ([DONE] kept as the string)."""
    out = []
    for block in text.split("\n\n"):
        if block:
            assert block.startswith("data: ") and "\n" not in block
            data = block[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


@pytest.mark.parametrize("include_usage", [True, False])
def test_chunk_writer(include_usage):
    writer = compat.ChunkWriter("chatcmpl-rid-1", 1700000000, "openai.gpt-4o", include_usage)
    text = writer.role() + writer.content("Par") + writer.content("is.") + "".join(
        writer.answer(answer(), ("translation warning",)))
    events = events_of(text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["id"] == "chatcmpl-rid-1" and c["object"] == "chat.completion.chunk" and c["created"] == 1700000000
               and c["model"] == "openai.gpt-4o" for c in chunks)
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                                     "logprobs": None, "finish_reason": None}]
    assert [c["choices"][0]["delta"] for c in chunks[1:3]] == [{"content": "Par"}, {"content": "is."}]
    assert chunks[3]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    if include_usage:
        assert len(chunks) == 5 and all(c["usage"] is None for c in chunks[:4])
        assert chunks[4]["choices"] == [] and chunks[4]["usage"] == USAGE_BODY
        assert chunks[4]["flowcall"] == FLOWCALL_EXT and "flowcall" not in chunks[3]
    else:
        assert len(chunks) == 4 and not any("usage" in c for c in chunks)
        assert chunks[3]["flowcall"] == FLOWCALL_EXT


def test_replay_streams_a_stored_completion():
    stored = compat.completion_body(answer(), created=5, structured=False)
    events = events_of("".join(compat.replay_events(stored, include_usage=True)))
    assert [e["choices"][0]["delta"] for e in events[:2]] == [
        {"role": "assistant", "content": "", "refusal": None}, {"content": "Paris."}]
    assert events[2]["choices"][0]["finish_reason"] == "stop"
    assert events[3]["usage"] == stored["usage"] and events[3]["flowcall"] == stored["flowcall"]
    assert events[4] == "[DONE]"


@pytest.mark.parametrize("err, status, kind, param, should_retry, retry_after", [
    (Unauthorized("Invalid or revoked API key.", code="invalid_api_key"), 401, "authentication_error", None,
     "false", None),
    (ValidationError("bad", fields={"temperature": "too hot", "n": "x"}), 400, "invalid_request_error",
     "temperature", "false", None),
    (BudgetExceeded("spent", code="budget_exceeded_key"), 402, "insufficient_quota", None, "false", None),
    (RateLimited("slow down", code="rpm_exceeded_key", retry_after=12.4), 429, "rate_limit_error", None, "true", "12"),
    (ProviderAuthFailed("OpenAI said: bad key", provider="openai"), 502, "server_error", None, "false", None),
    (ProviderOverloaded("OpenAI said: overloaded", provider="openai", retry_after=3), 502, "server_error", None,
     "true", None),
])
def test_error_body_and_headers(err, status, kind, param, should_retry, retry_after):
    body = compat.error_body(err, "rid-9")
    assert err.status == status
    assert body == {"error": {"message": err.message, "type": kind, "param": param, "code": err.code,
                              "flowcall": {"retryable": err.retryable, "provider": err.provider,
                                           "fields": err.fields, "request_id": "rid-9"}}}
    headers = compat.error_headers(err)
    assert headers["x-should-retry"] == should_retry and headers.get("Retry-After") == retry_after


def test_model_list_has_auto_and_the_configured_providers_models():
    catalog = Catalog.load()
    ids = [m["id"] for m in compat.model_list(catalog, Settings.from_env(KEYS))["data"]]
    assert ids[0] == "auto" and "openai.gpt-4o" in ids and "anthropic.claude-sonnet-4-6" in ids
    assert "mock.echo" in ids and not any(i.startswith(("google.", "xai.")) for i in ids)
    assert "openai.o1" not in ids                                  # retired: served by a successor
    gpt4o = next(m for m in compat.model_list(catalog, Settings.from_env(KEYS))["data"] if m["id"] == "openai.gpt-4o")
    assert gpt4o == {"id": "openai.gpt-4o", "object": "model", "created": 0, "owned_by": "openai",
                     "shutdown_date": catalog.models["openai.gpt-4o"].shutdown}


# -- over HTTP ----------------------------------------------------------------------------------------
@pytest.fixture
def config(config):
    return {**config, **KEYS}


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def store(app):
    return app.extensions["flowcall"].store


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def post(client, key, body, **headers):
    return client.post("/v1/chat/completions", json=body, headers={**bearer(key), **headers})


def openai_ok(text="Paris.", model="gpt-4o-2024-08-06", usage=(100, 50)):
    return {"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}


def openai_stream(*pieces, usage=(100, 50), extra_events=()) -> str:
    """Shaped like ../shared/specs/fixtures/test_openai/test_openai_moderation_stream.yaml (pydantic-ai, MIT)."""
    base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06"}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    chunks += [{**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
               {**base, "choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                                 "total_tokens": sum(usage)}}]
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "".join(extra_events) + "data: [DONE]\n\n"


def ledger_rows(store) -> list[dict]:
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(ledger).order_by(ledger.c.id)).mappings()]


@responses.activate
def test_whole_chat_over_http(client, api_key):
    responses.post(OPENAI, json=openai_ok())
    r = post(client, api_key, req(messages=[{"role": "developer", "content": "Be brief."}, *USER],
                                  temperature=0.2, max_completion_tokens=64, stop=["\n\n"], user="u-1"))
    assert r.status_code == 200, r.get_json()
    sent = json.loads(responses.calls[0].request.body)
    assert sent == {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."}, *USER],
                    "temperature": 0.2, "max_completion_tokens": 64, "stop": ["\n\n"]}
    body = r.get_json()
    assert set(body) == {"id", "object", "created", "model", "choices", "usage", "flowcall"}
    assert body["id"] == f"chatcmpl-{r.headers['X-Request-Id']}" and body["object"] == "chat.completion"
    assert body["model"] == "openai.gpt-4o" and body["flowcall"]["provider_model"] == "gpt-4o-2024-08-06"
    assert body["choices"][0]["message"]["content"] == "Paris." and body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 100 and body["usage"]["total_tokens"] == 150
    assert body["flowcall"]["cost"] == pytest.approx((100 * 2.5 + 50 * 10) / 1e6)


@responses.activate
def test_alias_and_fallbacks_extension(client, api_key):
    responses.post(OPENAI, status=404, json={"error": {"message": "The model `gpt-4o` does not exist",
                                                       "type": "invalid_request_error", "code": "model_not_found"}})
    responses.post(ANTHROPIC, json={"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
                                    "content": [{"type": "text", "text": "Bonjour."}], "stop_reason": "end_turn",
                                    "usage": {"input_tokens": 10, "output_tokens": 3}})
    r = post(client, api_key, req(model="gpt4o", fallbacks=["claude-sonnet-4-6"]))
    body = r.get_json()
    assert r.status_code == 200 and body["model"] == "anthropic.claude-sonnet-4-6"
    assert body["choices"][0]["message"]["content"] == "Bonjour."
    assert body["flowcall"]["routing"]["attempts"] == 2


@pytest.mark.parametrize("headers, body, status, code, param", [
    ({}, req(), 401, "missing_api_key", None),
    ({"Authorization": "Bearer fc_not-a-key"}, req(), 401, "invalid_api_key", None),
    ("key", req(tools=[{"type": "function"}]), 400, "validation_error", "tools.0"),
    ("key", req(model="nope"), 400, "unknown_model", "model"),
    ("key", req(messages=[{"role": "assistant", "content": "hi"}]), 400, "validation_error", "messages"),
    ("key", req(model="gpt-4o", **{"max_tokens": "many"}), 400, "validation_error", "max_tokens"),
])
def test_errors_are_in_openais_shape(client, api_key, headers, body, status, code, param):
    headers = bearer(api_key) if headers == "key" else headers
    r = client.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == status
    error = r.get_json()["error"]
    assert error["code"] == code and error["param"] == param and error["message"]
    assert error["type"] == compat.error_type(status) and r.headers["x-should-retry"] == "false"
    assert "success" not in r.get_json()                           # not flowcall's own envelope


def test_bad_json_is_a_400_in_openais_shape(client, api_key):
    r = client.post("/v1/chat/completions", data=b"{nope",
                    headers={**bearer(api_key), "Content-Type": "application/json"})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_json"


@responses.activate
def test_provider_failures_keep_their_status_and_retry_hint(client, api_key):
    responses.post(OPENAI, status=401, json={"error": {"message": "Incorrect API key provided: sk-test-op***89",
                                                       "type": "invalid_request_error", "code": "invalid_api_key"}})
    r = post(client, api_key, req())
    assert r.status_code == 502 and r.headers["x-should-retry"] == "false"
    assert r.get_json()["error"]["code"] == "provider_auth_failed"
    assert r.get_json()["error"]["type"] == "server_error" and KEYS["OPENAI_API_KEY"] not in r.get_data(as_text=True)


def test_payload_too_large_in_openais_shape(app, api_key):
    app.config["MAX_CONTENT_LENGTH"] = 2048
    r = post(app.test_client(), api_key, req(messages=[{"role": "user", "content": "x" * 5000}]))
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "payload_too_large"


@responses.activate
def test_rate_limit_is_a_429_with_retry_after(client, store):
    responses.post(OPENAI, json=openai_ok())
    _, key = store.create_key(str(uuid.uuid4()), limits=Limits(rpm=1))
    assert post(client, key, req()).status_code == 200
    r = post(client, key, req())
    assert r.status_code == 429 and r.get_json()["error"]["type"] == "rate_limit_error"
    assert int(r.headers["Retry-After"]) >= 1 and r.headers["x-should-retry"] == "true"


@responses.activate
def test_idempotent_replay_whole_and_streamed(client, api_key):
    responses.post(OPENAI, json=openai_ok())
    first = post(client, api_key, req(), **{"Idempotency-Key": "job-1"})
    again = post(client, api_key, req(), **{"Idempotency-Key": "job-1"})
    assert again.headers["Idempotent-Replay"] == "true" and again.get_json() == first.get_json()
    assert len(responses.calls) == 1
    responses.post(OPENAI, body=openai_stream("Par", "is."), content_type=SSE)
    body = req(stream=True, stream_options={"include_usage": True})
    streamed = post(client, api_key, body, **{"Idempotency-Key": "job-2"})
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in events_of(streamed.get_data(as_text=True))[:-1]
                   if c["choices"]) == "Paris."
    replay = post(client, api_key, body, **{"Idempotency-Key": "job-2"})
    assert replay.headers["Idempotent-Replay"] == "true" and replay.mimetype == SSE
    events = events_of(replay.get_data(as_text=True))
    assert events[1]["choices"][0]["delta"] == {"content": "Paris."} and events[-1] == "[DONE]"
    assert len(responses.calls) == 2


# -- streamed over HTTP ---------------------------------------------------------------------------------
@responses.activate
def test_streamed_chat_over_http(client, api_key, store):
    responses.post(OPENAI, body=openai_stream("The capital", " is Par", "is."), content_type=SSE)
    r = post(client, api_key, req(stream=True, stream_options={"include_usage": True}, stop="\n\n", temperature=1.5))
    assert r.status_code == 200 and r.mimetype == SSE and r.headers["Cache-Control"] == "no-cache"
    sent = json.loads(responses.calls[0].request.body)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True} and sent["stop"] == ["\n\n"]
    assert sent["temperature"] == 1.0
    events = events_of(r.get_data(as_text=True))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["id"] for c in chunks} == {f"chatcmpl-{r.headers['X-Request-Id']}"}
    assert {c["model"] for c in chunks} == {"openai.gpt-4o"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == \
        "The capital is Paris."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["prompt_tokens"] == 100 and chunks[-1]["flowcall"]["provider"] == "openai"
    assert "temperature 1.5 was sent as 1: flowcall takes 0..1 on every provider." in chunks[-1]["flowcall"]["warnings"]
    [row] = ledger_rows(store)
    assert (row["endpoint"], row["status"], row["input_tokens"], row["output_tokens"], row["model_served"]) == \
        ("openai_chat_completions", 200, 100, 50, "openai.gpt-4o")
    assert float(row["cost"]) == pytest.approx((100 * 2.5 + 50 * 10) / 1e6)


@responses.activate
def test_stream_survives_non_ascii_and_a_split_surrogate_pair(client, api_key):
    # a provider that escapes an emoji as a surrogate pair and splits it between two events
    body = openai_stream("caf\u00e9 ", "PLACEHOLDER_A", "PLACEHOLDER_B")
    body = body.replace("PLACEHOLDER_A", "\\ud83d").replace("PLACEHOLDER_B", "\\ude00")
    responses.post(OPENAI, body=body, content_type=SSE)
    r = post(client, api_key, req(stream=True))
    raw = r.get_data()
    assert raw.isascii() and raw.endswith(b"data: [DONE]\n\n")
    contents = [e["choices"][0]["delta"].get("content") for e in events_of(raw.decode())[:-1] if e["choices"]]
    assert contents[1:4] == ["caf\u00e9 ", "\ud83d", "\ude00"]


@responses.activate
def test_stream_stop_split_across_events_is_never_sent(client, api_key):
    responses.post(OPENAI, body=openai_stream("alpha be", "ta EN", "D gamma"), content_type=SSE)
    r = post(client, api_key, req(stream=True, stop=["END"]))
    contents = [c["choices"][0]["delta"].get("content") for c in events_of(r.get_data(as_text=True))[:-1]]
    assert "".join(c or "" for c in contents) == "alpha beta "
    assert not any(c and ("E" in c or "N" in c) for c in contents)
    assert events_of(r.get_data(as_text=True))[-2]["choices"][0]["finish_reason"] == "stop"


@responses.activate
def test_stream_failure_before_the_first_byte_is_an_http_error(client, api_key, store):
    responses.post(OPENAI, status=401, json={"error": {"message": "Incorrect API key", "type": "invalid_request_error",
                                                       "code": "invalid_api_key"}})
    r = post(client, api_key, req(stream=True))
    assert r.status_code == 502 and r.mimetype == "application/json"
    assert r.get_json()["error"]["code"] == "provider_auth_failed"
    [row] = ledger_rows(store)
    assert row["status"] == 502 and row["error_code"] == "provider_auth_failed"


@responses.activate
def test_stream_retries_before_the_first_byte(client, api_key):
    responses.post(OPENAI, status=503, json={"error": {"message": "overloaded", "type": "server_error"}})
    responses.post(OPENAI, body=openai_stream("ok"), content_type=SSE)
    r = post(client, api_key, req(stream=True))
    assert r.status_code == 200 and len(responses.calls) == 2
    assert events_of(r.get_data(as_text=True))[1]["choices"][0]["delta"] == {"content": "ok"}


@responses.activate
def test_stream_failure_after_the_first_byte_is_an_error_event(client, api_key, store):
    error = {"error": {"message": "The server had an error while processing your request.", "type": "server_error",
                       "param": None, "code": None}}
    body = openai_stream("Hello", " wor").split('"finish_reason": "stop"')[0].rsplit("data: ", 1)[0]
    responses.post(OPENAI, body=body + f"data: {json.dumps(error)}\n\n", content_type=SSE)
    r = post(client, api_key, req(stream=True))
    assert r.status_code == 200
    events = events_of(r.get_data(as_text=True))
    assert "[DONE]" not in events
    assert [e["choices"][0]["delta"].get("content") for e in events[1:3]] == ["Hello", " wor"]
    assert events[-1]["error"]["code"] == "provider_overloaded" and events[-1]["error"]["type"] == "server_error"
    assert len(responses.calls) == 1
    [row] = ledger_rows(store)
    assert row["status"] == 502 and row["error_code"] == "provider_overloaded"
    assert row["model_served"] == "openai.gpt-4o" and row["attempts"] == 1


@pytest.mark.parametrize("events_read", [1, 2])       # gone before any text, or after some
@responses.activate
def test_client_gone_mid_stream_is_in_the_ledger(client, api_key, store, events_read):
    responses.post(OPENAI, body=openai_stream("one ", "two ", "three"), content_type=SSE)
    r = client.post("/v1/chat/completions", json=req(stream=True), headers=bearer(api_key), buffered=False)
    events = iter(r.response)
    read = [events_of(next(events).decode())[0] for _ in range(events_read)]
    assert read[0]["choices"][0]["delta"]["role"] == "assistant" and ledger_rows(store) == []
    r.close()
    [row] = ledger_rows(store)
    assert row["status"] == 499 and row["error_code"] == "client_closed_request"
    assert row["model_served"] == "openai.gpt-4o"


def test_mock_streams_as_one_piece(client, api_key):
    r = post(client, api_key, {"model": "mock.echo", "messages": USER, "stream": True})
    events = events_of(r.get_data(as_text=True))
    assert [e["choices"][0]["delta"] for e in events[:2]] == [
        {"role": "assistant", "content": "", "refusal": None}, {"content": USER[0]["content"]}]
    assert events[2]["flowcall"]["cost"] == 0.0 and events[-1] == "[DONE]"


def test_models_endpoints(client, api_key):
    r = client.get("/v1/models", headers=bearer(api_key))
    assert r.status_code == 200 and r.get_json()["object"] == "list"
    assert {"auto", "openai.gpt-4o", "mock.echo"} <= {m["id"] for m in r.get_json()["data"]}
    assert client.get("/v1/models/gpt4o", headers=bearer(api_key)).get_json()["id"] == "openai.gpt-4o"
    groq = client.get("/v1/models/groq.openai/gpt-oss-120b", headers=bearer(api_key)).get_json()
    assert groq["id"] == "groq.openai/gpt-oss-120b" and groq["owned_by"] == "groq"
    assert client.get("/v1/models/auto", headers=bearer(api_key)).get_json()["owned_by"] == "flowcall"
    missing = client.get("/v1/models/google.gemini-2.5-flash", headers=bearer(api_key))   # not configured here
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "model_not_found"
    assert client.get("/v1/models").status_code == 401
