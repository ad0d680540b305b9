"""The Gemini generateContent adapter: pure translation tables, then through the real dispatcher.

Answer payloads are shaped like the real recordings in ../shared/specs/fixtures/test_google (pydantic-ai,
MIT); each one names its file. Error bodies have the google.rpc shape documented in providers.md §2.3
and quoted verbatim in public bug reports (cited where used).
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import responses

from app.calls import Call, ImagePart, Message, Options, ResponseFormat, TextPart
from app.catalog import Catalog
from app.config import Settings
from app.dispatch import Dispatcher
from app.errors import (ContentBlocked, ImageRejected, InvalidProviderResponse, InvalidStructuredOutput,
                        ModelNotFound, ProviderAuthFailed, ProviderOverloaded, ProviderRateLimited,
                        ProviderRejected, ProviderTimeout)
from app.http import HttpResponse
from app.images import to_data_uri
from app.providers import gemini

CATALOG = Catalog.load()
KEY = "AIzaSyTEST-key-0123456789abcdefghij"
ENV = {"GEMINI_API_KEY": KEY}
MODEL = "google.gemini-3.5-flash"
URL = "https://generativelanguage.googleapis.com/v1beta/models/gemini-3.5-flash:generateContent"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(16)
PNG_URI = to_data_uri("image/png", PNG)
PNG_B64 = PNG_URI.split(",", 1)[1]


def dispatcher(env=ENV, **kw) -> Dispatcher:
    return Dispatcher(Settings.from_env(env), CATALOG, sleep=lambda s: None, **kw)


def target(spec: str = MODEL, env=ENV):
    return dispatcher(env).target(CATALOG.resolve(spec).model)


def target_with(spec: str = MODEL, params=None, **capabilities):
    t = target(spec)
    model = replace(t.model, capabilities=replace(t.model.capabilities, **capabilities),
                    params=params if params is not None else t.model.params)
    return replace(t, model=model)


def user(*parts) -> Message:
    return Message("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))


def call(prompt="What is the capital of France?", model=MODEL, **kw) -> Call:
    return Call(messages=(user(prompt),), model=model, **kw)


def body_of(c: Call, t=None) -> dict:
    return gemini.build_request(c, t or target(c.model)).request.json


def gemini_ok(text="The capital of France is Paris.\n", finish="STOP", usage=None, model="gemini-3.5-flash"):
    # shape from ../shared/specs/fixtures/test_google/test_google_model_instructions.yaml (pydantic-ai, MIT)
    return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": finish,
                            "index": 0}],
            "modelVersion": model, "responseId": "41peaK-wOMSenvgPh-vRiAY",
            "usageMetadata": usage or {"candidatesTokenCount": 8, "promptTokenCount": 13, "totalTokenCount": 21,
                                       "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 13}]}}


def google_error(code, status, message, *details):
    return {"error": {"code": code, "message": message, "status": status, "details": list(details)}}


RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
HELP = {"@type": "type.googleapis.com/google.rpc.Help",
        "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}
# violations as quoted in google-gemini/gemini-cli#8437 and langgenius/dify#19838
PER_MINUTE = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
    {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
     "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
     "quotaDimensions": {"location": "global", "model": "gemini-3.5-flash"}}]}
PER_DAY = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
    {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
     "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"},
    {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
     "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
     "quotaDimensions": {"location": "global", "model": "gemini-3.5-flash"}}]}
PER_DAY_METRIC_ONLY = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
    {"quotaMetric": "generativelanguage.googleapis.com/generate_requests_per_model_per_day"}]}
# shape as quoted in continuedev/continue#8516
KEY_INVALID = google_error(
    400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
     "metadata": {"service": "generativelanguage.googleapis.com"}},
    {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
     "message": "API key not valid. Please pass a valid API key."})
NOT_FOUND = google_error(404, "NOT_FOUND", "models/gemini-9-ultra is not found for API version v1beta, or is not "
                                           "supported for generateContent. Call ListModels to see the list of "
                                           "available models and their supported methods.")
QUOTA_429 = google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and "
                                                    "billing details.", PER_MINUTE, HELP, RETRY_INFO)
DAILY_429 = google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and "
                                                    "billing details.", PER_DAY, HELP, RETRY_INFO)
# shape from ../shared/specs/fixtures/test_google/test_google_model_max_tokens_thinking_model_empty_response.yaml
NO_PARTS_MAX_TOKENS = {
    "candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}],
    "modelVersion": "gemini-2.5-pro", "responseId": "fH8oaunbEbr9qtsPjYGX4A0",
    "usageMetadata": {"promptTokenCount": 15, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 15}],
                      "serviceTier": "standard", "thoughtsTokenCount": 2, "totalTokenCount": 17}}
# promptFeedback shape from test_google_model_armor_prompt_template_text_gets_blocked.yaml
BLOCKED_PROMPT = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "modelVersion": "gemini-3.5-flash",
                  "responseId": "mSEXaseKG-P51PIPwv66qQs",
                  "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}}


# -- build_request ----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, env, url", [
    (MODEL, ENV, URL),
    ("google.gemini-2.5-flash", {"GOOGLE_API_KEY": KEY},
     "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"),
    ("gemini.gemini-3.1-pro-preview", {**ENV, "GEMINI_BASE_URL": "https://gw.example.com/google/"},
     "https://gw.example.com/google/v1beta/models/gemini-3.1-pro-preview:generateContent"),
])
def test_url_and_key_header_never_the_url(spec, env, url):
    request = gemini.build_request(call(model=spec), target(spec, env)).request
    assert request.url == url
    assert KEY not in request.url and "key=" not in request.url
    assert request.headers == {"Content-Type": "application/json", "Accept": "application/json",
                               "x-goog-api-key": KEY}
    assert request.secrets == (KEY,)


def test_model_name_cannot_escape_the_path():
    t = target()
    t = replace(t, model=replace(t.model, name="../../v1/files?x=1#"))
    url = gemini.build_request(call(), t).request.url
    assert url == ("https://generativelanguage.googleapis.com/v1beta/models/"
                   "..%2F..%2Fv1%2Ffiles%3Fx%3D1%23:generateContent")


def test_plain_prompt_body_exactly():
    plan = gemini.build_request(call(), target())
    assert plan.request.json == {
        "contents": [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}],
        "generationConfig": {"maxOutputTokens": 1000}}
    assert plan.warnings == ()


def test_system_and_multiturn_roles_and_merging():
    c = Call(messages=(Message("system", (TextPart("You are a helpful assistant."),)),
                       user("Hello"), user("Are you there?"),
                       Message("assistant", (TextPart("Yes."),)), Message("assistant", (TextPart("How can I help?"),)),
                       Message("system", (TextPart("Answer in French."),)),
                       user("Capital of Italy?")), model=MODEL, options=Options(temperature=0.0, max_tokens=64))
    assert body_of(c) == {
        "contents": [{"role": "user", "parts": [{"text": "Hello\n\nAre you there?"}]},
                     {"role": "model", "parts": [{"text": "Yes.\n\nHow can I help?"}]},
                     {"role": "user", "parts": [{"text": "Capital of Italy?"}]}],
        "systemInstruction": {"parts": [{"text": "You are a helpful assistant.\n\nAnswer in French."}]},
        "generationConfig": {"temperature": 0.0, "maxOutputTokens": 64}}


def test_a_message_without_parts_still_sends_one_part():
    c = Call(messages=(Message("user", ()),), model=MODEL)
    assert body_of(c)["contents"] == [{"role": "user", "parts": [{"text": ""}]}]


def test_temperature_not_sent_where_the_model_refuses_it():
    plan = gemini.build_request(call(options=Options(temperature=0.2)), target_with(temperature=False))
    assert "temperature" not in plan.request.json["generationConfig"]
    assert any("temperature" in w for w in plan.warnings)
    plan = gemini.build_request(call(), target_with(temperature=False))
    assert "temperature" not in plan.request.json["generationConfig"] and plan.warnings == ()


@pytest.mark.parametrize("stops, caps, sent, warned", [
    (("END",), {}, ["END"], False),
    (("", "END", ""), {}, ["END"], False),
    (("a", "b", "c", "d", "e"), {}, ["a", "b", "c", "d", "e"], False),
    (("a", "b", "c", "d", "e", "f", "g"), {}, ["a", "b", "c", "d", "e"], True),
    (("a", "b", "c", "d"), {"stop_limit": 3}, ["a", "b", "c"], True),
    (("a", "b", "c", "d", "e", "f"), {"stop_limit": 9}, ["a", "b", "c", "d", "e"], True),
    (("END",), {"stop": False}, None, True),
    ((), {}, None, False),
])
def test_stop_sequences_at_most_five(stops, caps, sent, warned):
    plan = gemini.build_request(call(options=Options(stop=stops)), target_with(**caps))
    assert plan.request.json["generationConfig"].get("stopSequences") == sent
    assert any("enforced on the output" in w for w in plan.warnings) is warned


def test_json_object_is_the_mime_type_only():
    plan = gemini.build_request(call(response_format=ResponseFormat("json_object")), target())
    config = plan.request.json["generationConfig"]
    assert config == {"maxOutputTokens": 1000, "responseMimeType": "application/json"}
    assert "systemInstruction" not in plan.request.json


SCHEMA = {  # $defs/$ref and a nullable field, as pydantic writes them
    "$defs": {"Address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                          "required": ["city"], "title": "Address"}},
    "type": "object", "title": "Person", "additionalProperties": False,
    "properties": {"name": {"type": "string", "minLength": 1},
                   "address": {"$ref": "#/$defs/Address"},
                   "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}},
    "required": ["name", "address", "nickname"]}
SCHEMA_SENT = {  # minLength and default are not in the supported list; everything else is
    "$defs": {"Address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                          "required": ["city"], "title": "Address"}},
    "type": "object", "title": "Person", "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/Address"},
                   "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
    "required": ["name", "address", "nickname"]}


def test_json_schema_goes_as_response_json_schema():
    plan = gemini.build_request(call(response_format=ResponseFormat("json_schema", "person", SCHEMA, True)), target())
    assert plan.request.json["generationConfig"] == {
        "maxOutputTokens": 1000, "responseMimeType": "application/json",
        "responseJsonSchema": SCHEMA_SENT}
    assert plan.warnings == ("Gemini does not support these JSON Schema keywords, which were left out of the "
                             "schema sent: minLength; the answer was still validated against the full schema.",)


def test_json_schema_without_native_support_goes_in_the_system_instruction():
    plan = gemini.build_request(Call(messages=(Message("system", (TextPart("Be exact."),)), user("Who?")), model=MODEL,
                                     response_format=ResponseFormat("json_schema", "person", SCHEMA)),
                                target_with(json_schema=False))
    config, system = plan.request.json["generationConfig"], plan.request.json["systemInstruction"]["parts"][0]["text"]
    assert config["responseMimeType"] == "application/json" and "responseJsonSchema" not in config
    assert system.startswith("Be exact.\n\nRespond only with a JSON object that matches this JSON Schema")
    assert json.dumps(SCHEMA, separators=(",", ":")) in system
    assert any("no native JSON-schema mode" in w for w in plan.warnings)
    plan = gemini.build_request(call(response_format=ResponseFormat("json_object")),
                                target_with(json_schema=False, json_object=False))
    assert "responseMimeType" not in plan.request.json["generationConfig"]
    assert plan.request.json["systemInstruction"] == {"parts": [{"text": "Respond only with a JSON object, with no other text."}]}


def test_image_data_uri_becomes_inline_data():
    c = Call(messages=(user("What is this?", ImagePart(PNG_URI, "low")),), model=MODEL)
    assert body_of(c)["contents"] == [{"role": "user", "parts": [
        {"text": "What is this?"}, {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]}]


def test_an_image_url_reaching_the_adapter_is_rejected_clearly():
    c = Call(messages=(user("What is this?", ImagePart("https://example.com/a.png")),), model=MODEL)
    with pytest.raises(ImageRejected) as info:
        gemini.build_request(c, target())
    assert info.value.status == 400 and "inline data" in info.value.message
    assert info.value.fields == {"messages.0.content": "image URL not inlined before building the Gemini request"}


# -- parse_response ---------------------------------------------------------------------------------
def resp(status, body, headers=None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpResponse(status, raw, {k.lower(): v for k, v in (headers or {}).items()})


def test_parse_plain_answer():
    c = gemini.parse_response(resp(200, gemini_ok(model="gemini-3.5-flash-001")), call(), target())
    assert c.text == "The capital of France is Paris.\n" and c.finish_reason == "stop"
    assert c.usage.input_tokens == 13 and c.usage.output_tokens == 8 and c.usage.reasoning_tokens == 0
    assert c.model == "gemini-3.5-flash-001" and c.warnings == ()


def test_parse_skips_thought_parts_and_joins_the_rest():
    # shape from test_google_model_thinking_part.yaml: a thought part, then the answer (with thoughtSignature)
    body = gemini_ok()
    body["candidates"][0]["content"]["parts"] = [
        {"text": "**My Thought Process**\n\nAlright...", "thought": True},
        {"text": "Crossing the street safely ", "thoughtSignature": "CiQBcsjafE"},
        {"thoughtSignature": "CiQBcsjafF"},
        {"text": "requires awareness."}]
    assert gemini.parse_response(resp(200, body), call(), target()).text == "Crossing the street safely requires awareness."


def test_parse_thinking_tokens_are_outside_candidates():
    # numbers from test_google_recursive_schema_native_output_gemini_2_5.yaml: 20 + 16 + 183 = 219
    usage = {"candidatesTokenCount": 16, "promptTokenCount": 20, "thoughtsTokenCount": 183, "totalTokenCount": 219,
             "cachedContentTokenCount": 12, "toolUsePromptTokenCount": 0}
    c = gemini.parse_response(resp(200, gemini_ok(usage=usage)), call(), target())
    assert (c.usage.input_tokens, c.usage.output_tokens, c.usage.reasoning_tokens, c.usage.cached_input_tokens) == \
        (20, 199, 183, 12)
    assert c.usage.total_tokens == 219


def test_parse_no_parts_at_max_tokens_is_an_empty_length_answer():
    c = gemini.parse_response(resp(200, NO_PARTS_MAX_TOKENS), call(), target())
    assert c.text == "" and c.finish_reason == "length" and c.model == "gemini-2.5-pro"
    assert (c.usage.input_tokens, c.usage.output_tokens, c.usage.reasoning_tokens) == (15, 2, 2)
    assert c.warnings == ("The answer is empty because the token limit was reached while the model was thinking: "
                          "raise options.maxTokens.",)


@pytest.mark.parametrize("raw, ours", [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), (None, "stop"),
    ("SAFETY", "content_filter"), ("RECITATION", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"),
    ("BLOCKLIST", "content_filter"), ("SPII", "content_filter"), ("IMAGE_SAFETY", "content_filter"),
    ("MODEL_ARMOR", "content_filter"),
    ("LANGUAGE", "other"), ("OTHER", "other"), ("MALFORMED_FUNCTION_CALL", "other"),
    ("FINISH_REASON_UNSPECIFIED", "other"), ("SOMETHING_NEW", "other"),
])
def test_finish_reasons(raw, ours):
    body = gemini_ok(text="partial")
    if raw is None:
        del body["candidates"][0]["finishReason"]
    else:
        body["candidates"][0]["finishReason"] = raw
    c = gemini.parse_response(resp(200, body), call(), target())
    assert c.finish_reason == ours and c.text == "partial"
    assert any("stopped the answer early" in w for w in c.warnings) is (ours == "content_filter")


def test_blocked_prompt_is_content_blocked_naming_the_reason():
    with pytest.raises(ContentBlocked) as info:
        gemini.parse_response(resp(200, BLOCKED_PROMPT), call(), target())
    assert info.value.status == 422 and info.value.retryable is False
    assert info.value.message == "Google Gemini blocked the prompt (PROHIBITED_CONTENT)."
    body = {"promptFeedback": {"blockReason": "MODEL_ARMOR",
                               "blockReasonMessage": "The prompt violated Prompt Injection and Jailbreak filters."}}
    with pytest.raises(ContentBlocked, match=r"\(MODEL_ARMOR\): The prompt violated Prompt Injection"):
        gemini.parse_response(resp(200, body), call(), target())


@pytest.mark.parametrize("candidate", [
    # shape from test_google_model_armor_response_template_real_block.yaml: no content at all
    {"finishMessage": "The response violated Responsible AI Safety settings (Hate Speech, Harassment, Dangerous) filters.",
     "finishReason": "MODEL_ARMOR"},
    {"content": {"role": "model"}, "finishReason": "SAFETY", "index": 0,
     "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]},
    {"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "RECITATION"},
])
def test_a_filtered_candidate_without_text_is_content_blocked(candidate):
    body = {"candidates": [candidate], "modelVersion": "gemini-2.5-flash",
            "usageMetadata": {"candidatesTokenCount": 6, "promptTokenCount": 19, "thoughtsTokenCount": 27}}
    with pytest.raises(ContentBlocked) as info:
        gemini.parse_response(resp(200, body), call(), target())
    assert info.value.status == 422 and candidate["finishReason"] in info.value.message


@pytest.mark.parametrize("raw", [b"<html>502 Bad Gateway</html>", b"[]", b"{}", b'{"candidates": []}',
                                 b'{"candidates": [1]}', b'{"candidates": "x", "promptFeedback": {}}'])
def test_garbage_answers(raw):
    with pytest.raises(InvalidProviderResponse) as info:
        gemini.parse_response(resp(200, raw), call(), target())
    assert info.value.retryable is True


def test_an_error_inside_a_200_is_mapped():
    with pytest.raises(ProviderRateLimited):
        gemini.parse_response(resp(200, QUOTA_429), call(), target())


def test_model_falls_back_to_the_catalog_name_without_model_version():
    body = gemini_ok()
    del body["modelVersion"]
    assert gemini.parse_response(resp(200, body), call(), target()).model == "gemini-3.5-flash"


# -- parse_error ------------------------------------------------------------------------------------
@pytest.mark.parametrize("status, body, headers, err_type, code, retryable, retry_after", [
    (429, QUOTA_429, {}, ProviderRateLimited, "provider_rate_limited", True, 37.0),
    (429, google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."), {},
     ProviderRateLimited, "provider_rate_limited", True, None),
    (429, google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.",
                       {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "45.578569677s"}), {},
     ProviderRateLimited, "provider_rate_limited", True, 45.578569677),
    (429, google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded."), {"retry-after": "3"},
     ProviderRateLimited, "provider_rate_limited", True, 3.0),
    (429, DAILY_429, {}, ProviderRateLimited, "provider_quota_exceeded", False, 37.0),
    (429, google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", PER_DAY_METRIC_ONLY), {},
     ProviderRateLimited, "provider_quota_exceeded", False, None),
    # quoted in continuedev/continue#9570: a free tier with no access to the model at all
    (429, google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.\n* Quota exceeded for metric: "
                       "generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 0, model: "
                       "gemini-3-pro\nPlease retry in 45.578569677s.", HELP), {},
     ProviderRateLimited, "provider_quota_exceeded", False, None),
    (400, KEY_INVALID, {}, ProviderAuthFailed, "provider_auth_failed", False, None),
    (403, google_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."), {},
     ProviderAuthFailed, "provider_auth_failed", False, None),
    (401, google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."), {},
     ProviderAuthFailed, "provider_auth_failed", False, None),
    (404, NOT_FOUND, {}, ModelNotFound, "model_not_found", False, None),
    (400, google_error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.generation_config.stop_sequences: "
                       "too many stop sequences"), {}, ProviderRejected, "provider_rejected_request", False, None),
    (400, google_error(400, "FAILED_PRECONDITION", "User location is not supported for the API use."), {},
     ProviderRejected, "provider_rejected_request", False, None),
    (500, google_error(500, "INTERNAL", "An internal error has occurred."), {},
     ProviderOverloaded, "provider_overloaded", True, None),
    (503, google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."), {},
     ProviderOverloaded, "provider_overloaded", True, None),
    (504, google_error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."), {},
     ProviderTimeout, "provider_timeout", True, None),
    # non-JSON bodies map by status
    (502, b"<html><title>502 Bad Gateway</title></html>", {}, ProviderOverloaded, "provider_overloaded", True, None),
    (503, b"upstream connect error", {}, ProviderOverloaded, "provider_overloaded", True, None),
    (504, b"", {}, ProviderTimeout, "provider_timeout", True, None),
    (429, b"Too Many Requests", {"retry-after": "2"}, ProviderRateLimited, "provider_rate_limited", True, 2.0),
    (404, b"<html>Not Found</html>", {}, ModelNotFound, "model_not_found", False, None),
    (400, b"Bad Request", {}, ProviderRejected, "provider_rejected_request", False, None),
    # some Google fronts wrap the error in a list
    (400, [KEY_INVALID], {}, ProviderAuthFailed, "provider_auth_failed", False, None),
])
def test_error_mapping(status, body, headers, err_type, code, retryable, retry_after):
    err = gemini.parse_error(resp(status, body, headers), target())
    assert type(err) is err_type and err.code == code and err.retryable is retryable
    assert err.retry_after == retry_after and err.provider == "google" and err.upstream_status == status
    assert err.message.startswith("Google Gemini said: ")


def test_error_text_says_what_google_said():
    err = gemini.parse_error(resp(404, NOT_FOUND), target())
    assert err.message == "Google Gemini said: " + NOT_FOUND["error"]["message"]
    err = gemini.parse_error(resp(503, b"upstream connect error"), target())
    assert err.message == "Google Gemini said: HTTP 503: upstream connect error"


@pytest.mark.parametrize("leak", [KEY, "AIzaSyOTHER-key-abcdefghijklmnopqrstuv"])
def test_error_text_never_carries_a_key(leak):
    body = google_error(400, "INVALID_ARGUMENT", f"API key not valid: {leak}",
                        {"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": f"Invalid API key: {leak}"})
    err = gemini.parse_error(resp(400, body), target())
    assert type(err) is ProviderAuthFailed
    assert leak not in err.message and "[redacted]" in err.message
    err = gemini.parse_error(resp(500, f"<html>{leak}</html>".encode()), target())
    assert leak not in err.message


# -- through the dispatcher, asserting what goes on the wire ----------------------------------------
def sent(index=0):
    request = responses.calls[index].request
    return request.url, request.headers, json.loads(request.body)


@responses.activate
def test_wire_plain_prompt():
    responses.post(URL, json=gemini_ok())
    answer = dispatcher().execute(call())
    url, headers, body = sent()
    assert url == URL and "key=" not in url and KEY not in url
    assert headers["x-goog-api-key"] == KEY and headers["Content-Type"] == "application/json"
    assert "Authorization" not in headers
    assert body == {"contents": [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}],
                    "generationConfig": {"maxOutputTokens": 1000}}
    assert answer.text == "The capital of France is Paris.\n" and answer.finish_reason == "stop"
    assert answer.provider == "google" and answer.model == "gemini-3.5-flash"
    assert answer.cost == pytest.approx((13 * 1.5 + 8 * 9) / 1e6)
    assert answer.routing.attempts == 1


@responses.activate
def test_wire_system_and_multiturn():
    responses.post(URL, json=gemini_ok("Rome."))
    c = Call(messages=(Message("system", (TextPart("Be brief."),)), user("Capital of France?"),
                       Message("assistant", (TextPart("Paris."),)), user("And Italy?")),
             model=MODEL, options=Options(temperature=0.2, max_tokens=50))
    answer = dispatcher().execute(c)
    assert sent()[2] == {
        "contents": [{"role": "user", "parts": [{"text": "Capital of France?"}]},
                     {"role": "model", "parts": [{"text": "Paris."}]},
                     {"role": "user", "parts": [{"text": "And Italy?"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0.2, "maxOutputTokens": 50}}
    assert answer.text == "Rome."


@responses.activate
def test_wire_seven_stops_five_sent_the_rest_enforced_on_the_answer():
    responses.post(URL, json=gemini_ok("alpha beta END7 gamma END6 delta"))
    stops = ("s1", "s2", "s3", "s4", "s5", "END6", "END7")
    answer = dispatcher().execute(call(options=Options(stop=stops)))
    assert sent()[2]["generationConfig"]["stopSequences"] == ["s1", "s2", "s3", "s4", "s5"]
    assert answer.text == "alpha beta " and answer.finish_reason == "stop"
    assert any("at most 5 stop sequences" in w for w in answer.warnings)


@responses.activate
def test_wire_json_object():
    responses.post(URL, json=gemini_ok('{"city": "Paris", "country": "France"}'))
    answer = dispatcher().execute(call(response_format=ResponseFormat("json_object")))
    config = sent()[2]["generationConfig"]
    assert config == {"maxOutputTokens": 1000, "responseMimeType": "application/json"}
    assert answer.data == {"city": "Paris", "country": "France"}


@responses.activate
def test_wire_json_schema_with_refs_and_a_nullable_field():
    responses.post(URL, json=gemini_ok('{"name": "Ada", "address": {"city": "London"}, "nickname": null}'))
    fmt = ResponseFormat("json_schema", "person", SCHEMA, True)
    answer = dispatcher().execute(call("Who wrote the first program?", response_format=fmt))
    assert sent()[2] == {
        "contents": [{"role": "user", "parts": [{"text": "Who wrote the first program?"}]}],
        "generationConfig": {"maxOutputTokens": 1000, "responseMimeType": "application/json",
                             "responseJsonSchema": SCHEMA_SENT}}
    assert answer.data == {"name": "Ada", "address": {"city": "London"}, "nickname": None}
    # a constraint Gemini was not sent (minLength) is still enforced on the answer
    responses.post(URL, json=gemini_ok('{"name": "", "address": {"city": "London"}, "nickname": null}'))
    with pytest.raises(InvalidStructuredOutput, match="does not match the schema"):
        dispatcher().execute(call(response_format=fmt))


@responses.activate
def test_wire_image_by_data_uri():
    # answer shape from test_google_model_image_url_input.yaml
    responses.post(URL, json=gemini_ok("That is a potato.", usage={
        "candidatesTokenCount": 5, "promptTokenCount": 1817, "totalTokenCount": 1822,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 11}, {"modality": "IMAGE", "tokenCount": 1806}]}))
    d = dispatcher(fetch_image=lambda url, **_: pytest.fail(f"a data URI was downloaded: {url[:30]}"))
    answer = d.execute(Call(messages=(user("What is this vegetable?", ImagePart(PNG_URI)),), model=MODEL))
    assert sent()[2]["contents"] == [{"role": "user", "parts": [
        {"text": "What is this vegetable?"}, {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]}]
    assert answer.text == "That is a potato." and answer.usage.input_tokens == 1817


@responses.activate
def test_wire_image_url_is_downloaded_by_dispatch_and_sent_inline():
    fetched = []
    d = dispatcher(fetch_image=lambda url, **_: fetched.append(url) or ("image/png", PNG))
    responses.post(URL, json=gemini_ok("A square."))
    d.execute(Call(messages=(user("What is this?", ImagePart("https://example.com/a.png")),), model=MODEL))
    assert fetched == ["https://example.com/a.png"]
    assert sent()[2]["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}


@responses.activate
def test_wire_429_with_retry_info_is_retried_after_the_delay():
    slept = []
    responses.post(URL, status=429, json=QUOTA_429)
    responses.post(URL, json=gemini_ok())
    answer = Dispatcher(Settings.from_env(ENV), CATALOG, sleep=slept.append).execute(call())
    assert answer.routing.attempts == 2 and len(responses.calls) == 2
    assert slept == [37.0]                     # RetryInfo.retryDelay honoured
    assert sent(0)[2] == sent(1)[2]            # the same request again


@responses.activate
def test_wire_per_day_quota_is_not_retried():
    responses.post(URL, status=429, json=DAILY_429)
    with pytest.raises(ProviderRateLimited) as info:
        dispatcher().execute(call())
    assert len(responses.calls) == 1
    assert info.value.retryable is False and info.value.code == "provider_quota_exceeded"


@responses.activate
def test_wire_bad_key_is_not_retried_and_not_leaked():
    responses.post(URL, status=400, json=KEY_INVALID)
    with pytest.raises(ProviderAuthFailed) as info:
        dispatcher().execute(call(fallbacks=("google.gemini-2.5-flash",)))
    assert len(responses.calls) == 1 and KEY not in info.value.message
    assert info.value.message == "Google Gemini said: API key not valid. Please pass a valid API key."


@responses.activate
def test_wire_404_is_model_not_found():
    responses.post(URL, status=404, json=NOT_FOUND)
    with pytest.raises(ModelNotFound) as info:
        dispatcher().execute(call())
    assert len(responses.calls) == 1 and info.value.retryable is False


@responses.activate
def test_wire_503_is_retried_then_reported():
    body = google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
    for _ in range(3):
        responses.post(URL, status=503, json=body)
    with pytest.raises(ProviderOverloaded) as info:
        dispatcher().execute(call())
    assert len(responses.calls) == 3 and info.value.retryable is True


@responses.activate
def test_wire_503_then_success():
    responses.post(URL, status=503, json=google_error(503, "UNAVAILABLE", "overloaded"))
    responses.post(URL, json=gemini_ok())
    assert dispatcher().execute(call()).routing.attempts == 2


@responses.activate
def test_wire_garbage_body():
    responses.post(URL, body=b"<html>oops</html>", content_type="text/html")
    with pytest.raises(InvalidProviderResponse):
        dispatcher().execute(call())


@responses.activate
def test_wire_blocked_prompt():
    responses.post(URL, json=BLOCKED_PROMPT)
    with pytest.raises(ContentBlocked) as info:
        dispatcher().execute(call())
    assert info.value.status == 422 and "PROHIBITED_CONTENT" in info.value.message
    assert len(responses.calls) == 1


@responses.activate
def test_wire_no_parts_max_tokens_answer():
    responses.post(URL, json=NO_PARTS_MAX_TOKENS)
    answer = dispatcher().execute(call(options=Options(max_tokens=5)))
    assert sent()[2]["generationConfig"]["maxOutputTokens"] == 5
    assert answer.text == "" and answer.finish_reason == "length"
    assert answer.usage.output_tokens == 2 and answer.usage.reasoning_tokens == 2
    assert any("raise options.maxTokens" in w for w in answer.warnings)
