"""A misbehaving provider (tests/fake_provider.py's fault modes) through the real service under gunicorn.

Each fault yields one defined answer (status and error code asserted exactly), retries and
fallbacks happen as the README says (counted at the fake), the one worker keeps serving while a
call hangs on a slow answer, each call leaves exactly one ledger row with its status, and no
provider or flowcall key reaches a log line or /metrics. The worker class is whatever
gunicorn.conf.py chooses (what `gunicorn wsgi:app` runs), with one worker.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid

import pytest
import requests
from fake_provider import closed_port_url
from service import e2e_service

pytestmark = pytest.mark.e2e
PROVIDER_KEY = f"sk-fault-{uuid.uuid4().hex}"
GROQ_KEY = f"gsk_fault{uuid.uuid4().hex}"
XAI_KEY = f"xai-fault-{uuid.uuid4().hex}"
SECRET_PROMPT = "private-prompt-text-4f1e"       # content that must never reach a log line
CALL = "/api/v3/llm/public/call"


@pytest.fixture(scope="module")
def service(fake, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adversarial-faults")
    with e2e_service(tmp, workers=1, log_dir=tmp, extra_env={
        "FLOWCALL_BREAKER_THRESHOLD": "1000",          # each case stands alone: no circuit opened by the last
        "OPENAI_API_KEY": PROVIDER_KEY, "OPENAI_BASE_URL": f"{fake.url}/v1",
        "GROQ_API_KEY": GROQ_KEY, "GROQ_BASE_URL": f"{fake.url}/groq/v1",
        "XAI_API_KEY": XAI_KEY, "XAI_BASE_URL": f"{closed_port_url()}/v1",      # connection refused
    }) as svc:
        yield svc


def call(service, mode: str, timeout: float = 60, **body):
    """One call whose provider answers in `mode`; returns (response, request id)."""
    request_id = f"adv-{uuid.uuid4().hex}"
    payload = {"model": "openai.gpt-4o", "prompt": f"fault:{mode} {SECRET_PROMPT}", **body}
    resp = requests.post(f"{service['url']}{CALL}", json=payload, timeout=timeout,
                         headers={"X-Api-Key": service["key"], "X-Request-Id": request_id})
    return resp, request_id


def ledger_rows(service, request_id: str) -> list[tuple]:
    path = service["env"]["FLOWCALL_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT tenant_id, status, error_code, attempts, endpoint FROM ledger "
                            "WHERE request_id = ?", (request_id,)).fetchall()


def strict_json(resp):
    """The body as RFC 8259 JSON: NaN and Infinity are refused, as a workflow platform would."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(resp.content.decode("utf-8"), parse_constant=refuse)


# -- one defined answer per fault ---------------------------------------------------------------------
FAULTS = [
    # mode, extra body, status, code, retryable, requests at the fake, attempts in the ledger
    ("refused", {"model": "xai.grok-4.3"}, 502, "provider_unreachable", True, 0, 3),
    ("reset_mid_body", {}, 502, "provider_unreachable", True, 3, 3),
    ("truncated_json", {}, 502, "invalid_provider_response", True, 1, 1),
    ("error_body_200", {}, 502, "provider_overloaded", True, 3, 3),   # a server_error in a 200 is a 500's twin
    ("html_200", {}, 502, "invalid_provider_response", True, 1, 1),
    ("html_json_200", {}, 200, None, None, 1, 1),          # the content type is not trusted either way
    ("enormous", {}, 502, "invalid_provider_response", False, 1, 1),
    ("rate_limit_storm", {}, 502, "provider_rate_limited", True, 3, 3),
    ("status_500", {}, 502, "provider_overloaded", True, 3, 3),
    ("echo_key_401", {}, 502, "provider_auth_failed", False, 1, 1),
    ("echo_key_500_text", {}, 502, "provider_overloaded", True, 3, 3),
    ("echo_key_html_200", {}, 502, "invalid_provider_response", True, 1, 1),
]


@pytest.mark.parametrize("mode, extra, status, code, retryable, requests_made, attempts", FAULTS,
                         ids=[f[0] for f in FAULTS])
def test_each_fault_has_one_defined_answer(service, fake, mode, extra, status, code, retryable,
                                           requests_made, attempts):
    resp, request_id = call(service, "ok" if mode == "refused" else mode, **extra)
    body = strict_json(resp)
    assert resp.status_code == status, resp.text[:500]
    if code is None:
        assert body["success"] is True and body["routing"]["attempts"] == attempts
    else:
        assert body["error"]["code"] == code and body["error"]["retryable"] is retryable, body
        assert body["error"]["provider"] == ("xai" if mode == "refused" else "openai")
    assert fake.count() == requests_made
    assert PROVIDER_KEY not in resp.text and PROVIDER_KEY not in str(resp.headers)   # every mode
    assert ledger_rows(service, request_id) == [
        (service["tenant"], status, code, attempts, "public_call")]


FALLBACKS = [
    # mode, model, fallbacks, status, code, served by, requests at the fake, attempts
    ("status_500", "openai.gpt-4o", ["mock.echo"], 200, None, "mock.echo", 3, 4),
    ("truncated_json", "openai.gpt-4o", ["mock.echo"], 200, None, "mock.echo", 1, 2),
    ("ok", "xai.grok-4.3", ["openai.gpt-4o"], 200, None, "openai.gpt-4o", 1, 4),
    ("rate_limit_storm", "openai.gpt-4o", ["groq.openai/gpt-oss-120b"], 502, "provider_rate_limited", None, 6, 6),
    ("echo_key_401", "openai.gpt-4o", ["mock.echo"], 502, "provider_auth_failed", None, 1, 1),
    ("enormous", "openai.gpt-4o", ["mock.echo"], 502, "invalid_provider_response", None, 1, 1),
]


@pytest.mark.parametrize("mode, model, fallbacks, status, code, served_by, requests_made, attempts", FALLBACKS,
                         ids=[f"{f[0]}-{f[1]}" for f in FALLBACKS])
def test_retries_and_fallbacks_as_documented(service, fake, mode, model, fallbacks, status, code, served_by,
                                             requests_made, attempts):
    """Retryable failures: 3 tries, then the next model; non-retryable ones fail at once."""
    resp, request_id = call(service, mode, model=model, fallbacks=fallbacks)
    body = strict_json(resp)
    assert resp.status_code == status, resp.text[:500]
    assert fake.count() == requests_made
    if status == 200:
        assert body["routing"]["model_chosen"] == served_by and body["routing"]["attempts"] == attempts
        assert any(w.startswith(f"Fell back from {model} to {served_by}") for w in body["warnings"])
    else:
        assert body["error"]["code"] == code
    [(tenant, row_status, row_code, row_attempts, _)] = ledger_rows(service, request_id)
    assert (tenant, row_status, row_code, row_attempts) == (service["tenant"], status, code, attempts)


def test_a_429_storm_tries_each_model_three_times_in_order(service, fake):
    resp, _ = call(service, "rate_limit_storm", fallbacks=["groq.openai/gpt-oss-120b"])
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "provider_rate_limited"
    assert [r["path"] for r in fake.received()] == ["/v1/chat/completions"] * 3 + ["/groq/v1/chat/completions"] * 3
    assert [r["headers"]["Authorization"] for r in fake.received()] == \
        [f"Bearer {PROVIDER_KEY}"] * 3 + [f"Bearer {GROQ_KEY}"] * 3


# -- slow answers: the deadline, and the worker keeps serving ------------------------------------
def test_a_slow_drip_ends_in_a_504_and_the_worker_keeps_serving(service, fake):
    outcome = {}

    def slow():
        outcome["resp"], outcome["request_id"] = call(service, "slow_drip", options={"timeoutMs": 1500})

    worker = threading.Thread(target=slow)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while fake.count("slow_drip") == 0:            # the slow call has reached the provider
            assert time.monotonic() < deadline
            time.sleep(0.01)
        quick = requests.post(f"{service['url']}{CALL}", json={"model": "mock.echo", "prompt": "still here?"},
                              headers={"X-Api-Key": service["key"]}, timeout=5)
        assert quick.status_code == 200 and quick.json()["response"] == "still here?"
        assert worker.is_alive()                        # answered while the slow call was still hanging
    finally:
        worker.join(timeout=30)
    resp = outcome["resp"]
    assert resp.status_code == 504 and resp.json()["error"]["code"] in ("provider_timeout", "deadline_exceeded")
    assert resp.json()["error"]["retryable"] is True
    [(tenant, status, _, _, _)] = ledger_rows(service, outcome["request_id"])
    assert (tenant, status) == (service["tenant"], 504)


def test_a_slow_drip_is_cut_at_the_attempt_budget_and_falls_back(service, fake):
    started = time.monotonic()
    resp, _ = call(service, "slow_drip", options={"timeoutMs": 3000}, fallbacks=["mock.echo"])
    assert resp.status_code == 200 and resp.json()["routing"]["model_chosen"] == "mock.echo", resp.text
    assert time.monotonic() - started < 3.0                                 # inside the call's deadline
    deadline = time.monotonic() + 5                 # the fake notices the hang-up at its next dripped byte
    while fake.received("slow_drip")[0]["outcome"] != "client_left" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.received("slow_drip")[0]["outcome"] == "client_left"       # we hung up on the drip


# -- a malicious answer ---------------------------------------------------------------------------------
def test_a_nan_in_a_model_answer_never_makes_the_body_invalid_json(service, fake):
    resp, _ = call(service, "nan_json", response_format={"type": "json_object"})
    assert resp.status_code in (200, 502)
    strict_json(resp)


# -- after everything above: what the service wrote ----------------------------------------------------
def test_no_secret_or_prompt_in_any_log_line_or_metric(service, fake):
    """Runs last in this module: every fault above (401 echoing the key, 500 dumping headers, the
    HTML page showing Authorization) has been through this service's logs by now."""
    for mode in ("echo_key_401", "echo_key_500_text", "echo_key_html_200", "ok"):
        call(service, mode)
    requests.get(f"{service['url']}/api/v3/llm/usage", headers={"X-Api-Key": service["key"][:-1] + "Q"}, timeout=10)
    metrics = requests.get(f"{service['url']}/metrics", timeout=10).text
    logs = service["stdout"].read_text(errors="replace")
    errors = service["stderr"].read_text(errors="replace")
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert sum(1 for line in lines if line.get("logger") == "flowcall.access") >= 4
    secret = service["key"].split("_", 2)[2]
    for name, text in {"stdout": logs, "stderr": errors, "metrics": metrics}.items():
        for needle in (PROVIDER_KEY, GROQ_KEY, XAI_KEY, secret, SECRET_PROMPT):
            assert needle not in text, f"{needle[:12]}... found in {name}"
