"""/v1/chat/completions without an output limit leaves a thinking model the same room as the node
endpoints (our default plus the catalog's thinking allowance, app/model_defaults.py); a caller's own
max_tokens / max_completion_tokens is sent as is. Provider mocked with `responses`; the outgoing body is
OpenAI's CreateChatCompletionRequest (../shared/specs/openai/openapi.yaml)."""
from __future__ import annotations

import json

import pytest
import responses

from app.openai_api import chat_completions as compat

OPENAI = "https://api.openai.com/v1/chat/completions"
USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def config(config):
    return {**config, "OPENAI_API_KEY": "sk-test-openai-0123456789"}


@pytest.fixture
def client(app):
    return app.test_client()


def openai_ok(model: str) -> dict:
    return {"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17,
                      "completion_tokens_details": {"reasoning_tokens": 0}}}


def sent_limit(client, api_key, **extra) -> int:
    responses.post(OPENAI, json=openai_ok(extra.get("model", "gpt-5.6-sol")))
    body = {"model": "gpt-5.6-sol", "messages": USER, **extra}
    r = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
    assert r.status_code == 200, r.get_json()
    return json.loads(responses.calls[-1].request.body)["max_completion_tokens"]


@responses.activate
def test_thinking_model_gets_its_allowance_on_top_of_the_default(client, app, api_key):
    allowance = app.extensions["flowcall"].catalog.lookup("openai.gpt-5.6-sol").thinking_allowance
    assert allowance > 0
    assert sent_limit(client, api_key) == compat.COMPAT_DEFAULT_MAX_TOKENS + allowance


@responses.activate
def test_model_that_does_not_think_by_default_gets_the_plain_default(client, api_key):
    assert sent_limit(client, api_key, model="gpt-4o") == compat.COMPAT_DEFAULT_MAX_TOKENS


@responses.activate
@pytest.mark.parametrize("extra, limit", [({"max_tokens": 300}, 300), ({"max_completion_tokens": 250}, 250),
                                          ({"max_tokens": 100, "max_completion_tokens": 200}, 200)])
def test_callers_own_limit_is_sent_as_is(client, api_key, extra, limit):
    assert sent_limit(client, api_key, **extra) == limit


def test_parse_request_marks_the_default():
    assert compat.parse_request({"model": "gpt-4o", "messages": USER}).default_max_tokens
    assert not compat.parse_request({"model": "gpt-4o", "messages": USER, "max_tokens": 5}).default_max_tokens
    assert not compat.parse_request({"model": "gpt-4o", "messages": USER,
                                     "max_completion_tokens": 5}).default_max_tokens


def test_responses_api_default_is_marked_and_a_set_limit_is_kept():
    from app.openai_api import responses as responses_api
    default = responses_api.build_call(responses_api.parse_request({"model": "gpt-5.6-sol", "input": "Hi"}))
    assert default.options.max_tokens == compat.COMPAT_DEFAULT_MAX_TOKENS and not default.options.max_tokens_set
    own = responses_api.build_call(responses_api.parse_request({"model": "gpt-5.6-sol", "input": "Hi",
                                                                "max_output_tokens": 64}))
    assert own.options.max_tokens == 64 and own.options.max_tokens_set
