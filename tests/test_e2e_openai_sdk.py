"""End to end with the official `openai` package as the client: flowcall under gunicorn as its base
URL, the fake provider (tests/fake_provider.py) on 127.0.0.1 behind it.

gunicorn serves tests/wsgi_compat.py, which registers the OpenAI-compatible blueprint when the app
factory does not, so these tests hold before and after create_app registers it.
"""
from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from service import SDK_ENV, e2e_service, openai_client, received, script, usage_totals

pytestmark = pytest.mark.e2e
PROMPT = "What is the capital of France?"
ECHO = f"Echo: {PROMPT}"
FAMILIES = [
    # (model, path the fake must receive for a whole call, for a streamed call)
    ("openai.gpt-4o", "/openai/v1/chat/completions", "/openai/v1/chat/completions"),
    ("anthropic.claude-sonnet-4-6", "/anthropic/v1/messages", "/anthropic/v1/messages"),
    ("google.gemini-2.5-flash", "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
     "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"], "additionalProperties": False}


class City(BaseModel):
    city: str
    population: int


@pytest.fixture(scope="module")
def service(fake, tmp_path_factory):
    with e2e_service(tmp_path_factory.mktemp("e2e-openai-sdk"), fake, extra_env=SDK_ENV,
                     target="tests.wsgi_compat:app") as svc:
        yield svc


@pytest.fixture
def client(service):
    with openai_client(service) as sdk:
        yield sdk


@pytest.mark.parametrize("model, path, _", FAMILIES)
def test_chat(client, fake, model, path, _):
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}])
    assert completion.choices[0].message.content == ECHO
    assert completion.choices[0].finish_reason == "stop" and completion.model == model
    assert completion.usage.prompt_tokens == 12 and completion.usage.completion_tokens == 7
    assert completion.id.startswith("chatcmpl-")
    [sent] = received(fake)
    assert sent["path"] == path


@pytest.mark.parametrize("model, path, _", FAMILIES)
def test_json_schema_chat(client, fake, model, path, _):
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Paris, 2.1 million people."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": SCHEMA}})
    assert json.loads(completion.choices[0].message.content) == {"city": "example", "population": 0}
    [sent] = received(fake)
    assert sent["path"] == path
    assert "city" in json.dumps(sent["body"])                    # the schema went to the provider natively
    parsed = client.chat.completions.parse(model=model, messages=[{"role": "user", "content": "Paris"}],
                                           response_format=City)
    assert parsed.choices[0].message.parsed == City(city="example", population=0)


@pytest.mark.parametrize("model, _, path", FAMILIES)
def test_streamed_chat(client, fake, model, _, path):
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ECHO and len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 12
    assert {c.model for c in chunks} == {model}
    [sent] = received(fake)
    assert sent["path"] == path
    if not model.startswith("google."):
        assert sent["body"]["stream"] is True
    if model.startswith("openai."):
        assert sent["body"]["stream_options"] == {"include_usage": True}


def test_stream_helper_accumulates_the_answer(client):
    with client.chat.completions.stream(model="openai.gpt-4o", messages=[{"role": "user", "content": PROMPT}]) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content == ECHO and final.choices[0].finish_reason == "stop"


def test_streamed_stop_sequence_is_cut_across_events(client, fake):
    # grok-4.3 takes no native stop sequences: the fake streams on and flowcall cuts
    stream = client.chat.completions.create(model="xai.grok-4.3", stop=["three"], stream=True,
                                            messages=[{"role": "user", "content": "one two three four"}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: one two "
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "stop" not in received(fake)[0]["body"]


def test_retry_before_the_first_byte(client, fake):
    script(fake, [{"status": 529, "body": {"type": "error", "error": {"type": "overloaded_error",
                                                                      "message": "Overloaded"}}}])
    stream = client.chat.completions.create(model="anthropic.claude-sonnet-4-6", stream=True,
                                            messages=[{"role": "user", "content": PROMPT}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == ECHO
    assert len(received(fake)) == 2


def test_failure_after_the_first_byte_raises_in_the_sdk(client, fake):
    script(fake, [{"fail_after": 3}])
    stream = client.chat.completions.create(model="openai.gpt-4o", stream=True,
                                            messages=[{"role": "user", "content": PROMPT}])
    text = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            text.append(chunk.choices[0].delta.content or "")
    assert "".join(text) and ECHO.startswith("".join(text)) and "".join(text) != ECHO
    assert info.value.body["code"] == "provider_overloaded"
    assert len(received(fake)) == 1


def test_streamed_calls_are_in_the_ledger(client, service):
    before = usage_totals(service)
    list(client.chat.completions.create(model="google.gemini-2.5-flash", stream=True,
                                        messages=[{"role": "user", "content": PROMPT}]))
    after = usage_totals(service)
    assert after["calls"] == before["calls"] + 1
    assert (after["input_tokens"] - before["input_tokens"], after["output_tokens"] - before["output_tokens"]) == (12, 7)
    assert after["cost"] > before["cost"]


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "auto" and {"openai.gpt-4o", "anthropic.claude-sonnet-4-6", "google.gemini-2.5-flash",
                                 "mock.echo"} <= set(ids)


def test_bad_key_raises_authentication_error(service):
    sdk = openai.OpenAI(base_url=f"{service['url']}/v1", api_key="fc_wrong", max_retries=0,
                        http_client=openai.DefaultHttpxClient(trust_env=False))
    with pytest.raises(openai.AuthenticationError) as info:
        sdk.chat.completions.create(model="openai.gpt-4o", messages=[{"role": "user", "content": PROMPT}])
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    sdk.close()


def test_bad_request_raises_bad_request_error(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="openai.gpt-4o", messages=[{"role": "user", "content": PROMPT}],
                                       tools=[{"type": "function", "function": {"name": "look up"}}])
    assert info.value.status_code == 400 and info.value.param == "tools.0.name"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": PROMPT}])
    assert info.value.code == "unknown_model"
    assert received(fake) == []
