"""Errors that are what they say, the same on every provider.

- OpenAI's `finish_reason: "content_filter"` means "content was omitted due to a flag from our content
  filters" (../shared/specs/openai/openapi.yaml, CreateChatCompletionResponse.choices.finish_reason
  and the stream chunk's): with no content left it is a refusal, as Anthropic's `stop_reason:
  "refusal"` (../shared/specs/anthropic/api_messages_create.md) and Gemini's SAFETY finish
  (../shared/specs/gemini/generative_service.proto Candidate.FinishReason) already are.
- Gemini errors carry both an HTTP status and a google.rpc status (providers.md §2.3 "Errors"): where
  they disagree about retrying, the HTTP status decides; a 429's body still tells a daily quota apart.
- OpenAI `stop`: "Up to 4 sequences" (openapi.yaml CreateChatCompletionRequest.stop); Ollama lists
  `stop` with no limit (providers.md §2.7).
"""
from __future__ import annotations

import json

import pytest

from app.calls import Call, Message, Options, TextPart
from app.catalog import Catalog
from app.config import Settings
from app.dispatch import Dispatcher
from app.errors import (ContentBlocked, ModelNotFound, ProviderAuthFailed, ProviderOverloaded,
                        ProviderRateLimited, ProviderRejected)
from app.http import HttpResponse
from app.providers import anthropic, gemini, openai_chat
from app.providers.openai_chat_stream import OpenAIChatStream
from app.providers.streams import SseEvent

CATALOG = Catalog.load()
ENV = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "XAI_API_KEY": "xai-test-0123456789abcdef",
       "GROQ_API_KEY": "gsk_test0123456789abcdef", "OLLAMA_BASE_URL": "http://127.0.0.1:11434/v1",
       "ANTHROPIC_API_KEY": "sk-ant-test-0123456789", "GEMINI_API_KEY": "AIzaTest0123456789abcdefghij"}


def target(spec: str):
    return Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None).target(CATALOG.resolve(spec).model)


def call(spec: str, **kw) -> Call:
    return Call(messages=(Message("user", (TextPart("Tell me something."),)),), model=spec, **kw)


def resp(status: int, body) -> HttpResponse:
    return HttpResponse(status, json.dumps(body).encode())


def chat_body(content, finish: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1749586227, "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10}}


# -- content filtered: the same error everywhere -----------------------------------------------------
@pytest.mark.parametrize("spec", ["openai.gpt-4o", "xai.grok-4.3", "groq.openai/gpt-oss-120b"])
@pytest.mark.parametrize("content", [None, ""])
def test_openai_family_content_filter_with_no_text_is_content_blocked(spec, content):
    with pytest.raises(ContentBlocked) as exc:
        openai_chat.parse_response(resp(200, chat_body(content, "content_filter")), call(spec), target(spec))
    assert exc.value.code == "content_blocked" and exc.value.retryable is False
    assert "content filter" in exc.value.message


def test_openai_content_filter_after_some_text_keeps_the_text():
    completion = openai_chat.parse_response(resp(200, chat_body("Once upon a", "content_filter")),
                                            call("openai.gpt-4o"), target("openai.gpt-4o"))
    assert (completion.text, completion.finish_reason) == ("Once upon a", "content_filter")


def test_a_streamed_content_filter_with_no_text_is_content_blocked():
    parser = OpenAIChatStream(call("openai.gpt-4o"), target("openai.gpt-4o"))
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1749586227, "model": "gpt-4o",
             "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]}
    parser.feed(SseEvent(event="", data=json.dumps(chunk)))
    with pytest.raises(ContentBlocked):
        parser.check_end("")
    parser.check_end("Once upon a")         # some text: the answer stands


@pytest.mark.parametrize("spec, adapter, body", [
    ("openai.gpt-4o", openai_chat, chat_body(None, "content_filter")),
    ("anthropic.claude-sonnet-4-6", anthropic,
     {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6", "content": [],
      "stop_reason": "refusal", "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 0}}),
    ("google.gemini-3.5-flash", gemini,
     {"candidates": [{"content": {"role": "model"}, "finishReason": "SAFETY", "index": 0}],
      "modelVersion": "gemini-3.5-flash", "usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10}}),
])
def test_a_withheld_answer_is_content_blocked_on_every_provider(spec, adapter, body):
    with pytest.raises(ContentBlocked) as exc:
        adapter.parse_response(resp(200, body), call(spec), target(spec))
    assert (exc.value.status, exc.value.code) == (422, "content_blocked")


# -- Gemini: the HTTP status decides retrying ---------------------------------------------------------
def google_error(code: int, status: str, message: str = "An internal error has occurred.", details=()):
    return {"error": {"code": code, "message": message, "status": status, "details": list(details)}}


PER_DAY = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
    {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
     "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}


@pytest.mark.parametrize("http, rpc, details, err_type, retryable", [
    (400, "INTERNAL", (), ProviderRejected, False),
    (401, "INTERNAL", (), ProviderAuthFailed, False),
    (404, "INTERNAL", (), ModelNotFound, False),
    (400, "UNAVAILABLE", (), ProviderRejected, False),
    (500, "INTERNAL", (), ProviderOverloaded, True),
    (503, "UNAVAILABLE", (), ProviderOverloaded, True),
    (503, "NOT_FOUND", (), ProviderOverloaded, True),
    (404, "NOT_FOUND", (), ModelNotFound, False),
    (429, "RESOURCE_EXHAUSTED", (PER_DAY,), ProviderRateLimited, False),   # the body refines a 429
    (429, "RESOURCE_EXHAUSTED", (), ProviderRateLimited, True),
])
def test_gemini_http_status_wins_where_it_and_the_rpc_status_disagree(http, rpc, details, err_type, retryable):
    err = gemini.parse_error(resp(http, google_error(http, rpc, details=details)), target("google.gemini-3.5-flash"))
    assert type(err) is err_type
    assert err.retryable is retryable
    assert err.upstream_status == http


def test_gemini_error_inside_a_200_keeps_the_rpc_verdict():
    with pytest.raises(ProviderOverloaded) as exc:
        gemini.parse_response(resp(200, google_error(500, "INTERNAL")), call("google.gemini-3.5-flash"),
                              target("google.gemini-3.5-flash"))
    assert exc.value.retryable


# -- stop sequences: OpenAI's limit said, Ollama's absence of one kept ---------------------------------
STOPS = ("END", "STOP", "###", "Q:", "A:")


@pytest.mark.parametrize("spec, sent, warned", [
    ("openai.gpt-4o", list(STOPS[:4]), True),
    ("xai.grok-4.20-non-reasoning", list(STOPS[:4]), True),
    ("groq.qwen/qwen3.6-27b", list(STOPS[:4]), True),
    ("ollama.llama3.2", list(STOPS), False),
])
def test_stop_sequences_past_the_limit(spec, sent, warned):
    plan = openai_chat.build_request(call(spec, options=Options(stop=STOPS)), target(spec))
    assert plan.request.json["stop"] == sent
    assert any("at most 4 stop sequences" in w and "enforced on the output" in w for w in plan.warnings) is warned


def test_four_stop_sequences_need_no_warning():
    plan = openai_chat.build_request(call("openai.gpt-4o", options=Options(stop=STOPS[:4])), target("openai.gpt-4o"))
    assert plan.request.json["stop"] == list(STOPS[:4]) and plan.warnings == ()
