"""Reasoning effort per adapter: the outgoing body for each effort (asserted whole where it matters),
the warning where a model or provider has no equivalent, and Anthropic's signed thinking block
surviving a tool round trip (answer -> tool call id -> next turn's body, thinking block first).
Answer shapes from ../shared/specs/fixtures/test_anthropic/test_anthropic_tool_with_thinking.yaml
(pydantic-ai, MIT)."""
from __future__ import annotations

import json

import pytest
import responses

from app import tool_ids
from app.calls import Call, Message, Options, ResponseFormat, TextPart, Tool, ToolCall, ToolCallPart, ToolResultPart
from app.catalog import Catalog
from app.config import Settings
from app.dispatch import Dispatcher
from app.http import HttpResponse
from app.providers import anthropic, anthropic_thinking, gemini, mock, openai_chat, perplexity

CATALOG = Catalog.load()
ENV = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
       "GEMINI_API_KEY": "gm-test-0123456789", "XAI_API_KEY": "xai-test-0123456789",
       "GROQ_API_KEY": "gsk-test-0123456789", "PERPLEXITY_API_KEY": "pplx-test-0123456789"}
EFFORTS = ("minimal", "low", "medium", "high")
PROMPT = (Message("user", (TextPart("What is the largest city in the user country?"),)),)
COUNTRY_TOOL = Tool("get_user_country", "", {"type": "object", "properties": {}, "additionalProperties": False})


def target(spec: str):
    return Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None).target(CATALOG.resolve(spec).model)


def plan(module, spec: str, effort: str | None, **kw):
    options = kw.pop("options", None) or Options(max_tokens=1000, reasoning_effort=effort)
    call = Call(kw.pop("messages", PROMPT), spec, options=options, **kw)
    return module.build_request(call, target(spec))


# -- Chat Completions: OpenAI, xAI, Groq ---------------------------------------------------------------
@pytest.mark.parametrize("effort", EFFORTS)
def test_openai_reasoning_model_gets_reasoning_effort(effort):
    p = plan(openai_chat, "openai.gpt-5.6-sol", effort)
    assert p.request.json == {"model": "gpt-5.6-sol", "messages": [{"role": "user", "content": PROMPT[0].text}],
                              "max_completion_tokens": 1000, "reasoning_effort": effort}
    assert p.warnings == ()


@pytest.mark.parametrize("spec, effort, sent, warned", [
    ("xai.grok-4.3", "minimal", "low", True), ("xai.grok-4.3", "low", "low", False),
    ("xai.grok-4.3", "medium", "medium", False), ("xai.grok-4.3", "high", "high", False),
    ("groq.openai/gpt-oss-120b", "minimal", "low", True), ("groq.openai/gpt-oss-120b", "high", "high", False),
])
def test_xai_and_groq_have_no_minimal(spec, effort, sent, warned):
    p = plan(openai_chat, spec, effort)
    assert p.request.json["reasoning_effort"] == sent
    assert any("no 'minimal' reasoning effort" in w for w in p.warnings) == warned


@pytest.mark.parametrize("spec", ["openai.gpt-4.1-mini", "xai.grok-4.20-non-reasoning", "groq.qwen/qwen3.6-27b"])
def test_chat_models_that_do_not_reason_get_a_warning_not_the_field(spec):
    p = plan(openai_chat, spec, "high")
    assert "reasoning_effort" not in p.request.json
    assert p.warnings == (f"{spec} has no reasoning-effort setting: reasoning effort 'high' was not sent.",)


def test_no_effort_sends_nothing():
    p = plan(openai_chat, "openai.gpt-5.6-sol", None)
    assert "reasoning_effort" not in p.request.json and p.warnings == ()


# -- Anthropic -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("effort, budget", [("minimal", 1024), ("low", 2048), ("medium", 8192), ("high", 16384)])
def test_anthropic_manual_thinking_budget_is_added_to_max_tokens(effort, budget):
    p = plan(anthropic, "anthropic.claude-haiku-4-5-20251001", effort)
    assert p.request.json == {
        "model": "claude-haiku-4-5-20251001", "max_tokens": 1000 + budget,
        "messages": [{"role": "user", "content": PROMPT[0].text}],
        "thinking": {"type": "enabled", "budget_tokens": budget, "display": "omitted"}}     # no temperature
    assert p.warnings == ()


def test_anthropic_budget_stays_below_the_models_output_limit():
    p = plan(anthropic, "anthropic.claude-haiku-4-5-20251001", "high", options=Options(max_tokens=63_000,
                                                                                    reasoning_effort="high"))
    body = p.request.json
    assert body["max_tokens"] == 64_000 and body["thinking"]["budget_tokens"] == 16384 < body["max_tokens"]


def test_anthropic_caller_temperature_is_dropped_with_thinking():
    p = plan(anthropic, "anthropic.claude-haiku-4-5-20251001", "low",
             options=Options(temperature=0.2, reasoning_effort="low"))
    assert "temperature" not in p.request.json
    assert p.warnings == ("Anthropic takes no temperature with thinking: options.temperature was not sent.",)


@pytest.mark.parametrize("effort, sent", [("minimal", "low"), ("low", "low"), ("medium", "medium"), ("high", "high")])
def test_anthropic_adaptive_models_get_adaptive_thinking_and_effort(effort, sent):
    p = plan(anthropic, "anthropic.claude-sonnet-5", effort)
    body = p.request.json
    assert body["thinking"] == {"type": "adaptive", "display": "omitted"}
    assert body["output_config"] == {"effort": sent}
    assert body["max_tokens"] == plan(anthropic, "anthropic.claude-sonnet-5", None).request.json["max_tokens"]


def test_anthropic_adaptive_model_that_does_not_think_by_default_gets_headroom():
    body = plan(anthropic, "anthropic.claude-sonnet-4-6", "high").request.json
    assert body["thinking"] == {"type": "adaptive", "display": "omitted"} and body["max_tokens"] == 1000 + 16384
    assert "temperature" not in body


def test_anthropic_effort_joins_native_structured_output():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    p = plan(anthropic, "anthropic.claude-sonnet-4-6", "medium",
             response_format=ResponseFormat("json_schema", schema=schema, strict=True))
    assert p.request.json["output_config"] == {"format": {"type": "json_schema", "schema": schema},
                                               "effort": "medium"}


def test_anthropic_forced_tool_choice_keeps_manual_thinking_off():
    from app.calls import ToolChoice
    p = plan(anthropic, "anthropic.claude-haiku-4-5-20251001", "high", tools=(COUNTRY_TOOL,),
             tool_choice=ToolChoice("required"))
    assert "thinking" not in p.request.json and p.request.json["max_tokens"] == 1000
    assert any("forced tool choice" in w for w in p.warnings)


def test_anthropic_model_without_thinking_gets_a_warning():
    p = plan(anthropic, "anthropic.claude-3-sonnet-20240229", "high")      # not in the catalog: no reasoning
    assert "thinking" not in p.request.json
    assert p.warnings == ("anthropic.claude-3-sonnet-20240229 has no reasoning-effort setting: reasoning effort "
                          "'high' was not sent.",)


SIGNATURE = "EqEECkYICxgCKkAo3UA4WwDbB8ihhpykVCsPx6iMzwNTNP8dePIgYjNpu2EWrt5JbApWWONEZaf5w46939Vu1SDU1"
THINKING_ANSWER = {
    "id": "msg_01WvueFjZVbHcj4H4zUzeGv2", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
    "content": [
        {"type": "thinking", "thinking": "", "signature": SIGNATURE},
        {"type": "text", "text": "I'll help you find the largest city in your country."},
        {"type": "tool_use", "id": "toolu_01YGzqpRE16Vricda3Aqcejo", "name": "get_user_country", "input": {}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "inference_geo": "not_available",
              "input_tokens": 398, "output_tokens": 155, "service_tier": "standard"}}


def test_anthropic_thinking_signature_survives_a_tool_round_trip():
    spec = "anthropic.claude-haiku-4-5-20251001"
    first = Call(PROMPT, spec, options=Options(reasoning_effort="high"), tools=(COUNTRY_TOOL,))
    done = anthropic.parse_response(HttpResponse(200, json.dumps(THINKING_ANSWER).encode(), {}), first, target(spec))
    assert done.text == "I'll help you find the largest city in your country."      # thinking is not the answer
    [tool_call] = done.tool_calls
    # the client sees one opaque id and sends it back; the state comes back out of it
    handed_out = tool_ids.public_id(tool_call)
    provider_id, state = tool_ids.decode(handed_out, "messages.1.tool_calls.0.id")
    back = ToolCall(provider_id, "get_user_country", {}, state)
    second = Call(PROMPT + (Message("assistant", (TextPart(done.text), ToolCallPart(back))),
                            Message("tool", (ToolResultPart(provider_id, "Mexico", "get_user_country"),))),
                  spec, options=Options(reasoning_effort="high"), tools=(COUNTRY_TOOL,))
    body = anthropic.build_request(second, target(spec)).request.json
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "", "signature": SIGNATURE},
        {"type": "text", "text": "I'll help you find the largest city in your country."},
        {"type": "tool_use", "id": "toolu_01YGzqpRE16Vricda3Aqcejo", "name": "get_user_country", "input": {}}]}
    assert body["messages"][2]["content"][0]["tool_use_id"] == "toolu_01YGzqpRE16Vricda3Aqcejo"
    assert body["thinking"]["type"] == "enabled"


def test_anthropic_redacted_thinking_is_kept_too():
    blocks = [{"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT"},
              {"type": "thinking", "thinking": "x", "signature": "s", "extra": "dropped"}, {"type": "text"}, 5]
    assert anthropic_thinking.thinking_blocks({"thinking": blocks}) == [
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT"},
        {"type": "thinking", "thinking": "x", "signature": "s"}]


def test_anthropic_tool_turn_without_its_thinking_block_turns_thinking_off():
    """Without the signed block Anthropic rejects a thinking request; the call goes without thinking."""
    spec = "anthropic.claude-haiku-4-5-20251001"
    lost = ToolCall("toolu_01", "get_user_country", {})
    call = Call(PROMPT + (Message("assistant", (ToolCallPart(lost),)),
                          Message("tool", (ToolResultPart("toolu_01", "Mexico", "get_user_country"),))),
                spec, options=Options(reasoning_effort="high"), tools=(COUNTRY_TOOL,))
    p = anthropic.build_request(call, target(spec))
    assert "thinking" not in p.request.json
    assert any("carries no thinking block" in w for w in p.warnings)


# -- Gemini ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("effort", EFFORTS)
def test_gemini_3_gets_a_thinking_level(effort):
    p = plan(gemini, "google.gemini-3.5-flash", effort)
    assert p.request.json["generationConfig"]["thinkingConfig"] == {"thinkingLevel": effort.upper()}   # the enum's names (providers.md)
    assert p.warnings == ()


def test_gemini_3_pro_has_no_minimal_level():
    p = plan(gemini, "google.gemini-3.1-pro-preview", "minimal")
    assert p.request.json["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "LOW"}
    assert p.warnings == ("google.gemini-3.1-pro-preview has no 'minimal' thinking level: 'low' was sent.",)


@pytest.mark.parametrize("spec, effort, budget", [
    ("google.gemini-2.5-flash", "minimal", 0), ("google.gemini-2.5-flash", "low", 1024),
    ("google.gemini-2.5-flash", "medium", 8192), ("google.gemini-2.5-flash", "high", 24576),
    ("google.gemini-2.5-pro", "minimal", 128), ("google.gemini-2.5-pro", "high", 24576),
])
def test_gemini_25_gets_a_thinking_budget(spec, effort, budget):
    p = plan(gemini, spec, effort)
    assert p.request.json["generationConfig"]["thinkingConfig"] == {"thinkingBudget": budget}


def test_gemini_without_effort_sends_no_thinking_config():
    assert "thinkingConfig" not in plan(gemini, "google.gemini-3.5-flash", None).request.json["generationConfig"]


# -- providers without an equivalent ---------------------------------------------------------------------
def test_perplexity_and_mock_warn():
    p = plan(perplexity, "perplexity.sonar", "high")
    assert "reasoning" not in json.dumps(p.request.json)
    assert "perplexity.sonar has no reasoning-effort setting: reasoning effort 'high' was not sent." in p.warnings
    done = mock.complete(Call(PROMPT, "mock.echo", options=Options(reasoning_effort="low")), None)
    assert "mock.echo has no reasoning-effort setting: reasoning effort 'low' was not sent." in done.warnings


@responses.activate
def test_dispatch_sends_the_mapped_effort_to_the_provider():
    responses.post("https://api.openai.com/v1/chat/completions", json={
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-5.6-sol",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Mexico City."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 30, "total_tokens": 40,
                  "completion_tokens_details": {"reasoning_tokens": 25}}})
    dispatcher = Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None)
    answer = dispatcher.execute(Call(PROMPT, "openai.gpt-5.6-sol", options=Options(reasoning_effort="minimal")))
    assert json.loads(responses.calls[0].request.body)["reasoning_effort"] == "minimal"
    assert answer.text == "Mexico City." and answer.usage.reasoning_tokens == 25


def _sse(*events) -> str:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)


def test_anthropic_streamed_tool_call_carries_the_streamed_thinking_block():
    """Event shapes from ../shared/specs/fixtures/test_anthropic/test_anthropic_model_thinking_part_stream.yaml
    (thinking_delta, then signature_delta) and ..._redacted_stream.yaml (pydantic-ai, MIT)."""
    from app.providers.anthropic_stream import AnthropicStream
    from app.providers.streams import SseDecoder
    spec = "anthropic.claude-haiku-4-5-20251001"
    body = _sse(
        ("message_start", {"type": "message_start", "message": {"model": "claude-haiku-4-5-20251001",
                                                                 "usage": {"input_tokens": 30, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "Need the country"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": " first."}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "signature_delta", "signature": SIGNATURE}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "redacted_thinking", "data": "EmwKAhgB"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "get_user_country", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                 "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}))
    parser = AnthropicStream(Call(PROMPT, spec, tools=(COUNTRY_TOOL,)), target(spec))
    decoder, deltas = SseDecoder(), []
    for line in body.split("\n"):
        event = decoder.feed(line)
        if event is not None:
            deltas.append(parser.feed(event))
    assert "".join(d.text for d in deltas) == ""                     # thinking is not the answer
    [first] = [piece for d in deltas for piece in d.tool_calls if piece.id]
    assert first.state == {"thinking": [
        {"type": "thinking", "thinking": "Need the country first.", "signature": SIGNATURE},
        {"type": "redacted_thinking", "data": "EmwKAhgB"}]}


def test_budgets_reserve_the_thinking_budget_anthropic_adds():
    from app.tenancy.budgets import estimate_cost
    haiku = CATALOG.resolve("anthropic.claude-haiku-4-5-20251001").model
    plain = Call(PROMPT, haiku.id, options=Options(max_tokens=1000))
    thinking = Call(PROMPT, haiku.id, options=Options(max_tokens=1000, reasoning_effort="high"))
    assert estimate_cost(thinking, haiku) == pytest.approx(estimate_cost(plain, haiku) + 16384 * haiku.price_output / 1e6)
    gpt = CATALOG.resolve("openai.gpt-5.6-sol").model           # effort does not change OpenAI's limit
    assert estimate_cost(Call(PROMPT, gpt.id, options=Options(reasoning_effort="high")), gpt) == \
        estimate_cost(Call(PROMPT, gpt.id), gpt)
