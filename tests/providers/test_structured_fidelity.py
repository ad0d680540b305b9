"""One normalized call, every provider: the body each adapter builds keeps that provider's rules, and
the structured answer comes back in the caller's shape everywhere.

Provider rules, by source:
- OpenAI, xAI, Groq, Ollama bodies are validated against OpenAI's `CreateChatCompletionRequest`
  (../shared/specs/openai/openapi.yaml; `stop` "Up to 4 sequences"); a `strict: true` schema must be in
  the strict subset (platform.openai.com/docs/guides/structured-outputs#supported-schemas, checked
  by tests/test_strict_schema.assert_openai_strict).
- Groq: strict only on openai/gpt-oss-20b and -120b, best-effort elsewhere
  (console.groq.com/docs/structured-outputs.md, "Strict Mode" / "Supported Models").
- Ollama: no documented stop limit (ollama/ollama docs/api/openai-compatibility.mdx, providers.md §2.7).
- Anthropic: `output_config.format` needs `additionalProperties: false` on every object
  (../shared/specs/anthropic/build-with-claude_structured-outputs.md, "JSON Schema limitations").
- Gemini: generationConfig fields of ../shared/specs/gemini/generative_service.proto, stopSequences
  at most 5.
- Perplexity Agent API: no `stop` (a 400 unknown field), `response_format` json_schema only
  (providers.md §2.6).
Answer payloads are shaped like the recorded ones in ../shared/specs/fixtures (pydantic-ai, MIT).
"""
from __future__ import annotations

import functools
import json

import pytest
import responses
import yaml
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from app import postprocess
from app.calls import Call, ImagePart, Message, Options, ResponseFormat, TextPart
from app.catalog import Catalog
from app.config import Settings
from app.dispatch import Dispatcher
from app.errors import ContentBlocked
from app.http import HttpResponse
from app.images import to_data_uri
from app.providers import anthropic, gemini, openai_chat, perplexity
from tests.test_strict_schema import CONTACT, assert_openai_strict
from specs import SPECS

SPEC = SPECS / "openai" / "openapi.yaml" if (SPECS / "openai" / "openapi.yaml").is_file() else None
CATALOG = Catalog.load()
ENV = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "XAI_API_KEY": "xai-test-0123456789abcdef",
       "GROQ_API_KEY": "gsk_test0123456789abcdef", "OLLAMA_BASE_URL": "http://127.0.0.1:11434/v1",
       "ANTHROPIC_API_KEY": "sk-ant-test-0123456789", "GEMINI_API_KEY": "AIzaTest0123456789abcdefghij",
       "PERPLEXITY_API_KEY": "pplx-test-0123456789"}
PNG_URI = to_data_uri("image/png", b"\x89PNG\r\n\x1a\n" + bytes(16))
FIVE_STOPS = ("END", "STOP", "###", "Q:", "A:")

ADAPTERS = {"openai_chat": openai_chat, "anthropic": anthropic, "gemini": gemini, "perplexity_agent": perplexity}
OPENAI_FAMILY = ("openai.gpt-4o", "xai.grok-4.20-non-reasoning", "groq.openai/gpt-oss-120b",
                 "groq.qwen/qwen3.6-27b", "ollama.llama3.2")
PROVIDERS = (*OPENAI_FAMILY, "anthropic.claude-sonnet-4-6", "anthropic.claude-sonnet-4-20250514",
             "google.gemini-3.5-flash", "perplexity.sonar")


def user(text: str, *parts) -> Message:
    return Message("user", (TextPart(text), *parts))


def schema_format(schema=CONTACT, strict=True) -> ResponseFormat:
    return ResponseFormat(type="json_schema", name="contact", schema=schema, strict=strict)


INEXPRESSIBLE = {"type": "object", "properties": {"name": {"type": "string", "minLength": 1}}, "required": ["name"]}
CALLS = {
    "plain": dict(messages=(user("What is the capital of France?"),)),
    "system_multiturn": dict(messages=(Message("system", (TextPart("Be brief."),)), user("Hello"),
                                       Message("assistant", (TextPart("Hi!"),)), user("And Spain?"))),
    "stop": dict(messages=(user("Count to ten."),), options=Options(stop=FIVE_STOPS)),
    "image": dict(messages=(user("What is this?", ImagePart(PNG_URI)),)),
    "json_object": dict(messages=(user("Give me a JSON contact."),),
                        response_format=ResponseFormat(type="json_object")),
    "schema_strict": dict(messages=(user("Extract the contact."),), response_format=schema_format()),
    "schema_best_effort": dict(messages=(user("Extract the contact."),), response_format=schema_format(strict=False)),
    "schema_inexpressible": dict(messages=(user("Extract the name."),),
                                 response_format=schema_format(INEXPRESSIBLE)),
}


@functools.lru_cache(maxsize=1)
def openai_request_validator() -> OAS31Validator:
    if SPEC is None:
        pytest.skip("OpenAI's openapi.yaml (shared/specs/openai) is not beside the repository")
    with open(SPEC, encoding="utf-8") as fh:
        spec = yaml.load(fh, Loader=yaml.CSafeLoader)
    registry = Registry().with_resource("urn:openai", Resource.from_contents(spec, default_specification=DRAFT202012))
    return OAS31Validator({"$ref": "urn:openai#/components/schemas/CreateChatCompletionRequest"}, registry=registry)


def build(spec: str, name: str):
    model = CATALOG.resolve(spec).model
    target = Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None).target(model)
    c = Call(model=spec, **CALLS[name])
    adapter = ADAPTERS[target.provider.format]
    return adapter.build_request(c, target), c, target, adapter


# -- the outgoing body -------------------------------------------------------------------------------
def check_openai_family(spec: str, name: str, body: dict, warnings: tuple[str, ...]) -> None:
    # Ollama has no stop limit of its own: OpenAI's "up to 4" is not its rule.
    shape = {k: v for k, v in body.items() if not (k == "stop" and spec == "ollama.llama3.2")}
    errors = [e.message for e in openai_request_validator().iter_errors(shape)]
    assert errors == [], errors
    fmt = body.get("response_format")
    if fmt and fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] and spec != "ollama.llama3.2":
        assert_openai_strict(fmt["json_schema"]["schema"])
    if name == "stop" and "stop" in body:
        limit = None if spec == "ollama.llama3.2" else 4
        assert body["stop"] == list(FIVE_STOPS[:limit])
        assert any("at most 4 stop sequences" in w for w in warnings) is (limit is not None)
    if name == "schema_strict":
        strict = fmt["type"] == "json_schema" and fmt["json_schema"]["strict"]
        assert strict is (spec in ("openai.gpt-4o", "xai.grok-4.20-non-reasoning", "groq.openai/gpt-oss-120b",
                                   "ollama.llama3.2"))
        if spec == "ollama.llama3.2":        # takes any schema: sent as the caller wrote it
            assert fmt["json_schema"]["schema"] == CONTACT
    if name == "schema_inexpressible" and fmt["type"] == "json_schema" and spec != "ollama.llama3.2":
        assert fmt["json_schema"] == {"name": "contact", "schema": INEXPRESSIBLE, "strict": False}
        assert any("minLength" in w and "strict false" in w for w in warnings)


def check_anthropic(spec: str, name: str, body: dict, warnings) -> None:
    assert set(body) <= {"model", "max_tokens", "system", "messages", "temperature", "stop_sequences",
                         "output_config", "tools", "tool_choice"}
    native = body.get("output_config", {}).get("format", {}).get("schema")
    if native is not None:
        def closed(node):
            if isinstance(node, dict):
                if node.get("type") == "object":
                    assert node.get("additionalProperties") is False, node
                for value in node.values():
                    closed(value)
            elif isinstance(node, list):
                for value in node:
                    closed(value)
        closed(native)
    if name == "stop":
        assert body["stop_sequences"] == list(FIVE_STOPS)


GEMINI_CONFIG = {"temperature", "maxOutputTokens", "stopSequences", "responseMimeType", "responseJsonSchema"}


def check_gemini(spec: str, name: str, body: dict, warnings) -> None:
    assert set(body) <= {"contents", "systemInstruction", "generationConfig"}
    assert set(body["generationConfig"]) <= GEMINI_CONFIG
    assert len(body["generationConfig"].get("stopSequences", ())) <= 5


def check_perplexity(spec: str, name: str, body: dict, warnings) -> None:
    assert "stop" not in body
    fmt = body.get("response_format")
    if fmt is not None:
        assert fmt["type"] == "json_schema"
        if fmt["json_schema"]["strict"]:
            assert_openai_strict(fmt["json_schema"]["schema"])
    if name == "schema_inexpressible":
        assert fmt["json_schema"]["strict"] is False and fmt["json_schema"]["schema"] == INEXPRESSIBLE


CHECKS = {"openai_chat": check_openai_family, "anthropic": check_anthropic, "gemini": check_gemini,
          "perplexity_agent": check_perplexity}


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("spec", PROVIDERS)
def test_every_call_builds_a_body_the_provider_accepts(spec, name):
    plan, _, target, _ = build(spec, name)
    CHECKS[target.provider.format](spec, name, plan.request.json, plan.warnings)


# -- the answer ----------------------------------------------------------------------------------------
# What a model answers for CONTACT: under strict mode every property is there, null where the person
# gave none; elsewhere the optional ones are simply left out.
STRICT_ANSWER = {"name": "Ada Lovelace", "email": None, "age": 36, "plan": "pro", "tags": None,
                 "address": {"city": "London", "zip": None}, "nickname": None}
FREE_ANSWER = {"name": "Ada Lovelace", "age": 36, "plan": "pro", "address": {"city": "London"}, "nickname": None}
EXPECTED = FREE_ANSWER


def openai_body(content: str, finish="stop") -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1749586227, "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 30, "total_tokens": 70}}


def anthropic_body(blocks: list, stop_reason="end_turn") -> dict:
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
            "content": blocks, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 40, "output_tokens": 30}}


def gemini_body(text: str, finish="STOP") -> dict:
    return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": finish,
                            "index": 0}], "modelVersion": "gemini-3.5-flash",
            "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 30, "totalTokenCount": 70}}


def perplexity_body(text: str) -> dict:
    return {"id": "resp_1", "object": "response", "created_at": 1763800000, "model": "perplexity/sonar",
            "status": "completed", "output": [{"id": "msg_01", "type": "message", "role": "assistant",
                                               "status": "completed",
                                               "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": 40, "output_tokens": 30, "total_tokens": 70}}


def answer_for(spec: str, body: dict) -> dict:
    """The provider's answer: strict where the request was strict, free elsewhere."""
    fmt = body.get("response_format", {}).get("json_schema", {})
    data = STRICT_ANSWER if fmt.get("strict") and spec != "ollama.llama3.2" else FREE_ANSWER
    text = json.dumps(data)
    if spec.startswith("anthropic."):
        if "tools" in body:
            return anthropic_body([{"type": "tool_use", "id": "toolu_01", "name": body["tools"][0]["name"],
                                    "input": data}], stop_reason="tool_use")
        return anthropic_body([{"type": "text", "text": text}])
    if spec.startswith("google."):
        return gemini_body(text)
    if spec.startswith("perplexity."):
        return perplexity_body(text)
    return openai_body(text)


@pytest.mark.parametrize("name", ["schema_strict", "schema_best_effort", "json_object"])
@pytest.mark.parametrize("spec", PROVIDERS)
def test_the_structured_answer_has_the_callers_shape_everywhere(spec, name):
    plan, c, target, adapter = build(spec, name)
    raw = answer_for(spec, plan.request.json)
    completion = adapter.parse_response(HttpResponse(200, json.dumps(raw).encode()), c, target)
    assert postprocess.parse_structured(completion, c.response_format, target.provider.name) == EXPECTED


def test_strict_providers_are_sent_the_nullable_form_and_answer_with_nulls():
    """The case the issue names: one optional field is a 400 on gpt-4o unless it is made required
    and nullable; the caller still gets its own shape back."""
    plan, c, target, adapter = build("openai.gpt-4o", "schema_strict")
    sent = plan.request.json["response_format"]["json_schema"]
    assert sent["strict"] is True
    assert sent["schema"]["required"] == list(CONTACT["properties"])
    assert sent["schema"]["properties"]["email"] == {"type": ["string", "null"], "format": "email"}
    completion = adapter.parse_response(HttpResponse(200, json.dumps(openai_body(json.dumps(STRICT_ANSWER))).encode()),
                                        c, target)
    assert completion.text == json.dumps(STRICT_ANSWER)        # the model's own text is not rewritten
    assert postprocess.parse_structured(completion, c.response_format, "openai") == EXPECTED


def test_groq_outside_gpt_oss_is_sent_best_effort_with_a_warning():
    model = CATALOG.resolve("groq.some-new-model").model           # not in the catalog: provider defaults
    target = Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None).target(model)
    c = Call(model="groq.some-new-model", **CALLS["schema_strict"])
    plan = openai_chat.build_request(c, target)
    assert plan.request.json["response_format"]["json_schema"] == {"name": "contact", "schema": CONTACT,
                                                                   "strict": False}
    assert any("no strict schema mode" in w for w in plan.warnings)


def test_a_best_effort_answer_is_still_validated_against_the_callers_schema():
    plan, c, target, adapter = build("groq.qwen/qwen3.6-27b", "schema_strict")
    bad = dict(FREE_ANSWER, plan="enterprise")
    completion = adapter.parse_response(HttpResponse(200, json.dumps(openai_body(json.dumps(bad))).encode()),
                                        c, target)
    with pytest.raises(Exception) as exc:
        postprocess.parse_structured(completion, c.response_format, "groq")
    assert exc.value.code == "invalid_structured_output" and "plan" in exc.value.message


def test_anthropic_keeps_an_open_object_open_by_taking_the_forced_tool():
    """output_config needs `additionalProperties: false` on every object, so "any object" closed would
    only allow {}: such a schema goes the forced-tool way, which keeps it as written."""
    schema = {"type": "object", "properties": {"meta": {"type": "object"}}, "required": ["meta"]}
    model = CATALOG.resolve("anthropic.claude-sonnet-4-6").model
    target = Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None).target(model)
    c = Call(model="anthropic.claude-sonnet-4-6", messages=(user("Describe it."),),
             response_format=schema_format(schema))
    plan = anthropic.build_request(c, target)
    assert "output_config" not in plan.request.json
    assert plan.request.json["tools"][0]["input_schema"] == schema
    assert any("no listed properties" in w for w in plan.warnings)


@pytest.mark.parametrize("properties, required, reason", [
    ({f"p{i}": {"type": "string"} for i in range(25)}, [], "more than 24 optional properties"),
    ({f"p{i}": {"type": ["string", "null"]} for i in range(17)}, [f"p{i}" for i in range(17)],
     "more than 16 properties with union types"),
])
def test_anthropic_schemas_past_the_complexity_limits_take_the_forced_tool(properties, required, reason):
    """build-with-claude_structured-outputs.md "Schema complexity limits": 24 optional parameters and
    16 parameters with union types across the request, else a 400 "Schema is too complex"."""
    schema = {"type": "object", "properties": properties, "required": required}
    model = CATALOG.resolve("anthropic.claude-sonnet-4-6").model
    target = Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None).target(model)
    c = Call(model="anthropic.claude-sonnet-4-6", messages=(user("Fill it."),), response_format=schema_format(schema))
    plan = anthropic.build_request(c, target)
    assert "output_config" not in plan.request.json and plan.request.json["tools"][0]["input_schema"] == schema
    assert any(reason in w for w in plan.warnings)
    limit = {**schema, "properties": dict(list(properties.items())[:-1]), "required": required[:-1]}
    c = Call(model="anthropic.claude-sonnet-4-6", messages=(user("Fill it."),), response_format=schema_format(limit))
    assert "output_config" in anthropic.build_request(c, target).request.json     # at the limit: native


@responses.activate
def test_through_the_dispatcher_on_the_wire_and_back():
    """gpt-4o with an optional field: the wire carries the strict form, the answer the caller's shape,
    and a content-filtered empty answer is not retried (content_blocked is final)."""
    url = "https://api.openai.com/v1/chat/completions"
    d = Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None)
    responses.post(url, json=openai_body(json.dumps(STRICT_ANSWER)))
    answer = d.execute(Call(model="openai.gpt-4o", **CALLS["schema_strict"]))
    sent = json.loads(responses.calls[0].request.body)["response_format"]["json_schema"]
    assert sent["strict"] is True and sent["schema"]["additionalProperties"] is False
    assert answer.data == EXPECTED and not [w for w in answer.warnings if "strict" in w]
    responses.post(url, json=openai_body(None, finish="content_filter"))
    with pytest.raises(ContentBlocked):
        d.execute(Call(model="openai.gpt-4o", **CALLS["plain"]))
    assert len(responses.calls) == 2
