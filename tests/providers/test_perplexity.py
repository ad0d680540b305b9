"""The Perplexity Agent API adapter: pure translation tables, then through the real dispatcher.

There are no recorded Perplexity cassettes in ../shared/specs/fixtures; answer and error payloads are
shaped from the perplexity-py SDK types (response_create_response.py, output_item.py,
content_part.py, shared/search_result.py, responses_usage.py) and Perplexity's migration guide
(perplexityai/api-platform-developers, skills/migrate-sonar-to-agent-api/references/
response-and-streaming.md, request-mapping.md), as summarised in ../shared/specs/providers.md §2.6.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import responses

from app.calls import Call, ImagePart, Message, Options, ResponseFormat, TextPart
from app.catalog import Catalog
from app.config import Settings
from app.dispatch import Dispatcher
from app.errors import (InvalidProviderResponse, ModelNotFound, ProviderAuthFailed, ProviderOverloaded,
                        ProviderRateLimited, ProviderRejected, ProviderTimeout)
from app.http import HttpResponse
from app.images import to_data_uri
from app.providers import adapter_for, perplexity

CATALOG = Catalog.load()
KEY = "pplx-test-0123456789abcdef"
ENV = {"PERPLEXITY_API_KEY": KEY}
URL = "https://api.perplexity.ai/v1/agent"
PNG_URI = to_data_uri("image/png", b"\x89PNG\r\n\x1a\n" + bytes(16))
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}

# Every top-level field the SDK's ResponseCreateParams declares: the Agent API 400s on anything else.
# Not `temperature`: the migration guide calls it "unchanged", but neither the SDK's types nor
# Perplexity's published request schema (docs.perplexity.ai "Create Response") have it.
ALLOWED_FIELDS = {"input", "background", "instructions", "language_preference", "max_output_tokens",
                  "max_steps", "model", "models", "preset", "reasoning", "response_format", "tools",
                  "stream", "top_p", "tool_choice"}


def dispatcher(env=ENV) -> Dispatcher:
    return Dispatcher(Settings.from_env(env), CATALOG, sleep=lambda s: None)


def target(spec: str, env=ENV):
    return dispatcher(env).target(CATALOG.resolve(spec).model)


def user(*parts) -> Message:
    return Message("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


def call(prompt="What is the capital of France?", model="perplexity", **kw) -> Call:
    return Call(messages=(user(prompt),), model=model, **kw)


def build(c: Call, spec: str | None = None):
    return perplexity.build_request(c, target(spec or c.model))


def agent_ok(text="Paris is the capital of France.", *, model="perplexity/sonar", status="completed",
             incomplete=None, usage=None, extra_output=()):
    """A finished run: a search_results item, then the assistant message (output_item.py)."""
    body = {
        "id": "resp_6f1d2c3b", "object": "response", "created_at": 1763800000, "model": model,
        "status": status,
        "output": [
            {"type": "search_results", "queries": ["capital of France"],
             "results": [{"id": 1, "url": "https://en.wikipedia.org/wiki/Paris", "title": "Paris - Wikipedia",
                          "snippet": "Paris is the capital and largest city of France.",
                          "date": "2026-11-01", "last_updated": "2026-11-20", "source": "web"}]},
            *extra_output,
            {"id": "msg_01", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": text, "annotations": []}]},
        ],
        "usage": usage if usage is not None else {
            "input_tokens": 812, "output_tokens": 9, "total_tokens": 821,
            "input_tokens_details": {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 128},
            "tool_calls_details": {"search_web": {"invocation": 1}},
            "cost": {"currency": "USD", "input_cost": 0.000203, "output_cost": 0.0000225,
                     "tool_calls_cost": 0.005, "total_cost": 0.0052255}},
    }
    if incomplete is not None:
        body["incomplete_details"] = incomplete
    return body


def agent_failed(message="The upstream model failed to produce a response.", status="failed", **error):
    return {"id": "resp_failed", "object": "response", "created_at": 1763800000, "model": "perplexity/sonar",
            "status": status, "output": [], "error": {"message": message, **error}}


def pplx_error(status, message, kind, param=None):
    """The documented envelope: {"error": {"message", "type", "code": <int = HTTP status>, "param"?}}."""
    err = {"message": message, "type": kind, "code": status}
    if param:
        err["param"] = param
    return {"error": err}


def resp(status, body, headers=None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpResponse(status, raw, {k.lower(): v for k, v in (headers or {}).items()})


def assert_strict_shape(body: dict):
    """Only fields the Agent API knows, at every level we produce (strict API: unknown = 400)."""
    assert set(body) <= ALLOWED_FIELDS, set(body) - ALLOWED_FIELDS
    assert ("model" in body) != ("preset" in body)
    assert "stop" not in body
    if isinstance(body["input"], list):
        for item in body["input"]:
            assert set(item) == {"type", "role", "content"} and item["type"] == "message"
            assert item["role"] in ("user", "assistant", "system", "developer")
            for part in item["content"] if isinstance(item["content"], list) else ():
                assert set(part) in ({"type", "text"}, {"type", "image_url"})
    if "response_format" in body:
        fmt = body["response_format"]
        assert set(fmt) == {"type", "json_schema"} and fmt["type"] == "json_schema"
        assert set(fmt["json_schema"]) <= {"name", "schema", "description", "strict"}


# -- build_request: selection of model / preset / tools -------------------------------------------
def test_catalog_format_maps_to_this_module():
    assert CATALOG.providers["perplexity"].format == "perplexity_agent"
    entry = adapter_for("perplexity_agent")
    assert entry.build_request is perplexity.build_request and entry.stream is None
    assert (entry.parse.parse_response, entry.parse.parse_error) == (perplexity.parse_response,
                                                                     perplexity.parse_error)


@pytest.mark.parametrize("spec, selector, tools", [
    ("perplexity", {"model": "perplexity/sonar"}, [{"type": "web_search"}]),          # legacy alias
    ("sonar", {"model": "perplexity/sonar"}, [{"type": "web_search"}]),
    ("perplexity.sonar", {"model": "perplexity/sonar"}, [{"type": "web_search"}]),
    ("perplexity.sonar-pro", {"preset": "low"}, None),
    ("perplexity.sonar-reasoning", {"preset": "low"}, None),
    ("perplexity.sonar-reasoning-pro", {"preset": "low"}, None),
    ("perplexity.sonar-deep-research", {"preset": "medium"}, None),
    ("perplexity.openai/gpt-5.1", {"model": "openai/gpt-5.1"}, [{"type": "web_search"}]),   # pass-through
    ("perplexity.anthropic/claude-sonnet-4-6", {"model": "anthropic/claude-sonnet-4-6"}, [{"type": "web_search"}]),
])
def test_model_or_preset_and_search_tool(spec, selector, tools):
    body = build(call(model=spec)).request.json
    assert {k: body[k] for k in ("model", "preset") if k in body} == selector
    assert body.get("tools") == tools
    assert body["max_output_tokens"] == 1000     # always sent: anthropic/* models require it
    assert_strict_shape(body)


def test_plain_prompt_body_url_and_headers_exactly():
    plan = build(call())
    assert plan.request.method == "POST" and plan.request.url == URL
    assert plan.request.headers["Authorization"] == f"Bearer {KEY}"
    assert plan.request.headers["Content-Type"] == "application/json"
    assert plan.request.json == {"model": "perplexity/sonar", "input": "What is the capital of France?",
                                 "max_output_tokens": 1000, "tools": [{"type": "web_search"}]}
    assert plan.warnings == () and plan.request.secrets == (KEY,)


def test_base_url_override():
    env = {**ENV, "PERPLEXITY_BASE_URL": "https://pplx-proxy.internal/"}
    plan = perplexity.build_request(call(), target("perplexity", env))
    assert plan.request.url == "https://pplx-proxy.internal/v1/agent"


def test_preset_body_exactly_keeps_the_presets_own_temperature():
    body = build(call(model="perplexity.sonar-pro")).request.json
    assert body == {"preset": "low", "input": "What is the capital of France?", "max_output_tokens": 1000}


@pytest.mark.parametrize("spec", ["perplexity", "perplexity.openai/gpt-5.1", "perplexity.sonar-pro",
                                  "perplexity.sonar-deep-research"])
@pytest.mark.parametrize("temperature", [None, 0.0, 0.3])
def test_temperature_is_never_sent(spec, temperature):
    """The Agent API has no temperature field and 400s on unknown ones; a caller's is dropped with a warning."""
    plan = build(call(model=spec, options=Options(temperature=temperature)))
    assert "temperature" not in plan.request.json
    assert any("temperature" in w for w in plan.warnings) == (temperature is not None)


def test_preset_keeps_its_own_token_budget_unless_the_caller_set_one():
    default = Options(max_tokens=1000, max_tokens_set=False)     # what a body without maxTokens gives
    assert build(call(model="perplexity.sonar-pro", options=default)).request.json == {
        "preset": "low", "input": "What is the capital of France?"}
    assert build(call(model="perplexity.sonar-pro", options=Options(max_tokens=300))).request.json[
        "max_output_tokens"] == 300
    assert build(call(model="perplexity", options=default)).request.json["max_output_tokens"] == 1000


def test_temperature_withheld_for_a_model_that_only_takes_its_default():
    model = CATALOG.resolve("perplexity").model
    model = dataclasses.replace(model, capabilities=dataclasses.replace(model.capabilities, temperature=False))
    t = dataclasses.replace(target("perplexity"), model=model)
    plan = perplexity.build_request(call(options=Options(temperature=0.2)), t)
    assert "temperature" not in plan.request.json
    assert any("temperature" in w for w in plan.warnings)
    assert perplexity.build_request(call(), t).warnings == ()


# -- build_request: messages -----------------------------------------------------------------------
def conversation(model="perplexity"):
    return Call(messages=(Message("system", (TextPart("Be brief."),)), user("Hello"),
                          Message("assistant", (TextPart("Hi! How can I help?"),)),
                          Message("system", (TextPart("Answer in French."),)),
                          user("What is the capital of France?")), model=model)


def test_system_messages_become_instructions_and_turns_become_items():
    body = build(conversation()).request.json
    assert body["instructions"] == "Be brief.\n\nAnswer in French."
    assert body["input"] == [
        {"type": "message", "role": "user", "content": "Hello"},
        {"type": "message", "role": "assistant", "content": "Hi! How can I help?"},
        {"type": "message", "role": "user", "content": "What is the capital of France?"}]
    assert_strict_shape(body)


def test_with_a_preset_system_messages_stay_in_the_input_so_the_preset_prompt_survives():
    body = build(conversation("perplexity.sonar-pro")).request.json
    assert "instructions" not in body
    assert [(i["role"], i["content"]) for i in body["input"]] == [
        ("system", "Be brief."), ("user", "Hello"), ("assistant", "Hi! How can I help?"),
        ("system", "Answer in French."), ("user", "What is the capital of France?")]
    assert_strict_shape(body)


@pytest.mark.parametrize("messages, expected_input", [
    ((user("Hi"),), "Hi"),
    ((Message("system", (TextPart("Terse."),)), user("Hi")), "Hi"),
    ((user("Hi", "there"),), "Hi\nthere"),
    ((Message("assistant", (TextPart("Earlier"),)), user("Hi")),
     [{"type": "message", "role": "assistant", "content": "Earlier"},
      {"type": "message", "role": "user", "content": "Hi"}]),
    ((user("One"), user("Two")),
     [{"type": "message", "role": "user", "content": "One"}, {"type": "message", "role": "user", "content": "Two"}]),
])
def test_input_is_a_string_only_for_one_plain_user_turn(messages, expected_input):
    body = build(Call(messages=messages, model="perplexity")).request.json
    assert body["input"] == expected_input
    assert ("instructions" in body) == any(m.role == "system" for m in messages)


def test_images_by_url_and_data_uri_are_input_image_parts():
    c = call(model="perplexity")
    c = c.with_messages((user("What is in these?", ImagePart("https://example.com/cat.jpg"), ImagePart(PNG_URI)),))
    plan = build(c)
    assert plan.request.json["input"] == [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "What is in these?"},
        {"type": "input_image", "image_url": "https://example.com/cat.jpg"},
        {"type": "input_image", "image_url": PNG_URI}]}]
    assert plan.warnings == ()
    assert_strict_shape(plan.request.json)


def test_image_detail_is_dropped_with_one_warning():
    c = call().with_messages((user("Compare", ImagePart("https://example.com/a.jpg", "low"),
                                   ImagePart("https://example.com/b.jpg", "high")),))
    plan = build(c)
    parts = plan.request.json["input"][0]["content"]
    assert all("detail" not in p for p in parts)
    assert len([w for w in plan.warnings if "detail" in w]) == 1


# -- build_request: limits, stop, structured output ------------------------------------------------
@pytest.mark.parametrize("max_tokens, sent, warned", [(1, 16, True), (15, 16, True), (16, 16, False),
                                                       (17, 17, False), (8000, 8000, False)])
def test_max_output_tokens_floor(max_tokens, sent, warned):
    plan = build(call(options=Options(max_tokens=max_tokens)))
    assert plan.request.json["max_output_tokens"] == sent
    assert any("minimum of 16" in w for w in plan.warnings) is warned


@pytest.mark.parametrize("spec", ["perplexity", "perplexity.sonar-pro"])
def test_stop_is_never_sent_and_the_caller_is_told(spec):
    plan = build(call(model=spec, options=Options(stop=("END", "\n\n"))))
    assert "stop" not in plan.request.json
    assert any("enforced on the output" in w for w in plan.warnings)


def test_empty_stop_strings_warn_nothing():
    assert build(call(options=Options(stop=("",)))).warnings == ()


@pytest.mark.parametrize("fmt, expected", [
    (ResponseFormat("json_schema", "city", SCHEMA, True),
     {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}),
    (ResponseFormat("json_schema", "city", SCHEMA, False),
     {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": False}}),
    (ResponseFormat("json_schema", "City answer!", SCHEMA, True),      # name must be [A-Za-z0-9_-]{1,64}
     {"type": "json_schema", "json_schema": {"name": "City_answer_", "schema": SCHEMA, "strict": True}}),
    (ResponseFormat("json_schema", "x" * 80, SCHEMA, True),
     {"type": "json_schema", "json_schema": {"name": "x" * 64, "schema": SCHEMA, "strict": True}}),
    (ResponseFormat("json_schema", "", SCHEMA, False),
     {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA, "strict": False}}),
    (ResponseFormat("json_object"),     # the API has no json_object type: an open object schema
     {"type": "json_schema", "json_schema": {"name": "json_object", "schema": {"type": "object"}, "strict": False}}),
    (ResponseFormat("json_schema", "any", None, False),
     {"type": "json_schema", "json_schema": {"name": "json_object", "schema": {"type": "object"}, "strict": False}}),
])
def test_response_format_top_level(fmt, expected):
    plan = build(call(response_format=fmt))
    assert plan.request.json["response_format"] == expected
    assert "text" not in plan.request.json      # Responses-style text.format is rejected
    assert plan.request.json["input"] == "What is the capital of France?"   # nothing added to the prompt
    assert_strict_shape(plan.request.json)


# -- parse_response --------------------------------------------------------------------------------
def test_parse_completed_run():
    c = perplexity.parse_response(resp(200, agent_ok()), call(), target("perplexity"))
    assert c.text == "Paris is the capital of France." and c.finish_reason == "stop"
    assert (c.usage.input_tokens, c.usage.output_tokens, c.usage.cached_input_tokens, c.usage.reasoning_tokens) \
        == (812, 9, 128, 0)
    assert c.cost == 0.0052255 and c.model == "perplexity/sonar"
    assert "wikipedia" not in c.text and c.warnings == ()      # sources stay out of the text


def test_parse_joins_every_output_text_and_skips_everything_else():
    extra = ({"id": "msg_00", "type": "message", "role": "assistant", "status": "completed",
              "content": [{"type": "output_text", "text": "Part one. "},
                          {"type": "refusal_or_future_part", "text": "IGNORED"}]},
             {"type": "fetch_url_results", "contents": [{"url": "https://a.example", "title": "A", "snippet": "x"}]},
             {"type": "unknown"})
    c = perplexity.parse_response(resp(200, agent_ok("Part two.", extra_output=extra)), call(), target("perplexity"))
    assert c.text == "Part one. Part two."


def test_parse_preset_reports_the_model_that_served_it():
    body = agent_ok(model="google/gemini-3-flash-preview")
    c = perplexity.parse_response(resp(200, body), call(model="perplexity.sonar-pro"), target("perplexity.sonar-pro"))
    assert c.model == "google/gemini-3-flash-preview"


@pytest.mark.parametrize("status, details, text, finish, warned", [
    ("completed", None, "Paris.", "stop", False),
    ("incomplete", {"reason": "max_output_tokens"}, "Paris is the cap", "length", False),
    ("incomplete", {"reason": "max_output_tokens"}, "", "length", True),
    ("incomplete", {"reason": "content_filter"}, "", "content_filter", False),
    ("incomplete", {"reason": "something_new"}, "x", "other", False),
    ("incomplete", None, "x", "other", False),
])
def test_finish_reason_from_status(status, details, text, finish, warned):
    body = agent_ok(text, status=status, incomplete=details)
    c = perplexity.parse_response(resp(200, body), call(), target("perplexity"))
    assert c.finish_reason == finish and c.text == text
    assert any("raise options.maxTokens" in w for w in c.warnings) is warned


@pytest.mark.parametrize("usage, expected", [
    ({}, (0, 0, 0, 0)),
    ({"input_tokens": 5, "output_tokens": 300, "total_tokens": 305,
      "output_tokens_details": {"reasoning_tokens": 250}}, (5, 300, 0, 250)),
    ({"input_tokens": 5, "output_tokens": 7, "input_tokens_details": None}, (5, 7, 0, 0)),
    ({"input_tokens": 5.0, "output_tokens": 7}, (5, 7, 0, 0)),
])
def test_usage(usage, expected):
    c = perplexity.parse_response(resp(200, agent_ok(usage=usage)), call(), target("perplexity"))
    u = c.usage
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.reasoning_tokens) == expected


@pytest.mark.parametrize("cost, expected", [
    ({"currency": "USD", "input_cost": 0.001, "output_cost": 0.002, "total_cost": 0.008}, 0.008),
    ({"currency": "USD", "total_cost": 0}, 0.0),
    ({"total_cost": 0.01}, 0.01),
    ({"currency": "EUR", "total_cost": 0.01}, None),
    ({"currency": "USD", "total_cost": True}, None),
    ({"currency": "USD", "total_cost": "0.01"}, None),
    ({"currency": "USD", "total_cost": -1}, None),
    ({"currency": "USD", "total_cost": 1e300}, None),
    (None, None),
])
def test_cost_is_perplexitys_own_usd_total(cost, expected):
    usage = {"input_tokens": 1, "output_tokens": 1}
    if cost is not None:
        usage["cost"] = cost
    c = perplexity.parse_response(resp(200, agent_ok(usage=usage)), call(), target("perplexity"))
    assert c.cost == expected


def test_missing_usage_means_zero_tokens_and_no_cost():
    body = agent_ok()
    del body["usage"]
    c = perplexity.parse_response(resp(200, body), call(), target("perplexity"))
    assert c.usage.total_tokens == 0 and c.cost is None


@pytest.mark.parametrize("body, err_type, retryable", [
    (agent_failed(), ProviderOverloaded, True),
    (agent_failed("Run cancelled.", status="cancelled"), ProviderOverloaded, True),
    (agent_failed("Upstream structured output failed", code="500", type="upstream_structured_output_failed"),
     ProviderOverloaded, True),
    (agent_failed("Too many requests upstream", code="429"), ProviderRateLimited, True),
    (agent_failed("Invalid schema for response_format", code="400", type="invalid_request"), ProviderRejected, False),
    ({"id": "resp_x", "object": "response", "status": "failed", "output": []}, ProviderOverloaded, True),
])
def test_failed_or_cancelled_run_inside_a_200_is_an_error(body, err_type, retryable):
    with pytest.raises(err_type) as info:
        perplexity.parse_response(resp(200, body), call(), target("perplexity"))
    err = info.value
    assert err.retryable is retryable and err.provider == "perplexity" and err.upstream_status == 200
    assert err.message.startswith("Perplexity said: the run ")
    if "error" in body:
        assert body["error"]["message"] in err.message


def test_failed_run_message_is_redacted():
    body = agent_failed(f"upstream rejected credentials {KEY}")
    with pytest.raises(ProviderOverloaded) as info:
        perplexity.parse_response(resp(200, body), call(), target("perplexity"))
    assert KEY not in info.value.message and "[redacted]" in info.value.message


@pytest.mark.parametrize("status", ["queued", "in_progress", "requires_action"])
def test_unfinished_run_is_invalid(status):
    with pytest.raises(InvalidProviderResponse) as info:
        perplexity.parse_response(resp(200, agent_ok(status=status)), call(), target("perplexity"))
    assert info.value.retryable is True


@pytest.mark.parametrize("raw", [b"<html>502 Bad Gateway</html>", b"", b"[]", b'"ok"',
                                 b'{"id": "resp_1", "status": "completed"}', b'{"status": "completed", "output": {}}'])
def test_garbage_answers(raw):
    with pytest.raises(InvalidProviderResponse) as info:
        perplexity.parse_response(resp(200, raw), call(), target("perplexity"))
    assert info.value.retryable is True


def test_error_envelope_inside_a_200_is_mapped():
    body = pplx_error(400, "invalid request body: json: unknown field \"stop\"", "invalid_request", "stop")
    with pytest.raises(ProviderRejected):
        perplexity.parse_response(resp(200, body), call(), target("perplexity"))


# -- parse_error -----------------------------------------------------------------------------------
@pytest.mark.parametrize("status, body, headers, err_type, code, retryable, retry_after", [
    (429, pplx_error(429, "Rate limit exceeded", "request_rate_limit_exceeded"),
     {"Retry-After": "3", "X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0"},
     ProviderRateLimited, "provider_rate_limited", True, 3.0),
    (429, pplx_error(429, "Rate limit exceeded", "request_rate_limit_exceeded"), {},
     ProviderRateLimited, "provider_rate_limited", True, None),
    (401, pplx_error(401, "Invalid API key", "forbidden"), {}, ProviderAuthFailed, "provider_auth_failed", False, None),
    (403, pplx_error(403, "API key blocked", "forbidden"), {}, ProviderAuthFailed, "provider_auth_failed", False, None),
    (400, pplx_error(400, "invalid request body: json: unknown field \"stop\"", "invalid_request", "stop"), {},
     ProviderRejected, "provider_rejected_request", False, None),
    (400, pplx_error(400, "max_output_tokens is required when using Anthropic models", "invalid_parameter"), {},
     ProviderRejected, "provider_rejected_request", False, None),
    (400, pplx_error(400, "model 'openai/gpt-9' is not supported", "invalid_model", "model"), {},
     ModelNotFound, "model_not_found", False, None),
    (404, pplx_error(404, "not found", "not_found"), {}, ModelNotFound, "model_not_found", False, None),
    (413, pplx_error(413, "request body too large", "payload_too_large"), {},
     ProviderRejected, "provider_rejected_request", False, None),
    (500, pplx_error(500, "internal error", "internal_error"), {}, ProviderOverloaded, "provider_overloaded", True, None),
    (502, b"<html><body>502 Bad Gateway</body></html>", {}, ProviderOverloaded, "provider_overloaded", True, None),
    (503, b"", {"Retry-After": "10"}, ProviderOverloaded, "provider_overloaded", True, 10.0),
    (504, pplx_error(504, "gateway timeout", "gateway_timeout"), {}, ProviderTimeout, "provider_timeout", True, None),
    (429, b"Too Many Requests", {}, ProviderRateLimited, "provider_rate_limited", True, None),
    (401, b"Unauthorized", {}, ProviderAuthFailed, "provider_auth_failed", False, None),
])
def test_error_mapping(status, body, headers, err_type, code, retryable, retry_after):
    err = perplexity.parse_error(resp(status, body, headers), target("perplexity"))
    assert type(err) is err_type and err.code == code and err.retryable is retryable
    assert err.provider == "perplexity" and err.upstream_status == status and err.retry_after == retry_after
    assert err.message.startswith("Perplexity said: ")
    if isinstance(body, dict):
        assert body["error"]["message"] in err.message
    else:
        assert f"HTTP {status}" in err.message


@pytest.mark.parametrize("message", [f"Invalid API key {KEY}", "Invalid key pplx-abcdef0123456789 provided",
                                     "bad header Authorization: Bearer abcdefghijklmnop"])
def test_error_messages_never_carry_the_key(message):
    err = perplexity.parse_error(resp(401, pplx_error(401, message, "forbidden")), target("perplexity"))
    assert KEY not in err.message and "pplx-abcdef" not in err.message and "abcdefghijklmnop" not in err.message
    assert "[redacted]" in err.message


def test_non_json_error_echoing_the_key_is_redacted():
    err = perplexity.parse_error(resp(500, f"upstream failure for key {KEY}".encode()), target("perplexity"))
    assert KEY not in err.message


# -- through the dispatcher, asserting what goes out -----------------------------------------------
def execute(rsps_setup, c: Call, env=ENV):
    with responses.RequestsMock() as rsps:
        rsps_setup(rsps)
        d = dispatcher(env)
        try:
            answer = d.execute(c)
        except Exception as exc:   # noqa: BLE001 - the test decides what it expected
            return None, exc, list(rsps.calls)
        return answer, None, list(rsps.calls)


def sent_body(calls, i=0) -> dict:
    return json.loads(calls[i].request.body)


def ok(body=None, status=200, **kw):
    return lambda rsps: rsps.post(URL, json=body if body is not None else agent_ok(), status=status, **kw)


def test_dispatch_legacy_alias_sends_sonar_with_web_search():
    answer, err, calls = execute(ok(), call(model="perplexity"))
    assert err is None and len(calls) == 1
    request = calls[0].request
    assert request.url == URL and request.method == "POST"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert sent_body(calls) == {"model": "perplexity/sonar", "input": "What is the capital of France?",
                                "max_output_tokens": 1000, "tools": [{"type": "web_search"}]}
    assert answer.text == "Paris is the capital of France." and answer.finish_reason == "stop"
    assert answer.provider == "perplexity" and answer.model == "perplexity/sonar"
    assert answer.routing.model_chosen == "perplexity.sonar" and answer.routing.attempts == 1
    assert (answer.usage.input_tokens, answer.usage.output_tokens, answer.usage.cached_input_tokens) == (812, 9, 128)


def test_dispatch_sonar_pro_sends_the_low_preset():
    body = agent_ok(model="openai/gpt-5.1")
    answer, err, calls = execute(ok(body), call(model="perplexity.sonar-pro", options=Options(max_tokens=2048)))
    assert err is None
    assert sent_body(calls) == {"preset": "low", "input": "What is the capital of France?", "max_output_tokens": 2048}
    assert answer.model == "openai/gpt-5.1" and answer.routing.model_chosen == "perplexity.sonar-pro"


def test_dispatch_pass_through_model():
    answer, err, calls = execute(ok(agent_ok(model="openai/gpt-5.1")), call(model="perplexity.openai/gpt-5.1"))
    assert err is None
    assert sent_body(calls)["model"] == "openai/gpt-5.1" and "preset" not in sent_body(calls)
    assert any("not in the catalog" in w for w in answer.warnings)


def test_dispatch_system_and_multi_turn():
    answer, err, calls = execute(ok(agent_ok("Paris.")), conversation())
    assert err is None and answer.text == "Paris."
    assert sent_body(calls) == {
        "model": "perplexity/sonar", "instructions": "Be brief.\n\nAnswer in French.",
        "input": [{"type": "message", "role": "user", "content": "Hello"},
                  {"type": "message", "role": "assistant", "content": "Hi! How can I help?"},
                  {"type": "message", "role": "user", "content": "What is the capital of France?"}],
        "max_output_tokens": 1000, "tools": [{"type": "web_search"}]}


def test_dispatch_stop_is_enforced_on_the_output_not_sent():
    body = agent_ok("Paris.\nEND\nMore text the caller did not want.")
    answer, err, calls = execute(ok(body), call(options=Options(stop=("END",))))
    assert err is None
    assert "stop" not in sent_body(calls)
    assert answer.text == "Paris.\n" and answer.finish_reason == "stop"
    assert any("no stop sequences" in w and "enforced on the output" in w for w in answer.warnings)


def test_dispatch_json_schema():
    fmt = ResponseFormat("json_schema", "city", SCHEMA, True)
    answer, err, calls = execute(ok(agent_ok('{"city": "Paris"}')), call(response_format=fmt))
    assert err is None
    assert sent_body(calls)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}
    assert answer.data == {"city": "Paris"}


def test_dispatch_json_object_goes_out_as_an_open_schema():
    fmt = ResponseFormat("json_object")
    answer, err, calls = execute(ok(agent_ok('```json\n{"capital": "Paris"}\n```')),
                                 call("Capital of France as JSON", response_format=fmt))
    assert err is None
    assert sent_body(calls)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "json_object", "schema": {"type": "object"}, "strict": False}}
    assert answer.data == {"capital": "Paris"}


@pytest.mark.parametrize("image", ["https://example.com/cat.jpg", PNG_URI])
def test_dispatch_images_by_url_and_data_uri(image):
    c = Call(messages=(user("What is this?", ImagePart(image)),), model="perplexity")
    answer, err, calls = execute(ok(agent_ok("A cat.")), c)
    assert err is None and answer.text == "A cat."
    assert len(calls) == 1      # a URL is passed on for Perplexity to fetch, not downloaded by us
    assert sent_body(calls)["input"] == [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": image}]}]


def test_dispatch_incomplete_run_is_length():
    body = agent_ok("Paris is the capital and largest", status="incomplete",
                    incomplete={"reason": "max_output_tokens"})
    answer, err, _ = execute(ok(body), call(options=Options(max_tokens=16)))
    assert err is None and answer.finish_reason == "length" and answer.text == "Paris is the capital and largest"


def test_dispatch_cost_comes_from_usage_cost_total_cost():
    usage = {"input_tokens": 1000, "output_tokens": 1000, "total_tokens": 2000,
             "cost": {"currency": "USD", "input_cost": 0.00025, "output_cost": 0.0025,
                      "tool_calls_cost": 0.005, "total_cost": 0.00775}}
    answer, err, _ = execute(ok(agent_ok(usage=usage)), call())
    assert err is None
    assert answer.cost == 0.00775
    assert answer.cost != CATALOG.resolve("perplexity").model.cost(answer.usage)   # not our price table


def test_dispatch_without_cost_falls_back_to_the_price_table():
    usage = {"input_tokens": 1000, "output_tokens": 1000, "total_tokens": 2000}
    answer, err, _ = execute(ok(agent_ok(usage=usage)), call())
    assert err is None and answer.cost == pytest.approx((1000 * 0.25 + 1000 * 2.5) / 1e6)


def test_dispatch_failed_run_in_a_200_is_retried_then_reported():
    answer, err, calls = execute(ok(agent_failed("Model crashed")), call())
    assert answer is None and isinstance(err, ProviderOverloaded) and err.retryable
    assert len(calls) == 3      # ATTEMPTS_PER_MODEL: a failed run is treated like their 5xx
    assert "Model crashed" in err.message and KEY not in err.message


def test_dispatch_failed_run_then_success():
    def setup(rsps):
        rsps.post(URL, json=agent_failed())
        rsps.post(URL, json=agent_ok())
    answer, err, calls = execute(setup, call())
    assert err is None and answer.routing.attempts == 2 and len(calls) == 2


def test_dispatch_429_then_200_is_retried():
    def setup(rsps):
        rsps.post(URL, status=429, headers={"Retry-After": "1"},
                  json=pplx_error(429, "Rate limit exceeded", "request_rate_limit_exceeded"))
        rsps.post(URL, json=agent_ok())
    answer, err, calls = execute(setup, call())
    assert err is None and answer.text == "Paris is the capital of France."
    assert answer.routing.attempts == 2 and len(calls) == 2
    assert sent_body(calls, 0) == sent_body(calls, 1)


def test_dispatch_401_is_not_retried_and_leaks_no_key():
    answer, err, calls = execute(ok(pplx_error(401, f"Invalid API key: {KEY}", "forbidden"), status=401), call())
    assert isinstance(err, ProviderAuthFailed) and err.retryable is False and len(calls) == 1
    assert KEY not in err.message and err.message.startswith("Perplexity said: ")


def test_dispatch_400_unknown_field_is_rejected_once():
    body = pplx_error(400, "invalid request body: json: unknown field \"foo\"", "invalid_request", "foo")
    _, err, calls = execute(ok(body, status=400), call())
    assert isinstance(err, ProviderRejected) and not err.retryable and len(calls) == 1


def test_dispatch_garbage_body():
    def setup(rsps):
        return rsps.post(URL, body=b"<html>oops</html>", status=200, content_type="text/html")
    answer, err, calls = execute(setup, call())
    assert isinstance(err, InvalidProviderResponse) and err.retryable is True and len(calls) == 1


def test_dispatch_5xx_three_times_gives_up_retryable():
    def setup(rsps):
        return rsps.post(URL, status=503, body=b"Service Unavailable")
    _, err, calls = execute(setup, call())
    assert isinstance(err, ProviderOverloaded) and err.retryable and len(calls) == 3
