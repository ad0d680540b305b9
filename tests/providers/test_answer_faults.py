"""Provider answers that break parsers, adapter by adapter (pure: no I/O): JSON nested too deep,
usage numbers that are not token counts, and errors inside a 200 or a stream, which are retried or
not like their HTTP twins. The same cases run end to end in tests/test_e2e_provider_answers.py."""
from __future__ import annotations

import json

import pytest

from app.calls import Call, Completion, Message, ResponseFormat, TextPart, Usage
from app.catalog import Catalog
from app.config import Settings
from app.dispatch import Dispatcher
from app.errors import (InvalidProviderResponse, InvalidStructuredOutput, ModelNotFound, ProviderOverloaded,
                        ProviderRateLimited, ProviderRejected)
from app.http import MAX_JSON_DEPTH, HttpResponse, loads_bounded
from app.postprocess import parse_structured
from app.providers import anthropic, gemini, openai_chat, perplexity
from app.providers.common import MAX_USAGE_TOKENS
from app.providers.anthropic_stream import AnthropicStream
from app.providers.streams import SseEvent

CATALOG = Catalog.load()
ENV = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
       "GEMINI_API_KEY": "AIzaTest-0123456789abcdefghijklmn", "PERPLEXITY_API_KEY": "pplx-test-0123456789"}
DEEP = b"[" * 200_000 + b"]" * 200_000


def target(spec: str):
    return Dispatcher(Settings.from_env(ENV), CATALOG).target(CATALOG.resolve(spec).model)


def call(model: str, **kw) -> Call:
    return Call(messages=(Message("user", (TextPart("hi"),)),), model=model, **kw)


def ok(body: dict, status: int = 200, headers: dict | None = None) -> HttpResponse:
    return HttpResponse(status, json.dumps(body).encode(), headers or {})


# -- nesting ------------------------------------------------------------------------------------------------
ADAPTERS = [(openai_chat, "openai.gpt-4o"), (anthropic, "anthropic.claude-sonnet-4-6"),
            (gemini, "gemini.gemini-2.5-flash"), (perplexity, "perplexity.sonar")]


@pytest.mark.parametrize("adapter, spec", ADAPTERS, ids=[a[1] for a in ADAPTERS])
def test_an_answer_nested_200k_deep_is_an_invalid_response(adapter, spec):
    with pytest.raises(InvalidProviderResponse):
        adapter.parse_response(HttpResponse(200, DEEP), call(spec), target(spec))
    assert isinstance(adapter.parse_error(HttpResponse(500, DEEP), target(spec)), ProviderOverloaded)


def test_nesting_is_bounded_below_what_rendering_could_take():
    assert loads_bounded("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(ValueError):
        loads_bounded("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))


@pytest.mark.parametrize("text", ["[" * 200_000 + "]" * 200_000, "[" * 500 + "]" * 500])
def test_a_model_answer_nested_too_deep_is_invalid_structured_output(text):
    completion = Completion(text=text, finish_reason="stop", usage=Usage(), model="gpt-4o")
    with pytest.raises(InvalidStructuredOutput, match="nested deeper"):
        parse_structured(completion, ResponseFormat(type="json_object"), "openai")


# -- usage --------------------------------------------------------------------------------------------------
BAD_COUNTS = [10 ** 30, 1e300, MAX_USAGE_TOKENS + 1, -1, 2.5, "5", True, float("inf")]


def openai_usage(n):
    return {"id": "chatcmpl-x", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": n, "completion_tokens": 1, "total_tokens": 2}}


def anthropic_usage(n):
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
            "content": [{"type": "text", "text": "Paris."}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": n}}


def gemini_usage(n):
    return {"candidates": [{"content": {"parts": [{"text": "Paris."}], "role": "model"}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": n, "candidatesTokenCount": 1, "totalTokenCount": 2},
            "modelVersion": "gemini-2.5-flash"}


BODIES = [(openai_chat, "openai.gpt-4o", openai_usage), (anthropic, "anthropic.claude-sonnet-4-6", anthropic_usage),
          (gemini, "gemini.gemini-2.5-flash", gemini_usage)]


@pytest.mark.parametrize("count", BAD_COUNTS, ids=repr)
@pytest.mark.parametrize("adapter, spec, body", BODIES, ids=[b[1] for b in BODIES])
def test_a_usage_count_that_is_not_a_token_count_fails_the_call(adapter, spec, body, count):
    raw = json.dumps(body(count)).encode()          # 1e300 and inf as JSON numbers (1e+300, Infinity)
    with pytest.raises(InvalidProviderResponse, match="token count") as failed:
        adapter.parse_response(HttpResponse(200, raw), call(spec), target(spec))
    assert failed.value.retryable is False


@pytest.mark.parametrize("adapter, spec, body", BODIES, ids=[b[1] for b in BODIES])
def test_whole_number_counts_up_to_the_bound_are_kept(adapter, spec, body):
    for count, kept in [(MAX_USAGE_TOKENS, MAX_USAGE_TOKENS), (12.0, 12), (None, 0)]:
        completion = adapter.parse_response(ok(body(count)), call(spec), target(spec))
        assert kept in (completion.usage.input_tokens, completion.usage.output_tokens)


# -- errors inside a 200 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("error, cls, retryable", [
    ({"message": "The server had an error", "type": "server_error", "code": None}, ProviderOverloaded, True),
    ({"message": "Rate limit reached for gpt-4o", "type": "requests", "code": "rate_limit_exceeded"},
     ProviderRateLimited, True),
    ({"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"},
     ProviderRateLimited, False),
    ({"message": "Rate limit exceeded: free-models-per-day", "code": 429}, ProviderRateLimited, True),   # OpenRouter
    ({"message": "Provider returned error", "code": 502}, ProviderOverloaded, True),
    ({"message": "The model `gpt-9` does not exist", "type": "invalid_request_error", "code": "model_not_found"},
     ModelNotFound, False),
    ({"message": "Invalid 'messages'", "type": "invalid_request_error", "code": None}, ProviderRejected, False),
    ({"message": "something odd"}, ProviderOverloaded, True),
])
def test_an_openai_error_inside_a_200_is_its_http_twin(error, cls, retryable):
    with pytest.raises(cls) as raised:
        openai_chat.parse_response(ok({"error": error}), call("openai.gpt-4o"), target("openai.gpt-4o"))
    assert raised.value.retryable is retryable and raised.value.upstream_status == 200


RATE_LIMITED = {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has "
                                           "exceeded your per-minute rate limit"}, "request_id": "req_011CSH"}


def test_an_anthropic_rate_limit_inside_a_200_is_retryable():
    spec = "anthropic.claude-sonnet-4-6"
    with pytest.raises(ProviderRateLimited) as raised:
        anthropic.parse_response(ok(RATE_LIMITED), call(spec), target(spec))
    assert raised.value.retryable is True and raised.value.code == "provider_rate_limited"


def test_an_anthropic_rate_limit_mid_stream_is_retryable():
    spec = "anthropic.claude-sonnet-4-6"
    parser = AnthropicStream(call(spec), target(spec))
    with pytest.raises(ProviderRateLimited) as raised:
        parser.feed(SseEvent("error", json.dumps(RATE_LIMITED)))
    assert raised.value.retryable is True


def test_a_real_429_without_retry_after_is_still_the_spend_cap():
    spec = "anthropic.claude-sonnet-4-6"
    err = anthropic.parse_error(ok(RATE_LIMITED, status=429), target(spec))
    assert err.code == "provider_quota_exceeded" and err.retryable is False
    spend_cap = {**RATE_LIMITED, "error": {**RATE_LIMITED["error"],
                                           "details": {"error_code": "enforced_spend_limit_reached"}}}
    with pytest.raises(ProviderRateLimited) as raised:                  # named inside a 200: still a quota
        anthropic.parse_response(ok(spend_cap), call(spec), target(spec))
    assert raised.value.code == "provider_quota_exceeded" and raised.value.retryable is False
