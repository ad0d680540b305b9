"""One tenant's misbehaviour must not switch a provider off for the others (issue 12, item 2).

Through the real service (one gunicorn worker, so the per-process breaker is the one every call
meets), with a breaker that opens after 3 failures and stays open 30 s: if tenant B's calls
counted, tenant A's next call would be a 502 circuit_open. Each test uses its own provider, so no
test inherits another's breaker state.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from service import create_key, e2e_service, script

pytestmark = pytest.mark.e2e
OPENAI_429 = {"error": {"message": "Rate limit reached for gpt-4o-mini", "type": "requests",
                        "param": None, "code": "rate_limit_exceeded"}}
OPENAI_400 = {"error": {"message": "Invalid 'messages[0].content': string too long.",
                        "type": "invalid_request_error", "param": "messages[0].content",
                        "code": "string_above_max_length"}}
ANTHROPIC_529 = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
                 "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


@pytest.fixture(scope="module")
def service(fake, tmp_path_factory):
    with e2e_service(tmp_path_factory.mktemp("breaker-isolation"), fake, workers=1, extra_env={
            "FLOWCALL_BREAKER_THRESHOLD": "3", "FLOWCALL_BREAKER_COOLDOWN_MS": "30000"}) as svc:
        yield svc


def post(service, key, body):
    return requests.post(f"{service['url']}/api/v3/llm/public/call", json=body, headers={"X-Api-Key": key},
                         timeout=60)


def tenant_b_sends(service, key, body, calls=24, at_once=6):
    with ThreadPoolExecutor(max_workers=at_once) as pool:
        return list(pool.map(lambda _: post(service, key, body), range(calls)))


def provider_requests(fake) -> int:
    return len(requests.get(f"{fake.url}/_fake/requests", timeout=5).json())


def assert_tenant_a_is_served(service, fake, model):
    fake.reset()                                    # nothing B scripted is left for A, no latency
    r = post(service, service["key"], {"model": model, "prompt": "What is 2+2?"})
    assert r.status_code == 200, r.text
    assert r.json()["routing"]["model_chosen"] == model and r.json()["routing"]["attempts"] == 1


def test_short_caller_deadlines_do_not_open_the_circuit(service, fake):
    key_b, _ = create_key(service["env"])
    fake.latency_ms = 1000                         # the provider answers in 1 s
    answers = tenant_b_sends(service, key_b, {"model": "openai.gpt-4o-mini", "prompt": "Summarise this.",
                                              "options": {"timeoutMs": 100}})
    codes = {a.json()["error"]["code"] for a in answers}
    assert {a.status_code for a in answers} == {504} and "circuit_open" not in codes, codes
    assert provider_requests(fake) >= 3                 # enough to open the circuit, had they counted
    assert_tenant_a_is_served(service, fake, "openai.gpt-4o-mini")


def test_provider_rejections_of_bad_input_do_not_open_the_circuit(service, fake):
    key_b, _ = create_key(service["env"])
    script(fake, [{"status": 400, "body": OPENAI_400}] * 24)
    answers = tenant_b_sends(service, key_b, {"model": "xai.grok-4.3", "prompt": "x" * 5000})
    assert {a.json()["error"]["code"] for a in answers} == {"provider_rejected_request"}
    assert_tenant_a_is_served(service, fake, "xai.grok-4.3")


def test_provider_429s_do_not_open_the_circuit(service, fake):
    key_b, _ = create_key(service["env"])
    script(fake, [{"status": 429, "headers": {"Retry-After": "0"}, "body": OPENAI_429}] * 72)
    answers = tenant_b_sends(service, key_b, {"model": "groq.openai/gpt-oss-120b", "prompt": "Again."})
    assert {a.json()["error"]["code"] for a in answers} == {"provider_rate_limited"}
    assert_tenant_a_is_served(service, fake, "groq.openai/gpt-oss-120b")


def test_a_tenant_over_its_own_rate_limit_does_not_open_the_circuit(service, fake):
    key_b, _ = create_key(service["env"], None, "--rpm", "2")
    answers = tenant_b_sends(service, key_b, {"model": "ollama.llama3.2", "prompt": "Again."})
    assert sorted(a.status_code for a in answers) == [200] * 2 + [429] * 22
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {"rpm_exceeded_key"}
    assert_tenant_a_is_served(service, fake, "ollama.llama3.2")


def test_the_providers_own_failures_still_open_the_circuit(service, fake):
    """The control: the rule above must not have switched the breaker off."""
    key_b, _ = create_key(service["env"])
    script(fake, [{"status": 529, "body": ANTHROPIC_529}] * 3)
    assert post(service, key_b, {"model": "anthropic.claude-sonnet-4-6", "prompt": "hi"}).status_code == 502
    r = post(service, service["key"], {"model": "anthropic.claude-sonnet-4-6", "prompt": "hi"})
    assert r.status_code == 502 and r.json()["error"]["code"] == "circuit_open"
    assert provider_requests(fake) == 3
