"""Reasoning effort from each surface reaches the adapter (in process: the Flask test client, the
provider mocked with `responses`): /v1/responses `reasoning.effort`, /v1/chat/completions
`reasoning_effort`, the node endpoint's `options.reasoningEffort`; a bad value is a field-level 400
before any provider is called; an Anthropic tool loop through /v1/responses sends the signed
thinking block back first."""
from __future__ import annotations

import json

import pytest
import responses


OPENAI = "https://api.openai.com/v1/chat/completions"
ANTHROPIC = "https://api.anthropic.com/v1/messages"
KEYS = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "ANTHROPIC_API_KEY": "sk-ant-test-0123456789"}
PROMPT = "What is the largest city in the user country?"
SIGNATURE = "EqEECkYICxgCKkAo3UA4WwDbB8ihhpykVCsPx6iMzwNTNP8dePIgYjNpu2EWrt5JbApWWONEZaf5w46939Vu1SDU1"
HAIKU = "anthropic.claude-haiku-4-5-20251001"


@pytest.fixture
def config(config):
    return {**config, **KEYS}


@pytest.fixture
def client(app):
    return app.test_client()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def openai_ok(text="Mexico City."):
    return {"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "gpt-5.6-sol",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}}


def anthropic_answer(content, stop_reason):
    # shape from ../shared/specs/fixtures/test_anthropic/test_anthropic_tool_with_thinking.yaml (pydantic-ai, MIT)
    return {"id": "msg_01WvueFjZVbHcj4H4zUzeGv2", "type": "message", "role": "assistant",
            "model": "claude-haiku-4-5-20251001", "content": content, "stop_reason": stop_reason,
            "stop_sequence": None, "usage": {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                                             "input_tokens": 398, "output_tokens": 155}}


def sent(index: int = -1) -> dict:
    return json.loads(responses.calls[index].request.body)


@responses.activate
def test_responses_reasoning_effort_reaches_openai(client, api_key):
    responses.post(OPENAI, json=openai_ok())
    r = client.post("/v1/responses", headers=bearer(api_key), json={
        "model": "openai.gpt-5.6-sol", "input": PROMPT, "reasoning": {"effort": "low", "summary": None}})
    assert r.status_code == 200, r.get_json()
    assert sent()["reasoning_effort"] == "low"
    assert r.get_json()["reasoning"] == {"effort": "low", "summary": None}


@responses.activate
def test_chat_completions_reasoning_effort_reaches_openai(client, api_key):
    responses.post(OPENAI, json=openai_ok())
    r = client.post("/v1/chat/completions", headers=bearer(api_key), json={
        "model": "openai.gpt-5.6-sol", "messages": [{"role": "user", "content": PROMPT}], "reasoning_effort": "high"})
    assert r.status_code == 200, r.get_json()
    assert sent()["reasoning_effort"] == "high"
    assert r.get_json()["flowcall"].get("warnings", []) == []


@responses.activate
def test_chat_completions_effort_on_a_model_without_it_warns(client, api_key):
    responses.post(OPENAI, json=openai_ok())
    r = client.post("/v1/chat/completions", headers=bearer(api_key), json={
        "model": "openai.gpt-4.1-mini", "messages": [{"role": "user", "content": PROMPT}], "reasoning_effort": "high"})
    assert r.status_code == 200, r.get_json()
    assert "reasoning_effort" not in sent()
    assert ("openai.gpt-4.1-mini has no reasoning-effort setting: reasoning effort 'high' was not sent."
            in r.get_json()["flowcall"]["warnings"])


@responses.activate
def test_node_endpoint_options_reasoning_effort_reaches_anthropic(client, jwt_headers):
    responses.post(ANTHROPIC, json=anthropic_answer([
        {"type": "thinking", "thinking": "", "signature": SIGNATURE},
        {"type": "text", "text": "Mexico City."}], "end_turn"))
    r = client.post("/api/v3/llm/call", headers=jwt_headers, json={
        "model": HAIKU, "prompt": PROMPT, "options": {"reasoningEffort": "medium", "maxTokens": 500}})
    assert r.status_code == 200, r.get_json()
    assert sent()["thinking"] == {"type": "enabled", "budget_tokens": 8192, "display": "omitted"}
    assert sent()["max_tokens"] == 500 + 8192
    assert r.get_json()["response"] == "Mexico City."         # the thinking block is not the answer


@responses.activate
@pytest.mark.parametrize("path, body, field", [
    ("/v1/responses", {"model": "openai.gpt-5.6-sol", "input": PROMPT, "reasoning": {"effort": "max"}},
     "reasoning.effort"),
    ("/v1/responses", {"model": "openai.gpt-5.6-sol", "input": PROMPT, "reasoning": "high"}, "reasoning"),
    ("/v1/responses", {"model": "openai.gpt-5.6-sol", "input": PROMPT, "reasoning": {"effort": "low", "x": 1}},
     "reasoning.x"),
    ("/v1/chat/completions", {"model": "openai.gpt-5.6-sol", "messages": [{"role": "user", "content": PROMPT}],
                              "reasoning_effort": "extreme"}, "reasoning_effort"),
])
def test_bad_effort_is_a_400_naming_the_field_before_any_provider(client, api_key, path, body, field):
    r = client.post(path, headers=bearer(api_key), json=body)
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["error"]["param"] == field
    assert len(responses.calls) == 0


def test_node_endpoint_bad_effort_is_a_400(client, jwt_headers):
    r = client.post("/api/v3/llm/call", headers=jwt_headers, json={
        "model": "mock.echo", "prompt": "hi", "options": {"reasoningEffort": "max"}})
    assert r.status_code == 400
    assert "options.reasoningEffort" in r.get_json()["error"]["fields"]


@responses.activate
def test_anthropic_thinking_block_survives_a_responses_tool_loop(client, api_key):
    responses.post(ANTHROPIC, json=anthropic_answer([
        {"type": "thinking", "thinking": "", "signature": SIGNATURE},
        {"type": "tool_use", "id": "toolu_01YGzqpRE16Vricda3Aqcejo", "name": "get_user_country", "input": {}}],
        "tool_use"))
    responses.post(ANTHROPIC, json=anthropic_answer([{"type": "text", "text": "Mexico City."}], "end_turn"))
    tools = [{"type": "function", "name": "get_user_country", "parameters": {"type": "object", "properties": {}}}]
    first = client.post("/v1/responses", headers=bearer(api_key), json={
        "model": HAIKU, "input": PROMPT, "tools": tools, "reasoning": {"effort": "low"}}).get_json()
    [call] = [item for item in first["output"] if item["type"] == "function_call"]
    second = client.post("/v1/responses", headers=bearer(api_key), json={
        "model": HAIKU, "tools": tools, "reasoning": {"effort": "low"}, "input": [
            {"role": "user", "content": PROMPT},
            {"type": "function_call", "call_id": call["call_id"], "name": "get_user_country", "arguments": "{}"},
            {"type": "function_call_output", "call_id": call["call_id"], "output": "Mexico"}]})
    assert second.status_code == 200, second.get_json()
    body = sent(1)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048, "display": "omitted"}
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "", "signature": SIGNATURE},
        {"type": "tool_use", "id": "toolu_01YGzqpRE16Vricda3Aqcejo", "name": "get_user_country", "input": {}}]}
    [message] = [item for item in second.get_json()["output"] if item["type"] == "message"]
    assert message["content"][0]["text"] == "Mexico City."
