"""End to end: the real service under gunicorn, a fake provider on 127.0.0.1, talking HTTP."""
from __future__ import annotations

import json
import uuid

import pytest
import requests

from conftest import make_jwt
from service import JWT_SECRET, e2e_service, received, script

pytestmark = pytest.mark.e2e
SECRET = JWT_SECRET


@pytest.fixture(scope="module")
def service(fake, tmp_path_factory):
    with e2e_service(tmp_path_factory.mktemp("e2e"), fake, extra_env={
            "FLOWCALL_JWT_SECRET": SECRET, "FLOWCALL_ALLOW_PRIVATE_IMAGE_HOSTS": "127.0.0.1",
            "FLOWCALL_DEFAULT_TIMEOUT_MS": "20000"}) as svc:
        yield svc


def _call(service, body, **headers):
    return requests.post(f"{service['url']}/api/v3/llm/public/call", json=body,
                         headers={"X-Api-Key": service["key"], **headers}, timeout=30)


SUCCESS_KEYS = {"success", "response", "data", "model", "provider", "finish_reason", "usage", "cost",
                "latency_ms", "routing", "warnings", "request_id", "tool_calls"}


@pytest.mark.parametrize("model, path, auth_header, auth_value", [
    ("openai.gpt-4o", "/openai/v1/chat/completions", "Authorization", "Bearer sk-e2e-openai-0123456789"),
    ("xai.grok-4.3", "/xai/v1/chat/completions", "Authorization", "Bearer xai-e2e-0123456789"),
    ("groq.openai/gpt-oss-120b", "/groq/openai/v1/chat/completions", "Authorization", "Bearer gsk_e2e0123456789"),
    ("ollama.llama3.2", "/ollama/v1/chat/completions", "Authorization", None),
])
def test_openai_family_plain_prompt(service, fake, model, path, auth_header, auth_value):
    r = _call(service, {"model": model, "prompt": "What is the capital of France?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == SUCCESS_KEYS and "error" not in body
    assert body["response"] == "Echo: What is the capital of France?"
    assert body["provider"] == model.split(".")[0]
    assert body["routing"]["model_chosen"] == model
    assert body["usage"] == {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19,
                            "cached_input_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0}
    assert r.headers["X-Request-Id"] == body["request_id"]
    assert float(r.headers["X-Flowcall-Overhead-Ms"]) >= 0
    [sent] = received(fake)
    assert sent["path"] == path
    assert sent["body"]["model"] == model.split(".", 1)[1]
    assert sent["headers"].get(auth_header) == auth_value


def test_seed_structured_output_example(service, fake):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                               "email": {"type": "string"}},
              "required": ["name", "age", "email"], "additionalProperties": False}
    r = _call(service, {"model": "openai.gpt-4o",
                        "prompt": "Extract person data from: John Doe, 30 years old, john@email.com",
                        "options": {"temperature": 0.1, "maxTokens": 200}, "context": {"task": "extract_structure"},
                        "response_format": {"type": "json_schema", "json_schema": {
                            "name": "person_data", "strict": True, "schema": schema}}})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"name": "example", "age": 0, "email": "example"}
    sent = received(fake)[0]["body"]
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "person_data", "schema": schema, "strict": True}}
    assert sent["temperature"] == 0.1 and sent["max_completion_tokens"] == 200


def test_seed_stop_example_native_and_enforced(service, fake):
    prompt = "List numbers 1 to 20, one per line. Write DONE after number 5."
    r = _call(service, {"model": "openai.gpt-4.1-nano", "prompt": prompt,
                        "options": {"maxTokens": 500, "stop": ["DONE"]}})
    assert r.status_code == 200 and r.json()["response"] == "Echo: List numbers 1 to 20, one per line. Write "
    assert r.json()["finish_reason"] == "stop"
    assert received(fake)[0]["body"]["stop"] == ["DONE"]
    # A reasoning model gets no `stop`; the answer is cut by us, with a warning.
    r = _call(service, {"model": "xai.grok-4.3", "prompt": prompt, "options": {"stop": ["DONE"]}})
    body = r.json()
    assert "stop" not in received(fake)[-1]["body"]
    assert body["response"].endswith("Write ") and "DONE" not in body["response"]
    assert any("enforced on the output" in w for w in body["warnings"])


def test_seed_image_example_openai(service, fake):
    r = _call(service, {"model": "openai.gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe this image."},
        {"type": "image_url", "image_url": {"url": "https://example.com/image.jpg"}}]}],
        "options": {"maxTokens": 500}})
    assert r.status_code == 200, r.text
    assert received(fake)[0]["body"]["messages"][0]["content"][1] == {
        "type": "image_url", "image_url": {"url": "https://example.com/image.jpg"}}


@pytest.mark.parametrize("engine, provider", [
    ("gpt4o", "openai"), ("gpt-5-mini", "openai"), ("o1", "openai"), ("gpt_4v", "openai"), ("gpt45", "openai"),
    ("llama-3.3-70b-versatile", "groq"), ("mixtral-8x7b-32768", "groq"),
    ("meta-llama/llama-4-scout-17b-16e-instruct", "groq"),
])
def test_agent_ai_openai_family_aliases(service, fake, engine, provider):
    r = requests.post(f"{service['url']}/v1/action/invoke_llm", json={"instructions": "What is an AI agent?",
                                                                      "llm_engine": engine},
                      headers={"Authorization": f"Bearer {service['key']}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": 200, "response": "Echo: What is an AI agent?"}
    assert f"/{provider}/" in received(fake)[0]["path"]


def test_agent_ai_default_engine_and_mock(service, fake):
    r = requests.post(f"{service['url']}/v1/action/invoke_llm", json={"instructions": "hi"},
                      headers={"Authorization": f"Bearer {service['key']}"}, timeout=30)
    assert r.json() == {"status": 200, "response": "Echo: hi"}
    assert received(fake)[0]["body"]["model"] == "gpt-4o"


def test_mock_echo_needs_no_provider(service, fake):
    r = _call(service, {"model": "mock.echo", "query": "Summarize this contract"})
    assert r.status_code == 200 and r.json()["response"] == "Summarize this contract"
    assert r.json()["cost"] == 0.0 and received(fake) == []


def test_jwt_endpoint_and_tenant_check(service, fake):
    agent = str(uuid.uuid4())
    token = make_jwt(service["tenant"], secret=SECRET)
    headers = {"Authorization": f"Bearer {token}", "x-tenant-id": service["tenant"], "x-agent-id": agent}
    r = requests.post(f"{service['url']}/api/v3/llm/call", json={"model": "openai.gpt-4o", "prompt": "hi"},
                      headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["response"] == "Echo: hi"
    other = {**headers, "x-tenant-id": str(uuid.uuid4())}
    r = requests.post(f"{service['url']}/api/v3/llm/call", json={"model": "openai.gpt-4o", "prompt": "hi"},
                      headers=other, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "tenant_forbidden"


@pytest.mark.parametrize("provider, model, steps, status", [
    ("openai", "gpt-4o", [], "connected"),
    ("groq", "openai/gpt-oss-120b", [], "connected"),
    ("openai", "gpt-4o", [{"status": 401, "body": {"error": {
        "message": "Incorrect API key provided: sk-e2e***89", "type": "invalid_request_error",
        "code": "invalid_api_key"}}}],
     "auth_failed"),
    ("xai", "grok-4.3", [{"status": 400, "body": {"code": "Client specified an invalid argument",
                                                   "error": "Incorrect API key provided: xa***89."}}], "auth_failed"),
    ("openai", "gpt-nope", [{"status": 404, "body": {"error": {
        "message": "The model `gpt-nope` does not exist", "type": "invalid_request_error",
        "code": "model_not_found"}}}],
     "model_not_found"),
    ("openai", "gpt-4o", [{"status": 429, "body": {"error": {"message": "Rate limit reached", "type": "requests",
                                                            "code": "rate_limit_exceeded"}}}], "rate_limited"),
])
def test_test_connection(service, fake, provider, model, steps, status):
    script(fake, steps)
    token = make_jwt(service["tenant"], secret=SECRET)
    r = requests.post(f"{service['url']}/api/v3/llm/test-connection", json={"provider": provider, "model": model},
                      headers={"Authorization": f"Bearer {token}", "x-tenant-id": service["tenant"],
                               "x-agent-id": str(uuid.uuid4())}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == status and body["success"] is (status == "connected")
    assert body["provider"] == provider
    assert "e2e" not in json.dumps(body)          # no key fragment leaks
    if status == "connected":
        assert isinstance(body["latency_ms"], int)


def test_provider_faults_map_to_clean_errors(service, fake):
    script(fake, [{"status": 500, "body": "<html>oops</html>", "headers": {"Content-Type": "text/html"}}] * 3)
    r = _call(service, {"model": "openai.gpt-4o", "prompt": "hi"})
    assert r.status_code == 502 and r.json()["error"]["code"] == "provider_overloaded"
    assert r.json()["error"]["retryable"] is True and len(received(fake)) == 3
    script(fake, [{"status": 200, "body": "not json at all"}])
    r = _call(service, {"model": "openai.gpt-4o", "prompt": "hi", "options": {"timeoutMs": 5000}})
    assert r.status_code == 502 and r.json()["error"]["code"] == "invalid_provider_response"


def test_health_and_readiness(service):
    assert requests.get(f"{service['url']}/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{service['url']}/readyz", timeout=5).json() == {"status": "ready"}


def test_unknown_route_and_bad_json_are_json(service):
    r = requests.get(f"{service['url']}/nope", timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = requests.post(f"{service['url']}/api/v3/llm/public/call", data=b"{not json",
                      headers={"X-Api-Key": service["key"], "Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


# -- Anthropic, Gemini, Perplexity: the seed's examples through the real service ----------------------
NATIVE = [
    ("anthropic.claude-sonnet-4-6", "/anthropic/v1/messages"),
    ("google.gemini-3.5-flash", "/gemini/v1beta/models/gemini-3.5-flash:generateContent"),
    ("perplexity.sonar", "/pplx/v1/agent"),
]
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "email": {"type": "string"}},
          "required": ["name", "age", "email"], "additionalProperties": False}


@pytest.mark.parametrize("model, path", NATIVE)
def test_native_providers_plain(service, fake, model, path):
    r = _call(service, {"model": model, "prompt": "What is the capital of France?"})
    assert r.status_code == 200, r.text
    assert r.json()["response"] == "Echo: What is the capital of France?"
    [sent] = received(fake)
    assert sent["path"] == path


@pytest.mark.parametrize("model, path", NATIVE)
def test_native_providers_structured(service, fake, model, path):
    r = _call(service, {"model": model, "prompt": "Extract person data from: John Doe, 30 years old, john@email.com",
                        "options": {"temperature": 0.1, "maxTokens": 200},
                        "response_format": {"type": "json_schema", "json_schema": {
                            "name": "person_data", "strict": True, "schema": PERSON}}})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"name": "example", "age": 0, "email": "example"}


@pytest.mark.parametrize("model, path", NATIVE)
def test_native_providers_stop(service, fake, model, path):
    r = _call(service, {"model": model, "prompt": "List numbers 1 to 20. Write DONE after number 5.",
                        "options": {"maxTokens": 500, "stop": ["DONE"]}})
    assert r.status_code == 200, r.text
    assert r.json()["response"] == "Echo: List numbers 1 to 20. Write " and r.json()["finish_reason"] == "stop"
    body = received(fake)[0]["body"]
    native = {"anthropic": body.get("stop_sequences"),
              "google": (body.get("generationConfig") or {}).get("stopSequences"),
              "perplexity": body.get("stop")}[model.split(".")[0]]
    assert native == (None if model.startswith("perplexity") else ["DONE"])


@pytest.mark.parametrize("model, path", NATIVE)
def test_native_providers_image_by_url(service, fake, model, path):
    image_url = f"{fake.url}/img.png"
    r = _call(service, {"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe this image."}, {"type": "image_url", "image_url": {"url": image_url}}]}],
        "options": {"maxTokens": 500}})
    assert r.status_code == 200, r.text
    body = json.dumps(received(fake)[-1]["body"])
    if model.startswith("google"):                      # Gemini gets the bytes: we downloaded them
        assert "inlineData" in body and image_url not in body
    else:
        assert image_url in body


@pytest.mark.parametrize("model", ["anthropic.claude-sonnet-4-6", "google.gemini-3.5-flash"])
def test_native_providers_image_by_data_uri(service, fake, model):
    from fake_provider import PNG_BYTES
    import base64
    uri = "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()
    r = _call(service, {"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What do you see?"}, {"type": "image_url", "image_url": {"url": uri}}]}]})
    assert r.status_code == 200, r.text
    assert base64.b64encode(PNG_BYTES).decode() in json.dumps(received(fake)[-1]["body"])


def test_image_download_refuses_private_hosts_not_allowed(service, fake):
    r = _call(service, {"model": "google.gemini-3.5-flash", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "http://10.0.0.1/x.png"}}]}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "image_rejected"
    assert received(fake) == []


@pytest.mark.parametrize("engine, path", [
    ("claude_sonnet_4", "/anthropic/v1/messages"), ("claude_opus", "/anthropic/v1/messages"),
    ("claude_sonnet_35_vision", "/anthropic/v1/messages"),
    ("gemini-2.5-pro-preview-05-06", "/gemini/v1beta/models/gemini-3.1-pro-preview:generateContent"),
    ("gemini_15_flash", "/gemini/v1beta/models/gemini-3.5-flash:generateContent"),
    ("perplexity", "/pplx/v1/agent"),
])
def test_agent_ai_aliases_served_by_successors(service, fake, engine, path):
    r = requests.post(f"{service['url']}/v1/action/invoke_llm", json={"instructions": "What is an AI agent?",
                                                                      "llm_engine": engine},
                      headers={"Authorization": f"Bearer {service['key']}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": 200, "response": "Echo: What is an AI agent?"}
    assert received(fake)[0]["path"] == path


def test_auto_routes_through_the_service(service, fake):
    r = _call(service, {"model": "auto", "prompt": "Summarize this contract", "context": {"task": "summarize"}})
    assert r.status_code == 200, r.text
    routing = r.json()["routing"]
    assert routing["is_auto_routed"] is True and 0 < routing["confidence"] <= 1
    assert routing["reason"] and routing["fallbacks"] and routing["model_chosen"] not in routing["fallbacks"]
    assert r.json()["provider"] == routing["model_chosen"].split(".")[0]
