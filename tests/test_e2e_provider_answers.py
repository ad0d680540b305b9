"""Provider answers that used to break us, through the real service (gunicorn, one worker):
a 200k-deep JSON answer, absurd usage numbers, errors inside a 200, and a ledger write that fails.
Each ends in one defined answer and one ledger row (or, for the failed write, a warning and a metric)."""
from __future__ import annotations

import sqlite3
import uuid

import pytest
import requests

from service import e2e_service

pytestmark = pytest.mark.e2e
CALL = "/api/v3/llm/public/call"
DEEP = "[" * 200_000 + "]" * 200_000


@pytest.fixture(scope="module")
def service(fake, tmp_path_factory):
    with e2e_service(tmp_path_factory.mktemp("provider-answers"), fake, workers=1,
                     extra_env={"FLOWCALL_BREAKER_THRESHOLD": "1000"}) as svc:
        yield svc


def call(service, **body):
    request_id = f"pa-{uuid.uuid4().hex}"
    resp = requests.post(f"{service['url']}{CALL}", json={"model": "openai.gpt-4o", "prompt": "hi", **body},
                         headers={"X-Api-Key": service["key"], "X-Request-Id": request_id}, timeout=60)
    return resp, request_id


def db(service):
    return sqlite3.connect(service["env"]["FLOWCALL_DATABASE_URL"].removeprefix("sqlite:///"))


def ledger_rows(service, request_id):
    with db(service) as conn:
        return conn.execute("SELECT status, error_code, input_tokens, output_tokens, cost FROM ledger "
                            "WHERE request_id = ?", (request_id,)).fetchall()


def openai_ok(usage: dict) -> dict:
    return {"id": "chatcmpl-x", "object": "chat.completion", "created": 1749586227, "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris.", "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage}


def test_an_answer_nested_200k_levels_deep_is_a_502(service, fake):
    fake.script = [{"status": 200, "body": DEEP}]
    resp, request_id = call(service)
    assert resp.status_code == 502, resp.text[:300]
    assert resp.json()["error"]["code"] == "invalid_provider_response"
    assert [row[:2] for row in ledger_rows(service, request_id)] == [(502, "invalid_provider_response")]


@pytest.mark.parametrize("prompt_tokens", [10 ** 30, 1e300, -5, 2.5], ids=["10**30", "1e300", "negative", "fraction"])
def test_absurd_usage_fails_the_call_and_is_recorded(service, fake, prompt_tokens):
    fake.script = [{"status": 200, "body": openai_ok({"prompt_tokens": prompt_tokens, "completion_tokens": 3,
                                                      "total_tokens": 3})}]
    resp, request_id = call(service, fallbacks=["mock.echo"])
    assert resp.status_code == 502, resp.text[:300]
    assert resp.json()["error"]["code"] == "invalid_provider_response"
    assert resp.json()["error"]["provider"] == "openai" and resp.json()["error"]["retryable"] is False
    assert len(fake.requests) == 1                                       # not retried, no fallback paid
    assert ledger_rows(service, request_id) == [(502, "invalid_provider_response", 0, 0, None)]


def test_an_openai_error_inside_a_200_is_retried_like_a_500(service, fake):
    fake.script = [{"status": 200, "body": {"error": {"message": "The server had an error while processing your "
                                                                 "request. Sorry about that!",
                                                      "type": "server_error", "param": None, "code": None}}}]
    resp, _ = call(service)
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["routing"]["attempts"] == 2 and len(fake.requests) == 2


def test_an_anthropic_rate_limit_inside_a_200_is_retried_then_falls_back(service, fake):
    limited = {"type": "error", "error": {
        "type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"},
               "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}
    fake.script = [{"status": 200, "body": limited}] * 3
    resp, _ = call(service, model="anthropic.claude-sonnet-4-6", fallbacks=["openai.gpt-4.1"])
    assert resp.status_code == 200, resp.text[:300]
    assert [r["path"] for r in fake.requests] == ["/anthropic/v1/messages"] * 3 + ["/openai/v1/chat/completions"]
    assert resp.json()["routing"]["model_chosen"] == "openai.gpt-4.1"


def test_a_failed_ledger_write_is_said_counted_and_the_answer_stands(service, fake):
    request_id = f"pa-{uuid.uuid4().hex}"
    with db(service) as conn:
        conn.execute(f"CREATE TRIGGER fail_{request_id.replace('-', '_')} BEFORE INSERT ON ledger "
                     f"WHEN NEW.request_id = '{request_id}' BEGIN SELECT RAISE(ABORT, 'disk I/O error (test)'); END")
    resp = requests.post(f"{service['url']}{CALL}", json={"model": "mock.echo", "prompt": "hi"},
                         headers={"X-Api-Key": service["key"], "X-Request-Id": request_id}, timeout=60)
    assert resp.status_code == 200, resp.text[:300]
    assert any("could not be written to the usage ledger" in w for w in resp.json()["warnings"])
    assert ledger_rows(service, request_id) == []
    metrics = requests.get(f"{service['url']}/metrics", timeout=10).text
    assert 'flowcall_ledger_write_failures_total{endpoint="public_call"} 1.0' in metrics


# -- streams: an error event before the first byte is retried like its HTTP twin ---------------------------
def test_an_anthropic_rate_limit_event_before_the_first_byte_is_retried(service, fake):
    limited = ["error", {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request "
                                                    "tokens has exceeded your per-minute rate limit"}}]
    fake.script = [{"fail_after": 0, "error": limited}]
    resp = requests.post(f"{service['url']}/v1/chat/completions",
                         json={"model": "anthropic.claude-sonnet-4-6", "stream": True,
                               "messages": [{"role": "user", "content": "hi"}]},
                         headers={"Authorization": f"Bearer {service['key']}"}, timeout=60)
    assert resp.status_code == 200, resp.text[:300]
    assert "data: [DONE]" in resp.text and '"error"' not in resp.text
    assert [r["path"] for r in fake.requests] == ["/anthropic/v1/messages"] * 2
