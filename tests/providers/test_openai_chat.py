"""The Chat Completions adapter (OpenAI, xAI, Groq, Ollama): pure translation, then through dispatch.

Answer payloads are shaped like the real recorded ones in ../shared/specs/fixtures/test_openai,
test_groq and test_ollama (pydantic-ai, MIT).
"""
from __future__ import annotations

import json

import pytest
import responses

from app.calls import Call, ImagePart, Message, Options, ResponseFormat, TextPart
from app.catalog import Catalog
from app.config import Settings
from app.dispatch import Dispatcher
from app.errors import (ContentBlocked, InvalidProviderResponse, InvalidStructuredOutput, ModelNotFound,
                        ProviderAuthFailed, ProviderOverloaded, ProviderRateLimited, ProviderRejected)
from app.http import HttpResponse
from app.images import to_data_uri
from app.providers import openai_chat

CATALOG = Catalog.load()
ENV = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "XAI_API_KEY": "xai-test-0123456789abcdef",
       "GROQ_API_KEY": "gsk_test0123456789abcdef", "OLLAMA_BASE_URL": "http://127.0.0.1:11434/v1"}
PNG_URI = to_data_uri("image/png", b"\x89PNG\r\n\x1a\n" + bytes(16))


def dispatcher(env=ENV, **kw) -> Dispatcher:
    return Dispatcher(Settings.from_env(env), CATALOG, sleep=lambda s: None, **kw)


def target(spec: str):
    return dispatcher().target(CATALOG.resolve(spec).model)


def user(text: str) -> Message:
    return Message("user", (TextPart(text),))


def call(prompt="hi", model="openai.gpt-4o", **kw) -> Call:
    return Call(messages=(user(prompt),), model=model, **kw)


def openai_ok(content="Paris.", model="gpt-4o-2024-08-06", finish="stop", usage=None):
    return {"id": "chatcmpl-BjQ", "object": "chat.completion", "created": 1749586227, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None,
                                                 "annotations": []}, "logprobs": None, "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 13, "completion_tokens": 8, "total_tokens": 21,
                               "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                               "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                             "accepted_prediction_tokens": 0,
                                                             "rejected_prediction_tokens": 0}},
            "service_tier": "default", "system_fingerprint": "fp_07871e2ad8"}


# -- build_request ----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, url, max_field, auth", [
    ("openai.gpt-4o", "https://api.openai.com/v1/chat/completions", "max_completion_tokens", "Bearer sk-test-openai-0123456789"),
    ("xai.grok-4.3", "https://api.x.ai/v1/chat/completions", "max_completion_tokens", "Bearer xai-test-0123456789abcdef"),
    ("groq.openai/gpt-oss-120b", "https://api.groq.com/openai/v1/chat/completions", "max_completion_tokens",
     "Bearer gsk_test0123456789abcdef"),
    ("ollama.llama3.2", "http://127.0.0.1:11434/v1/chat/completions", "max_tokens", None),
])
def test_url_auth_and_token_field_per_provider(spec, url, max_field, auth):
    plan = openai_chat.build_request(call(model=spec, options=Options(max_tokens=321)), target(spec))
    assert plan.request.url == url
    assert plan.request.headers.get("Authorization") == auth
    assert plan.request.json[max_field] == 321
    assert {"max_tokens", "max_completion_tokens"} - {max_field} & set(plan.request.json) == set()
    assert plan.request.json["model"] == spec.split(".", 1)[1]


def test_plain_prompt_body_exactly():
    plan = openai_chat.build_request(call("What is the capital of France?"), target("openai.gpt-4o"))
    assert plan.request.json == {"model": "gpt-4o", "messages": [
        {"role": "user", "content": "What is the capital of France?"}], "temperature": 0.7,
        "max_completion_tokens": 1000}
    assert plan.warnings == ()


def test_system_multiturn_and_images():
    c = Call(messages=(Message("system", (TextPart("Be brief."),)), user("Hello"),
                       Message("assistant", (TextPart("Hi!"),)),
                       Message("user", (TextPart("What is this?"), ImagePart("https://example.com/a.jpg", "low"),
                                        ImagePart(PNG_URI)))), model="openai.gpt-4o")
    body = openai_chat.build_request(c, target("openai.gpt-4o")).request.json
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "low"}},
                                     {"type": "image_url", "image_url": {"url": PNG_URI}}]}]


@pytest.mark.parametrize("stops, sent", [
    (("END",), ["END"]),
    (("a", "b", "c", "d", "e", "f"), ["a", "b", "c", "d"]),
])
def test_stop_sent_natively_up_to_four(stops, sent):
    plan = openai_chat.build_request(call(options=Options(stop=stops)), target("openai.gpt-4o"))
    assert plan.request.json["stop"] == sent


@pytest.mark.parametrize("spec", ["openai.gpt-5", "openai.gpt-6-luna", "openai.some-new-model"])
def test_reasoning_models_get_no_stop_and_no_temperature(spec):
    plan = openai_chat.build_request(call(model=spec, options=Options(temperature=0.2, stop=("END",))), target(spec))
    assert "stop" not in plan.request.json and "temperature" not in plan.request.json
    assert "max_completion_tokens" in plan.request.json and "max_tokens" not in plan.request.json
    assert any("temperature" in w for w in plan.warnings)
    assert any("enforced on the output" in w for w in plan.warnings)


def test_default_temperature_dropped_silently_on_reasoning_models():
    plan = openai_chat.build_request(call(model="openai.gpt-5"), target("openai.gpt-5"))
    assert "temperature" not in plan.request.json and plan.warnings == ()


def test_grok_non_reasoning_keeps_stop_and_temperature():
    plan = openai_chat.build_request(call(model="xai.grok-4.20-non-reasoning", options=Options(temperature=0.3, stop=("X",))),
                                     target("xai.grok-4.20-non-reasoning"))
    assert plan.request.json["stop"] == ["X"] and plan.request.json["temperature"] == 0.3


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}


def test_json_schema_native():
    fmt = ResponseFormat("json_schema", "city", SCHEMA, True)
    body = openai_chat.build_request(call(response_format=fmt), target("openai.gpt-4o")).request.json
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_json_object_adds_the_word_json_only_when_missing():
    fmt = ResponseFormat("json_object")
    body = openai_chat.build_request(call("List 3 countries", response_format=fmt), target("openai.gpt-4o")).request.json
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0] == {"role": "system", "content": "Respond with a JSON object."}
    body = openai_chat.build_request(call("List 3 countries as JSON", response_format=fmt), target("openai.gpt-4o")).request.json
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_json_schema_on_a_model_without_it_degrades_to_json_object_with_the_schema_in_the_prompt():
    fmt = ResponseFormat("json_schema", "city", SCHEMA, True)
    plan = openai_chat.build_request(call(model="groq.qwen/qwen3.6-27b", response_format=fmt), target("groq.qwen/qwen3.6-27b"))
    assert plan.request.json["response_format"] == {"type": "json_object"}
    assert json.dumps(SCHEMA, separators=(",", ":")) in plan.request.json["messages"][0]["content"]
    assert any("no native JSON-schema mode" in w for w in plan.warnings)


# -- parse_response ---------------------------------------------------------------------------------
def resp(status, body, headers=None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpResponse(status, raw, {k.lower(): v for k, v in (headers or {}).items()})


def test_parse_reasoning_usage_openai_includes_reasoning_in_completion():
    # shape and numbers from test_openai/test_reasoning_model_with_temperature.yaml
    body = openai_ok("Mexico City.", "o3-mini-2025-01-31", usage={
        "completion_tokens": 238, "completion_tokens_details": {"reasoning_tokens": 192}, "prompt_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 0}, "total_tokens": 251})
    c = openai_chat.parse_response(resp(200, body), call(), target("openai.gpt-5"))
    assert (c.usage.input_tokens, c.usage.output_tokens, c.usage.reasoning_tokens) == (13, 238, 192)
    assert c.model == "o3-mini-2025-01-31" and c.text == "Mexico City."


def test_parse_xai_reasoning_tokens_are_added_to_output():
    body = openai_ok("ok", "grok-4.3", usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 115,
                                              "completion_tokens_details": {"reasoning_tokens": 100}})
    c = openai_chat.parse_response(resp(200, body), call(), target("xai.grok-4.3"))
    assert c.usage.output_tokens == 105 and c.usage.total_tokens == 115


def test_parse_ollama_without_details():
    body = {"id": "chatcmpl-150", "object": "chat.completion", "created": 1776298304, "model": "qwen3:0.6b",
            "system_fingerprint": "fp_ollama", "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "{ \"city\": \"Paris\" }", "reasoning": "Okay..."}}],
            "usage": {"completion_tokens": 15, "prompt_tokens": 136, "total_tokens": 151}}
    c = openai_chat.parse_response(resp(200, body), call(), target("ollama.qwen3:0.6b"))
    assert c.text == '{ "city": "Paris" }' and c.usage.output_tokens == 15


@pytest.mark.parametrize("raw, ours", [("stop", "stop"), ("length", "length"), ("content_filter", "content_filter"),
                                       ("tool_calls", "tool_calls"), ("", "stop"), (None, "stop"), ("weird", "other")])
def test_finish_reasons(raw, ours):
    c = openai_chat.parse_response(resp(200, openai_ok(finish=raw)), call(), target("openai.gpt-4o"))
    assert c.finish_reason == ours


def test_empty_answer_at_length_explains_itself():
    body = openai_ok(content="", finish="length", usage={"prompt_tokens": 5, "completion_tokens": 100,
                                                          "completion_tokens_details": {"reasoning_tokens": 100}})
    c = openai_chat.parse_response(resp(200, body), call(), target("openai.gpt-5"))
    assert c.text == "" and c.finish_reason == "length"
    assert any("raise options.maxTokens" in w for w in c.warnings)


def test_refusal_is_content_blocked():
    body = openai_ok(content=None)
    body["choices"][0]["message"]["refusal"] = "I can't help with that."
    with pytest.raises(ContentBlocked) as info:
        openai_chat.parse_response(resp(200, body), call(), target("openai.gpt-4o"))
    assert info.value.status == 422


@pytest.mark.parametrize("raw", [b"<html>bad gateway</html>", b"[]", b'{"choices": []}', b'{"choices": [1]}'])
def test_garbage_answers(raw):
    with pytest.raises(InvalidProviderResponse):
        openai_chat.parse_response(resp(200, raw), call(), target("openai.gpt-4o"))


# -- parse_error ------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, status, body, headers, err_type, code, retryable", [
    ("openai.gpt-4o", 429, {"error": {"message": "Rate limit reached for gpt-4o", "type": "requests",
                                      "param": None, "code": "rate_limit_exceeded"}}, {"retry-after": "2"},
     ProviderRateLimited, "provider_rate_limited", True),
    ("openai.gpt-4o", 429, {"error": {"message": "You exceeded your current quota, please check your plan.",
                                      "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}, {},
     ProviderRateLimited, "provider_quota_exceeded", False),
    ("openai.gpt-4o", 401, {"error": {"message": "Incorrect API key provided: sk-test-o*****6789.",
                                      "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}, {},
     ProviderAuthFailed, "provider_auth_failed", False),
    ("openai.gpt-4o", 404, {"error": {"message": "The model `gpt-4-vision-preview` has been deprecated",
                                      "type": "invalid_request_error", "param": None, "code": "model_not_found"}}, {},
     ModelNotFound, "model_not_found", False),
    ("openai.gpt-5", 400, {"error": {"message": "Unsupported value: 'temperature' does not support 0.7 with this model.",
                                     "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"}}, {},
     ProviderRejected, "provider_rejected_request", False),
    ("openai.gpt-4o", 500, {"error": {"message": "The server had an error", "type": "server_error"}}, {},
     ProviderOverloaded, "provider_overloaded", True),
    ("openai.gpt-4o", 503, b"<html>Service Unavailable</html>", {}, ProviderOverloaded, "provider_overloaded", True),
    ("xai.grok-4.3", 400, {"code": "Client specified an invalid argument",
                           "error": "Incorrect API key provided: xa***ef. You can obtain an API key from https://console.x.ai."},
     {}, ProviderAuthFailed, "provider_auth_failed", False),
    ("xai.grok-4.3", 429, {"code": 429, "error": "You ran out of credits."}, {},
     ProviderRateLimited, "provider_quota_exceeded", False),
    ("groq.openai/gpt-oss-120b", 400, {"error": {"message": "The model `gemma2-9b-it` has been decommissioned",
                                                 "type": "invalid_request_error", "code": "model_decommissioned"}}, {},
     ModelNotFound, "model_not_found", False),
    ("groq.openai/gpt-oss-120b", 429, {"error": {"message": "Rate limit reached for model. Please try again in 5.289s.",
                                                 "type": "tokens", "code": "rate_limit_exceeded"}}, {"retry-after": "6"},
     ProviderRateLimited, "provider_rate_limited", True),
])
def test_error_mapping(spec, status, body, headers, err_type, code, retryable):
    err = openai_chat.parse_error(resp(status, body, headers), target(spec))
    assert type(err) is err_type and err.code == code and err.retryable is retryable
    assert err.provider == spec.split(".")[0]
    if "retry-after" in headers:
        assert err.retry_after == float(headers["retry-after"])


def test_error_text_never_carries_the_key():
    key = ENV["OPENAI_API_KEY"]
    err = openai_chat.parse_error(resp(401, {"error": {"message": f"Bad key {key}", "code": "invalid_api_key"}}),
                                  target("openai.gpt-4o"))
    assert key not in err.message and "[redacted]" in err.message


# -- through the dispatcher, asserting what goes on the wire ----------------------------------------
URL = "https://api.openai.com/v1/chat/completions"


@responses.activate
def test_outgoing_request_on_the_wire():
    responses.post(URL, json=openai_ok("1\n2\n3\nDONE"))
    answer = dispatcher().execute(call("Count", options=Options(temperature=0.1, max_tokens=50, stop=("DONE",))))
    sent = responses.calls[0].request
    assert sent.url == URL
    assert sent.headers["Authorization"] == "Bearer sk-test-openai-0123456789"
    assert sent.headers["Content-Type"] == "application/json"
    assert json.loads(sent.body) == {"model": "gpt-4o", "messages": [{"role": "user", "content": "Count"}],
                                     "temperature": 0.1, "max_completion_tokens": 50, "stop": ["DONE"]}
    assert answer.text == "1\n2\n3\n" and answer.finish_reason == "stop"
    assert answer.cost == pytest.approx((13 * 2.5 + 8 * 10) / 1e6)


@responses.activate
def test_stops_beyond_four_are_enforced_on_the_output():
    responses.post(URL, json=openai_ok("alpha beta gamma EPSILON delta"))
    answer = dispatcher().execute(call(options=Options(stop=("s1", "s2", "s3", "s4", "EPSILON"))))
    assert json.loads(responses.calls[0].request.body)["stop"] == ["s1", "s2", "s3", "s4"]
    assert answer.text == "alpha beta gamma " and answer.finish_reason == "stop"


@responses.activate
def test_structured_output_parsed_and_validated():
    fmt = ResponseFormat("json_schema", "city", SCHEMA, True)
    responses.post(URL, json=openai_ok('```json\n{"city": "Paris"}\n```'))
    assert dispatcher().execute(call(response_format=fmt)).data == {"city": "Paris"}
    responses.post(URL, json=openai_ok('{"town": "Paris"}'))
    with pytest.raises(InvalidStructuredOutput, match="does not match the schema"):
        dispatcher().execute(call(response_format=fmt))
    responses.post(URL, json=openai_ok("Paris, obviously"))
    with pytest.raises(InvalidStructuredOutput, match="not valid JSON"):
        dispatcher().execute(call(response_format=ResponseFormat("json_object")))


@responses.activate
def test_retry_after_429_then_success():
    slept = []
    responses.post(URL, status=429, headers={"retry-after": "1"},
                   json={"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})
    responses.post(URL, json=openai_ok())
    d = Dispatcher(Settings.from_env(ENV), CATALOG, sleep=slept.append)
    answer = d.execute(call())
    assert answer.routing.attempts == 2 and answer.text == "Paris."
    assert slept and slept[0] >= 1.0          # Retry-After honoured


@responses.activate
def test_insufficient_quota_is_not_retried():
    responses.post(URL, status=429, json={"error": {"message": "You exceeded your current quota",
                                                    "type": "insufficient_quota", "code": "insufficient_quota"}})
    with pytest.raises(ProviderRateLimited) as info:
        dispatcher().execute(call())
    assert len(responses.calls) == 1 and info.value.retryable is False


@responses.activate
def test_400_is_not_retried_and_not_fallen_back():
    responses.post(URL, status=400, json={"error": {"message": "bad", "type": "invalid_request_error", "code": None}})
    with pytest.raises(ProviderRejected):
        dispatcher().execute(call(fallbacks=("xai.grok-4.3",)))
    assert len(responses.calls) == 1
