"""The Anthropic Messages adapter: pure translation tables, then through the dispatcher on the wire.

Answer payloads are shaped like the real recorded ones in ../shared/specs/fixtures/test_anthropic
(pydantic-ai, MIT); error bodies like ../shared/specs/anthropic/api_errors.md and api_rate-limits.md.
"""
from __future__ import annotations

import json

import pytest
import responses

from app.calls import Call, ImagePart, Message, Options, ResponseFormat, TextPart
from app.catalog import Catalog
from app.config import Settings
from app.dispatch import Dispatcher
from app.errors import (ContentBlocked, InvalidProviderResponse, ModelNotFound, ProviderAuthFailed,
                        ProviderOverloaded, ProviderRateLimited, ProviderRejected, ProviderTimeout)
from app.http import HttpResponse
from app.images import to_data_uri
from app.providers import anthropic

CATALOG = Catalog.load()
KEY = "sk-ant-test-0123456789"
ENV = {"ANTHROPIC_API_KEY": KEY}
URL = "https://api.anthropic.com/v1/messages"
PNG_URI = to_data_uri("image/png", b"\x89PNG\r\n\x1a\n" + bytes(16))
PNG_B64 = PNG_URI.split(",", 1)[1]
NATIVE = "anthropic.claude-sonnet-4-6"
TOOL_PATH = "anthropic.claude-3-sonnet-20240229"     # not in the catalog: provider defaults, structured "tool"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
          "required": ["city", "country"]}
CLOSED_SCHEMA = {**SCHEMA, "additionalProperties": False}


def dispatcher(env=ENV, **kw) -> Dispatcher:
    return Dispatcher(Settings.from_env(env), CATALOG, sleep=lambda s: None, **kw)


def target(spec: str = NATIVE, env=ENV):
    return dispatcher(env).target(CATALOG.resolve(spec).model)


def user(text: str) -> Message:
    return Message("user", (TextPart(text),))


def assistant(text: str) -> Message:
    return Message("assistant", (TextPart(text),))


def system(text: str) -> Message:
    return Message("system", (TextPart(text),))


def call(prompt="What is the capital of France?", model=NATIVE, **kw) -> Call:
    return Call(messages=(user(prompt),), model=model, **kw)


def build(c: Call, spec: str | None = None):
    return anthropic.build_request(c, target(spec or c.model))


def usage(input_tokens=20, output_tokens=10, **extra) -> dict:
    return {"cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "inference_geo": "not_available",
            "input_tokens": input_tokens, "output_tokens": output_tokens, "service_tier": "standard", **extra}


def message_ok(content=None, stop_reason="end_turn", model="claude-sonnet-4-6", usage_=None, **extra) -> dict:
    # shape from ../shared/specs/fixtures/test_anthropic/test_anthropic_model_instructions.yaml (pydantic-ai, MIT)
    if content is None:
        content = [{"type": "text", "text": "The capital of France is Paris."}]
    return {"id": "msg_01Fg1JVgvCYUHWsxrj9GkpEv", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": None, "stop_details": None,
            "usage": usage_ or usage(), **extra}


def tool_use(name="response", input_=None) -> dict:
    # shape from ../shared/specs/fixtures/test_anthropic/test_anthropic_opus_46_adaptive_thinking_accepts_tool_output[unified].yaml (pydantic-ai, MIT)
    return {"caller": {"type": "direct"}, "id": "toolu_01Ntv7EChXSFhgkJcMTHdksQ", "name": name,
            "input": {"city": "Paris", "country": "France"} if input_ is None else input_, "type": "tool_use"}


def error_body(kind: str, message: str, **error_extra) -> dict:
    # shape from ../shared/specs/anthropic/api_errors.md "Error shapes"
    return {"type": "error", "error": {"type": kind, "message": message, **error_extra},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


def resp(status, body, headers=None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpResponse(status, raw, {k.lower(): v for k, v in (headers or {}).items()})


# -- build_request: URL, headers, the plain body ----------------------------------------------------
@pytest.mark.parametrize("base, url", [
    (None, URL),
    ("https://proxy.example.com/", "https://proxy.example.com/v1/messages"),
    ("https://proxy.example.com/anthropic/v1", "https://proxy.example.com/anthropic/v1/messages"),
])
def test_url_and_headers(base, url):
    env = {**ENV, "ANTHROPIC_BASE_URL": base} if base else ENV
    request = anthropic.build_request(call(), target(env=env)).request
    assert request.method == "POST" and request.url == url
    assert request.headers == {"x-api-key": KEY, "anthropic-version": "2023-06-01",
                               "content-type": "application/json"}
    assert request.secrets == (KEY,)


def test_plain_prompt_body_exactly():
    plan = build(call(options=Options(max_tokens=321)))
    assert plan.request.json == {"model": "claude-sonnet-4-6", "max_tokens": 321, "messages": [
        {"role": "user", "content": "What is the capital of France?"}], "temperature": 0.7}
    assert plan.warnings == ()


def test_system_messages_go_top_level_and_same_role_turns_are_merged():
    c = Call(messages=(system("Be brief."), user("Hello"), user("Are you there?"), system("Answer in French."),
                       assistant("Oui."), assistant("Bonjour."), user("Capital of France?")), model=NATIVE)
    body = build(c).request.json
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert body["messages"] == [{"role": "user", "content": "Hello\n\nAre you there?"},
                                {"role": "assistant", "content": "Oui.\n\nBonjour."},
                                {"role": "user", "content": "Capital of France?"}]


def test_blank_messages_are_not_sent():
    c = Call(messages=(user("Hi"), assistant("  "), user("Still there?")), model=NATIVE)
    plan = build(c)
    assert plan.request.json["messages"] == [{"role": "user", "content": "Hi\n\nStill there?"}]
    assert any("empty messages" in w for w in plan.warnings)


# -- temperature ------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, temperature, sent, warned", [
    (NATIVE, None, 0.7, False),                               # the default is sent where accepted
    (NATIVE, 0.2, 0.2, False),
    ("anthropic.claude-haiku-4-5-20251001", 0.0, 0.0, False),
    ("anthropic.claude-opus-5", None, None, False),           # Opus 4.7+ / 5 family: never sent ...
    ("anthropic.claude-opus-5", 0.2, None, True),             # ... and a warning when the caller set it
    ("anthropic.claude-opus-4-7", 1.0, None, True),
    ("anthropic.claude-sonnet-5", 0.5, None, True),
    (TOOL_PATH, 0.3, None, True),                             # unknown model: the restrictive default
])
def test_temperature_only_where_the_model_accepts_it(spec, temperature, sent, warned):
    plan = build(call(model=spec, options=Options(temperature=temperature)))
    assert plan.request.json.get("temperature") == sent
    assert ("temperature" in plan.request.json) is (sent is not None)
    assert not {"top_p", "top_k"} & set(plan.request.json)
    assert any("temperature" in w for w in plan.warnings) is warned


# -- stop sequences ---------------------------------------------------------------------------------
@pytest.mark.parametrize("stops, sent, warned", [
    ((), None, False),
    (("END",), ["END"], False),
    (("END", "\n\nHuman:", "a", "b", "c", "d", "e"), ["END", "\n\nHuman:", "a", "b", "c", "d", "e"], False),
    (("END", " ", "\n\t"), ["END"], True),                   # whitespace-only: the API rejects them
    ((" ",), None, True),
])
def test_stop_sequences(stops, sent, warned):
    plan = build(call(options=Options(stop=stops)))
    assert plan.request.json.get("stop_sequences") == sent
    assert "stop" not in plan.request.json
    assert any("whitespace-only stop" in w for w in plan.warnings) is warned


# -- images -----------------------------------------------------------------------------------------
def test_images_by_url_and_by_data_uri():
    c = Call(messages=(Message("user", (TextPart("What is this?"), ImagePart("https://example.com/a.jpg", "low"),
                                        ImagePart(PNG_URI))),), model=NATIVE)
    assert build(c).request.json["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}]}]


# -- structured output ------------------------------------------------------------------------------
def forced_tool(name: str, input_schema: dict) -> dict:
    return {"tools": [{"name": name, "description": "Give your final answer by calling this tool; its input is the answer.",
                       "input_schema": input_schema}],
            "tool_choice": {"type": "tool", "name": name}}


@pytest.mark.parametrize("spec, fmt, expected", [
    (NATIVE, ResponseFormat("json_schema", "city", SCHEMA, True),
     {"output_config": {"format": {"type": "json_schema", "schema": CLOSED_SCHEMA}}}),
    (NATIVE, ResponseFormat("json_object"), forced_tool("response", {"type": "object"})),
    (TOOL_PATH, ResponseFormat("json_schema", "city", SCHEMA, True), forced_tool("city", SCHEMA)),
    (TOOL_PATH, ResponseFormat("json_object"), forced_tool("response", {"type": "object"})),
    (TOOL_PATH, ResponseFormat("json_schema", "cities", {"type": "array", "items": {"type": "string"}}),
     forced_tool("cities", {"type": "object", "properties": {"value": {"type": "array", "items": {"type": "string"}}},
                            "required": ["value"]})),
])
def test_structured_output_paths(spec, fmt, expected):
    plan = build(call(model=spec, response_format=fmt))
    body = plan.request.json
    assert {k: body[k] for k in ("output_config", "tools", "tool_choice") if k in body} == expected
    assert plan.warnings == ()


def test_a_schema_outside_the_native_subset_goes_the_tool_way_with_a_warning():
    schema = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}, "required": ["age"]}
    plan = build(call(response_format=ResponseFormat("json_schema", "person", schema, True)))
    assert "output_config" not in plan.request.json
    assert plan.request.json["tools"][0]["input_schema"] == schema
    assert plan.request.json["tool_choice"] == {"type": "tool", "name": "person"}
    assert any("does not support this schema (minimum)" in w for w in plan.warnings)


# -- prefill ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, rejects", [
    ("claude-sonnet-4-6", True), ("claude-opus-4-7", True), ("claude-opus-5", True), ("claude-fable-5", True),
    ("claude-sonnet-5-5", True), ("claude-mythos-preview", True),
    ("claude-haiku-4-5-20251001", False), ("claude-sonnet-4-5", False), ("claude-sonnet-4-20250514", False),
    ("claude-3-5-sonnet-20241022", False), ("claude-3-haiku-20240307", False),
    ("my-custom-deployment", True),          # no version in the name: the restrictive provider default
])
def test_which_models_reject_prefill(name, rejects):
    assert anthropic.rejects_prefill(CATALOG.lookup(f"anthropic.{name}")) is rejects


@pytest.mark.parametrize("spec, fmt, kept", [
    (NATIVE, None, False),
    ("anthropic.claude-opus-5", None, False),
    ("anthropic.claude-haiku-4-5-20251001", None, True),
    (TOOL_PATH, None, True),
    (TOOL_PATH, ResponseFormat("json_object"), False),       # the forced answer tool opens the turn itself
    ("anthropic.claude-haiku-4-5-20251001", ResponseFormat("json_schema", "city", SCHEMA), False),
])
def test_a_final_assistant_message_is_dropped_where_it_would_fail(spec, fmt, kept):
    c = Call(messages=(user("Greek name for the Sun? (A) Sol (B) Helios"), assistant("The answer is (")),
             model=spec, response_format=fmt)
    plan = build(c)
    roles = [m["role"] for m in plan.request.json["messages"]]
    assert roles == (["user", "assistant"] if kept else ["user"])
    assert any("final assistant message" in w for w in plan.warnings) is not kept


# -- parse_response ---------------------------------------------------------------------------------
def parse(body, c: Call | None = None, spec: str = NATIVE, status=200):
    c = c or call(model=spec)
    return anthropic.parse_response(resp(status, body), c, target(spec))


def test_parse_thinking_model_answer():
    # content, model and usage from ../shared/specs/fixtures/test_anthropic/test_anthropic_opus_5_features.yaml (pydantic-ai, MIT)
    body = message_ok([{"type": "thinking", "signature": "CAISzQIKhwEIEBgC",
                        "thinking": "This is a straightforward arithmetic problem."},
                       {"type": "text", "text": "2 + 2 = 4"}], model="claude-opus-5",
                      usage_=usage(13, 44, inference_geo="global", output_tokens_details={"thinking_tokens": 33}))
    c = parse(body, spec="anthropic.claude-opus-5")
    assert c.text == "2 + 2 = 4" and c.finish_reason == "stop" and c.model == "claude-opus-5"
    assert (c.usage.input_tokens, c.usage.output_tokens, c.usage.reasoning_tokens, c.usage.cached_input_tokens) == (13, 44, 33, 0)
    assert c.data is None and c.warnings == ()


def test_parse_usage_counts_cache_writes_and_reads_as_input():
    c = parse(message_ok(usage_=usage(10, 5, cache_creation_input_tokens=20, cache_read_input_tokens=30)))
    assert (c.usage.input_tokens, c.usage.cached_input_tokens, c.usage.output_tokens) == (60, 30, 5)


def test_parse_joins_text_blocks_and_skips_everything_else():
    body = message_ok([{"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3p"},
                       {"type": "text", "text": "Searching. "},
                       {"type": "server_tool_use", "id": "srvtoolu_01", "name": "web_search", "input": {"query": "x"}},
                       {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01", "content": []},
                       {"type": "text", "text": "Found it."}])
    assert parse(body).text == "Searching. Found it."


@pytest.mark.parametrize("raw, ours", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter"),
    ("tool_use", "tool_calls"), ("model_context_window_exceeded", "length"), ("pause_turn", "other"),
    ("something_new", "other"), (None, "other"),
])
def test_finish_reasons(raw, ours):
    assert parse(message_ok(stop_reason=raw)).finish_reason == ours


@pytest.mark.parametrize("stop_reason, warned", [("end_turn", False), ("max_tokens", True)])
def test_empty_content_is_an_empty_answer_not_a_crash(stop_reason, warned):
    body = message_ok([], stop_reason=stop_reason, model="claude-opus-5",
                      usage_=usage(13, 100, output_tokens_details={"thinking_tokens": 100}))
    c = parse(body, spec="anthropic.claude-opus-5")
    assert c.text == ""
    assert any("while the model was thinking: raise options.maxTokens" in w for w in c.warnings) is warned


@pytest.mark.parametrize("spec, fmt, block, finish, data, text", [
    (TOOL_PATH, ResponseFormat("json_schema", "city", SCHEMA), tool_use("city"), "stop",
     {"city": "Paris", "country": "France"}, '{"city": "Paris", "country": "France"}'),
    (NATIVE, ResponseFormat("json_object"), tool_use("response", {"any": ["thing"]}), "stop", {"any": ["thing"]},
     '{"any": ["thing"]}'),
    (TOOL_PATH, ResponseFormat("json_schema", "cities", {"type": "array"}), tool_use("cities", {"value": ["Paris"]}),
     "stop", ["Paris"], '["Paris"]'),
    (TOOL_PATH, ResponseFormat("json_schema", "city", SCHEMA), tool_use("someone_else"), "tool_calls", None, ""),
    (TOOL_PATH, None, tool_use("response"), "tool_calls", None, ""),
])
def test_the_forced_answer_tool_becomes_data(spec, fmt, block, finish, data, text):
    c = parse(message_ok([block], stop_reason="tool_use"), call(model=spec, response_format=fmt), spec)
    assert (c.finish_reason, c.data, c.text) == (finish, data, text)


def test_an_answer_tool_cut_at_the_token_limit_is_not_data():
    fmt = ResponseFormat("json_schema", "city", SCHEMA)
    c = parse(message_ok([tool_use("city", {})], stop_reason="max_tokens"), call(model=TOOL_PATH, response_format=fmt), TOOL_PATH)
    assert c.data is None and c.finish_reason == "length"


def test_refusal_without_text_is_content_blocked():
    body = message_ok([], stop_reason="refusal",
                      stop_details={"type": "refusal", "category": "cyber", "explanation": "Malware development."})
    with pytest.raises(ContentBlocked, match="refused: Malware development") as info:
        parse(body)
    assert info.value.status == 422 and info.value.provider == "anthropic"


def test_refusal_after_some_text_keeps_the_text():
    body = message_ok([{"type": "text", "text": "Here is the start"}], stop_reason="refusal")
    c = parse(body)
    assert c.text == "Here is the start" and c.finish_reason == "content_filter"


@pytest.mark.parametrize("raw", [b"<html>bad gateway</html>", b"[]", b'{"type": "message", "content": "hi"}',
                                 b'{"type": "message"}'])
def test_garbage_answers(raw):
    with pytest.raises(InvalidProviderResponse) as info:
        parse(raw)
    assert info.value.retryable is True


def test_an_error_body_inside_a_200_is_mapped_by_its_type():
    with pytest.raises(ProviderOverloaded) as info:
        parse(error_body("overloaded_error", "Overloaded"))
    assert info.value.retryable is True and info.value.upstream_status == 529


# -- parse_error ------------------------------------------------------------------------------------
SPEND_CAP = ("You have reached your API usage limits: your organization has crossed its monthly API usage "
             "threshold, set based on your organization's API tier. You will regain access on 2026-09-01 at 00:00 UTC.")


@pytest.mark.parametrize("status, body, headers, err_type, code, retryable, retry_after", [
    (400, error_body("invalid_request_error", "max_tokens: Field required"), {},
     ProviderRejected, "provider_rejected_request", False, None),
    (400, error_body("invalid_request_error", "You have reached your specified API usage limits. You will regain "
                                              "access on 2026-12-01 at 00:00 UTC."), {},
     ProviderRateLimited, "provider_quota_exceeded", False, None),
    (401, error_body("authentication_error", "invalid x-api-key"), {},
     ProviderAuthFailed, "provider_auth_failed", False, None),
    (402, error_body("billing_error", "Your credit balance is too low to access the Anthropic API."), {},
     ProviderRateLimited, "provider_quota_exceeded", False, None),
    (403, error_body("permission_error", "Your API key does not have permission to use the specified resource."), {},
     ProviderAuthFailed, "provider_auth_failed", False, None),
    (404, error_body("not_found_error", "model: claude-does-not-exist"), {},
     ModelNotFound, "model_not_found", False, None),
    (413, error_body("request_too_large", "Request exceeds the maximum allowed number of bytes."), {},
     ProviderRejected, "provider_rejected_request", False, None),
    (413, b"<html><head><title>413 Request Entity Too Large</title></head><body>cloudflare</body></html>", {},
     ProviderRejected, "provider_rejected_request", False, None),
    (429, error_body("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
     {"retry-after": "7"}, ProviderRateLimited, "provider_rate_limited", True, 7.0),
    (429, error_body("rate_limit_error", SPEND_CAP, details={"error_code": "enforced_spend_limit_reached"}), {},
     ProviderRateLimited, "provider_quota_exceeded", False, None),
    (429, error_body("rate_limit_error", "Rate limited"), {},                # no retry-after: a spend cap
     ProviderRateLimited, "provider_quota_exceeded", False, None),
    (429, error_body("rate_limit_error", SPEND_CAP, details={"error_code": "enforced_spend_limit_reached"}),
     {"retry-after": "60"}, ProviderRateLimited, "provider_quota_exceeded", False, None),
    (500, error_body("api_error", "Internal server error"), {}, ProviderOverloaded, "provider_overloaded", True, None),
    (529, error_body("overloaded_error", "Overloaded"), {}, ProviderOverloaded, "provider_overloaded", True, None),
    (504, error_body("timeout_error", "Request timed out"), {}, ProviderTimeout, "provider_timeout", True, None),
    (502, b"<html>502 Bad Gateway</html>", {}, ProviderOverloaded, "provider_overloaded", True, None),
    (503, b"", {}, ProviderOverloaded, "provider_overloaded", True, None),
])
def test_error_mapping(status, body, headers, err_type, code, retryable, retry_after):
    err = anthropic.parse_error(resp(status, body, headers), target())
    assert type(err) is err_type and err.code == code and err.retryable is retryable
    assert err.provider == "anthropic" and err.upstream_status == status and err.retry_after == retry_after
    assert err.message.startswith("Anthropic said: ")


def test_error_message_names_the_request_and_falls_back_to_the_body():
    err = anthropic.parse_error(resp(529, error_body("overloaded_error", "Overloaded")), target())
    assert err.message == "Anthropic said: Overloaded (request_id req_011CSHoEeqs5C35K2UUqR7Fy)"
    err = anthropic.parse_error(resp(502, b"<html>502 Bad Gateway</html>"), target())
    assert err.message == "Anthropic said: HTTP 502: <html>502 Bad Gateway</html>"


def test_error_text_never_carries_the_key():
    err = anthropic.parse_error(resp(401, error_body("authentication_error", f"invalid x-api-key {KEY}")), target())
    assert KEY not in err.message and "[redacted]" in err.message
    err = anthropic.parse_error(resp(400, f"<html>bad key {KEY}</html>".encode()), target())
    assert KEY not in err.message


# -- through the dispatcher, asserting what goes on the wire ----------------------------------------
def sent_request(rsps, index=0):
    request = rsps.calls[index].request
    return request, json.loads(request.body)


def assert_anthropic_headers(request):
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "anthropic-beta" not in request.headers and "Authorization" not in request.headers


def test_wire_plain_prompt():
    with responses.RequestsMock() as rsps:
        rsps.post(URL, json=message_ok())
        answer = dispatcher().execute(call())
        request, body = sent_request(rsps)
    assert request.url == URL
    assert_anthropic_headers(request)
    assert body == {"model": "claude-sonnet-4-6", "max_tokens": 1000, "temperature": 0.7,
                    "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    assert answer.text == "The capital of France is Paris." and answer.finish_reason == "stop"
    assert answer.provider == "anthropic" and answer.model == "claude-sonnet-4-6"
    assert answer.cost == pytest.approx((20 * 3 + 10 * 15) / 1e6)


def test_wire_system_and_merged_multi_turn():
    c = Call(messages=(system("You are a helpful assistant."), user("Hello"), user("I need a potato!"),
                       assistant("Which kind?"), user("Yellow.")), model=NATIVE, options=Options(temperature=0.2))
    with responses.RequestsMock() as rsps:
        rsps.post(URL, json=message_ok())
        dispatcher().execute(c)
        _, body = sent_request(rsps)
    assert body == {"model": "claude-sonnet-4-6", "max_tokens": 1000, "temperature": 0.2,
                    "system": "You are a helpful assistant.",
                    "messages": [{"role": "user", "content": "Hello\n\nI need a potato!"},
                                 {"role": "assistant", "content": "Which kind?"},
                                 {"role": "user", "content": "Yellow."}]}


def test_wire_stop_sequences_and_output_enforcement():
    with responses.RequestsMock() as rsps:
        rsps.post(URL, json=message_ok([{"type": "text", "text": "1\n2\n3\n"}], stop_reason="stop_sequence"))
        answer = dispatcher().execute(call("Count", options=Options(stop=("DONE", " "))))
        _, body = sent_request(rsps)
    assert body["stop_sequences"] == ["DONE"]
    assert answer.finish_reason == "stop"
    assert any("whitespace-only stop" in w for w in answer.warnings)


@pytest.mark.parametrize("spec, fmt, fields, content, stop_reason, data", [
    (NATIVE, ResponseFormat("json_schema", "city", SCHEMA, True),
     {"output_config": {"format": {"type": "json_schema", "schema": CLOSED_SCHEMA}}},
     # shape from ../shared/specs/fixtures/test_anthropic/test_anthropic_native_output_decimal_strict.yaml (pydantic-ai, MIT)
     [{"type": "text", "text": '{"city":"Paris","country":"France"}'}], "end_turn", {"city": "Paris", "country": "France"}),
    (NATIVE, ResponseFormat("json_object"), forced_tool("response", {"type": "object"}),
     [tool_use("response", {"capital": "Paris"})], "tool_use", {"capital": "Paris"}),
    (TOOL_PATH, ResponseFormat("json_schema", "city", SCHEMA, True), forced_tool("city", SCHEMA),
     [tool_use("city")], "tool_use", {"city": "Paris", "country": "France"}),
    (TOOL_PATH, ResponseFormat("json_object"), forced_tool("response", {"type": "object"}),
     [tool_use("response", {"capital": "Paris"})], "tool_use", {"capital": "Paris"}),
])
def test_wire_structured_output(spec, fmt, fields, content, stop_reason, data):
    with responses.RequestsMock() as rsps:
        rsps.post(URL, json=message_ok(content, stop_reason=stop_reason))
        answer = dispatcher().execute(call(model=spec, response_format=fmt))
        request, body = sent_request(rsps)
    assert_anthropic_headers(request)
    assert body == {"model": spec.split(".", 1)[1], "max_tokens": 1000,
                    "messages": [{"role": "user", "content": "What is the capital of France?"}],
                    **({"temperature": 0.7} if spec == NATIVE else {}), **fields}
    assert answer.data == data and answer.finish_reason == "stop"


def test_wire_images_by_url_and_data_uri():
    c = Call(messages=(Message("user", (TextPart("What is this vegetable?"),
                                        ImagePart("https://example.com/potato.jpg"), ImagePart(PNG_URI))),),
             model=NATIVE)
    with responses.RequestsMock() as rsps:
        rsps.post(URL, json=message_ok([{"type": "text", "text": "This is a potato."}]))
        dispatcher().execute(c)
        _, body = sent_request(rsps)
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this vegetable?"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/potato.jpg"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}]}]


def test_wire_opus_5_omits_temperature_and_says_so():
    with responses.RequestsMock() as rsps:
        rsps.post(URL, json=message_ok(model="claude-opus-5"))
        answer = dispatcher().execute(call(model="anthropic.claude-opus-5", options=Options(temperature=0.2)))
        _, body = sent_request(rsps)
    assert body == {"model": "claude-opus-5", "max_tokens": 1000,
                    "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    assert any("accepts only its default temperature" in w for w in answer.warnings)


def test_wire_529_is_retried():
    slept = []
    with responses.RequestsMock() as rsps:
        rsps.post(URL, status=529, json=error_body("overloaded_error", "Overloaded"))
        rsps.post(URL, json=message_ok())
        answer = Dispatcher(Settings.from_env(ENV), CATALOG, sleep=slept.append).execute(call())
        assert len(rsps.calls) == 2
    assert answer.routing.attempts == 2 and answer.text == "The capital of France is Paris."
    assert len(slept) == 1


def test_wire_429_with_retry_after_is_retried_after_waiting():
    slept = []
    with responses.RequestsMock() as rsps:
        rsps.post(URL, status=429, headers={"retry-after": "3"},
                  json=error_body("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"))
        rsps.post(URL, json=message_ok())
        answer = Dispatcher(Settings.from_env(ENV), CATALOG, sleep=slept.append).execute(call())
    assert answer.routing.attempts == 2 and slept and slept[0] >= 3.0


def test_wire_429_without_retry_after_is_not_retried():
    with responses.RequestsMock() as rsps:
        rsps.post(URL, status=429, json=error_body("rate_limit_error", SPEND_CAP,
                                                   details={"error_code": "enforced_spend_limit_reached"}))
        with pytest.raises(ProviderRateLimited) as info:
            dispatcher().execute(call())
        assert len(rsps.calls) == 1
    assert info.value.retryable is False and info.value.code == "provider_quota_exceeded"


def test_wire_401_is_not_retried_and_hides_the_key():
    with responses.RequestsMock() as rsps:
        rsps.post(URL, status=401, json=error_body("authentication_error", f"invalid x-api-key: {KEY}"))
        with pytest.raises(ProviderAuthFailed) as info:
            dispatcher().execute(call())
        assert len(rsps.calls) == 1
    assert info.value.retryable is False and KEY not in info.value.message


def test_wire_non_json_502_is_retried_then_reported():
    with responses.RequestsMock() as rsps:
        rsps.post(URL, status=502, body="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        with pytest.raises(ProviderOverloaded) as info:
            dispatcher().execute(call())
        assert len(rsps.calls) == 3                 # every attempt the dispatcher allows one model
    assert info.value.retryable is True and info.value.upstream_status == 502
    assert info.value.message.startswith("Anthropic said: HTTP 502: <html>")
