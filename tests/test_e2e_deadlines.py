"""One deadline covers connect, status line, headers and body, through the real service.

A provider that sends its status line and headers a byte at a time resets every socket timeout with
each byte; the call's `timeoutMs` must still end it. The fake records whether we hung up on it
("client_left") or waited for its whole answer ("completed"): that, not a stopwatch, is the proof.
"""
from __future__ import annotations

import uuid

import pytest
import requests
from fake_provider import FakeProvider
from service import e2e_service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fake():
    # 0.3 s a byte: a ~130-byte head takes ~40 s; bounded at 8 s, after which the rest comes at once
    with FakeProvider(drip_interval_s=0.3, drip_limit_s=8.0) as fp:
        yield fp


@pytest.fixture(scope="module", params=["gevent", "sync"])
def service(request, fake, tmp_path_factory):
    with e2e_service(tmp_path_factory.mktemp(f"deadlines-{request.param}"), workers=1, extra_env={
            "FLOWCALL_WORKER_CLASS": request.param,
            "OPENAI_API_KEY": f"sk-deadline-{uuid.uuid4().hex}", "OPENAI_BASE_URL": f"{fake.url}/v1"}) as svc:
        yield svc


def test_a_provider_dripping_its_headers_is_cut_at_the_deadline(service, fake):
    resp = requests.post(f"{service['url']}/api/v3/llm/public/call",
                         json={"model": "openai.gpt-4o", "prompt": "fault:drip_head hi",
                               "options": {"timeoutMs": 1500}},
                         headers={"X-Api-Key": service["key"]}, timeout=60)
    assert resp.status_code == 504, resp.text[:300]
    assert resp.json()["error"]["code"] == "provider_timeout" and resp.json()["error"]["retryable"] is True
    assert fake.outcome("drip_head") == "client_left"          # we hung up mid-headers, not after them


def test_a_stream_whose_provider_drips_its_headers_is_cut_at_the_deadline(service, fake):
    resp = requests.post(f"{service['url']}/v1/chat/completions",
                         json={"model": "openai.gpt-4o", "stream": True, "flowcall": {"timeoutMs": 1500},
                               "messages": [{"role": "user", "content": "fault:drip_head hi"}]},
                         headers={"Authorization": f"Bearer {service['key']}"}, timeout=60)
    assert resp.status_code == 504, resp.text[:300]
    assert fake.outcome("drip_head") == "client_left"
