"""Provider faults through the real service (one gunicorn worker, so breaker state is observable)."""
from __future__ import annotations

import time

import pytest
import requests

from service import e2e_service, received, script

pytestmark = pytest.mark.e2e
OVERLOADED = {"error": {"message": "The server is overloaded", "type": "server_error"}}
ANTHROPIC_529 = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
                 "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


@pytest.fixture(scope="module")
def service(fake, tmp_path_factory):
    with e2e_service(tmp_path_factory.mktemp("faults"), fake, workers=1, extra_env={
            "FLOWCALL_BREAKER_THRESHOLD": "3", "FLOWCALL_BREAKER_COOLDOWN_MS": "400"}) as svc:
        yield svc


def call(service, **body):
    return requests.post(f"{service['url']}/api/v3/llm/public/call",
                         json={"model": "openai.gpt-4o", "prompt": "hi", **body},
                         headers={"X-Api-Key": service["key"]}, timeout=60)


def test_429_with_retry_after_then_success(service, fake):
    script(fake, [{"status": 429, "headers": {"Retry-After": "0"},
                   "body": {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}}])
    r = call(service)
    assert r.status_code == 200 and r.json()["routing"]["attempts"] == 2
    assert len(received(fake)) == 2


def test_503_twice_then_success(service, fake):
    script(fake, [{"status": 503, "body": OVERLOADED}, {"status": 503, "body": OVERLOADED}])
    r = call(service)
    assert r.status_code == 200 and r.json()["routing"]["attempts"] == 3


def test_anthropic_529_is_retried_then_falls_back(service, fake):
    script(fake, [{"status": 529, "body": ANTHROPIC_529}] * 3)
    r = call(service, model="anthropic.claude-sonnet-4-6", fallbacks=["openai.gpt-4.1"])
    assert r.status_code == 200, r.text
    assert [q["path"] for q in received(fake)] == ["/anthropic/v1/messages"] * 3 + ["/openai/v1/chat/completions"]
    assert r.json()["routing"]["model_chosen"] == "openai.gpt-4.1" and r.json()["routing"]["attempts"] == 4
    assert any("Fell back" in w for w in r.json()["warnings"])


def test_400_is_not_retried(service, fake):
    script(fake, [{"status": 400,
                   "body": {"error": {"message": "Invalid 'messages'", "type": "invalid_request_error"}}}])
    r = call(service, fallbacks=["xai.grok-4.3"])
    assert r.status_code == 502 and r.json()["error"]["code"] == "provider_rejected_request"
    assert r.json()["error"]["retryable"] is False and len(received(fake)) == 1


def test_timeout_falls_back_inside_the_deadline(service, fake):
    script(fake, [{"hang": 30, "status": 200}])
    started = time.monotonic()
    r = call(service, model="groq.openai/gpt-oss-120b", fallbacks=["xai.grok-4.3"], options={"timeoutMs": 4000})
    elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert r.json()["provider"] == "xai" and elapsed < 4.0
    assert [q["path"] for q in received(fake)] == ["/groq/openai/v1/chat/completions", "/xai/v1/chat/completions"]


def test_deadline_is_honoured(service, fake):
    script(fake, [{"hang": 30, "status": 200}])
    started = time.monotonic()
    r = call(service, options={"timeoutMs": 1500})
    elapsed = time.monotonic() - started
    assert r.status_code == 504 and r.json()["error"]["code"] in ("provider_timeout", "deadline_exceeded")
    assert 1.4 <= elapsed < 1.5 + 1.5


def test_circuit_opens_then_closes_after_cooldown(service, fake):
    script(fake, [{"status": 503, "body": OVERLOADED}] * 3)
    r = call(service, model="ollama.llama3.2")
    assert r.status_code == 502 and len(received(fake)) == 3
    r = call(service, model="ollama.llama3.2", fallbacks=["xai.grok-4.3"])
    assert r.status_code == 200 and r.json()["provider"] == "xai"
    assert [q["path"] for q in received(fake)][3:] == ["/xai/v1/chat/completions"]   # Ollama skipped at once
    assert any("circuit_open" in w for w in r.json()["warnings"])
    deadline = time.monotonic() + 10        # wait out the 0.4 s cool-down: poll until the probe passes
    while time.monotonic() < deadline:
        r = call(service, model="ollama.llama3.2")
        if r.status_code == 200:
            break
        time.sleep(0.1)
    assert r.status_code == 200 and r.json()["provider"] == "ollama"
