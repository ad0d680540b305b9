"""Multi-tenant behaviour over HTTP: usage, idempotent replays, limits and budgets, tenant isolation."""
from __future__ import annotations

import json
import uuid

import pytest
import responses

from app.tenancy.store import Limits
from conftest import make_jwt

OPENAI = "https://api.openai.com/v1/chat/completions"


def openai_ok(text="Paris."):
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}}


@pytest.fixture
def config(config):
    return {**config, "OPENAI_API_KEY": "sk-test-openai-0123456789"}


@pytest.fixture
def store(app):
    return app.extensions["flowcall"].store


def new_key(store, tenant=None, **limits):
    tenant = tenant or str(uuid.uuid4())
    _, key = store.create_key(tenant, limits=Limits(**limits))
    return key, tenant


def call(client, key, body=None, **headers):
    return client.post("/api/v3/llm/public/call", json=body or {"model": "openai.gpt-4o", "prompt": "hi"},
                       headers={"X-Api-Key": key, **headers})


@responses.activate
def test_every_call_is_in_the_ledger_and_usage_is_per_tenant(client, store):
    responses.post(OPENAI, json=openai_ok())
    key_a, tenant_a = new_key(store)
    key_b, _ = new_key(store)
    for _ in range(3):
        assert call(client, key_a).status_code == 200
    assert call(client, key_a, {"model": "openai.gpt-4o", "prompt": "x", "options": {"maxTokens": 0}}).status_code == 400
    assert call(client, key_b).status_code == 200
    usage = client.get("/api/v3/llm/usage?group_by=model", headers={"X-Api-Key": key_a}).get_json()
    assert usage["tenant_id"] == tenant_a
    assert usage["totals"] == {"calls": 3, "errors": 0, "input_tokens": 300, "output_tokens": 150,
                               "total_tokens": 450, "cost": pytest.approx(3 * (100 * 2.5 + 50 * 10) / 1e6)}
    assert [g["group"] for g in usage["groups"]] == ["openai.gpt-4o"]
    usage_b = client.get("/api/v3/llm/usage", headers={"X-Api-Key": key_b}).get_json()
    assert usage_b["totals"]["calls"] == 1


@responses.activate
def test_failed_calls_are_accounted_with_their_status(client, store):
    responses.post(OPENAI, status=400, json={"error": {"message": "bad", "type": "invalid_request_error"}})
    key, _ = new_key(store)
    assert call(client, key).status_code == 502
    totals = client.get("/api/v3/llm/usage", headers={"X-Api-Key": key}).get_json()["totals"]
    assert totals["calls"] == 1 and totals["errors"] == 1 and totals["cost"] == 0
    with store.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT status, error_code, attempts, model_served FROM ledger").one()
    assert tuple(row) == (502, "provider_rejected_request", 1, "openai.gpt-4o")


def test_usage_with_jwt_reads_only_the_headers_tenant(client, store, tenant_id, agent_id):
    key_other, _ = new_key(store)
    call(client, key_other, {"model": "mock.echo", "prompt": "hi"})
    headers = {"Authorization": f"Bearer {make_jwt(tenant_id)}", "x-tenant-id": tenant_id, "x-agent-id": agent_id}
    client.post("/api/v3/llm/call", json={"model": "mock.echo", "prompt": "mine"}, headers=headers)
    body = client.get("/api/v3/llm/usage?group_by=agent", headers=headers).get_json()
    assert body["totals"]["calls"] == 1 and body["groups"][0]["group"] == agent_id


@pytest.mark.parametrize("query, field", [("group_by=color", "group_by"), ("from=yesterday", "from"),
                                          ("from=2026-05-02&to=2026-05-01", "to"), ("limit=5", "limit")])
def test_usage_query_validation(client, api_key, query, field):
    resp = client.get(f"/api/v3/llm/usage?{query}", headers={"X-Api-Key": api_key})
    assert resp.status_code == 400 and field in resp.get_json()["error"]["fields"]


def test_usage_needs_auth(client):
    assert client.get("/api/v3/llm/usage").status_code in (401, 503)
    assert client.get("/api/v3/llm/usage", headers={"X-Api-Key": "fc_nope"}).status_code == 401


@responses.activate
def test_idempotent_replay_is_per_tenant_and_never_calls_twice(client, store):
    responses.post(OPENAI, json=openai_ok("first"))
    key_a, _ = new_key(store)
    key_b, _ = new_key(store)
    first = call(client, key_a, **{"Idempotency-Key": "zap-42"})
    again = call(client, key_a, **{"Idempotency-Key": "zap-42"})
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replay"] == "true" and "Idempotent-Replay" not in first.headers
    assert again.get_json() == first.get_json() and len(responses.calls) == 1
    other = call(client, key_b, **{"Idempotency-Key": "zap-42"})          # tenant B: its own call
    assert other.status_code == 200 and "Idempotent-Replay" not in other.headers and len(responses.calls) == 2
    changed = call(client, key_a, {"model": "openai.gpt-4o", "prompt": "different"}, **{"Idempotency-Key": "zap-42"})
    assert changed.status_code == 422 and changed.get_json()["error"]["code"] == "idempotency_key_reused"
    totals = client.get("/api/v3/llm/usage", headers={"X-Api-Key": key_a}).get_json()["totals"]
    assert totals["calls"] == 1                                            # replays are not new calls


@responses.activate
def test_failed_call_does_not_pin_its_idempotency_key(client, store):
    responses.post(OPENAI, status=400, json={"error": {"message": "bad", "type": "invalid_request_error"}})
    responses.post(OPENAI, json=openai_ok())
    key, _ = new_key(store)
    assert call(client, key, **{"Idempotency-Key": "retry-me"}).status_code == 502
    assert call(client, key, **{"Idempotency-Key": "retry-me"}).status_code == 200


def test_invalid_idempotency_key(client, api_key):
    resp = call(client, api_key, {"model": "mock.echo", "prompt": "hi"}, **{"Idempotency-Key": "x" * 300})
    assert resp.status_code == 400 and "Idempotency-Key" in resp.get_json()["error"]["fields"]


@responses.activate
def test_rate_limit_is_429_with_retry_after_and_the_limit_named(client, store):
    responses.post(OPENAI, json=openai_ok())
    key, _ = new_key(store, rpm=2)
    assert [call(client, key).status_code for _ in range(3)] == [200, 200, 429]
    resp = call(client, key)
    assert resp.get_json()["error"]["code"] == "rpm_exceeded_key" and int(resp.headers["Retry-After"]) >= 1
    assert len(responses.calls) == 2


@responses.activate
def test_tenant_limits_apply_across_its_keys(client, store):
    responses.post(OPENAI, json=openai_ok())
    key1, tenant = new_key(store)
    key2, _ = new_key(store, tenant=tenant)
    store.set_tenant_limits(tenant, Limits(rpm=1))
    assert call(client, key1).status_code == 200
    resp = call(client, key2)
    assert resp.status_code == 429 and resp.get_json()["error"]["code"] == "rpm_exceeded_tenant"


def test_budget_refused_before_any_provider_call(client, store):
    key, tenant = new_key(store, budget_usd=0.0001)
    ledger = client.application.extensions["flowcall"].ledger
    from app.tenancy.ledger import Row
    ledger.write(Row(tenant_id=tenant, key_id=key.split("_")[1], endpoint="call", status=200, cost=0.0002))
    with responses.RequestsMock() as rsps:            # any provider request would fail this test loudly
        resp = call(client, key)
        assert len(rsps.calls) == 0
    assert resp.status_code == 402 and resp.get_json()["error"]["code"] == "budget_exceeded_key"


@responses.activate
def test_tokens_per_minute(client, store):
    responses.post(OPENAI, json=openai_ok())             # 150 tokens a call
    key, _ = new_key(store, tpm=200)
    assert call(client, key).status_code == 200
    assert call(client, key).status_code == 200           # 150 < 200 before the call
    resp = call(client, key)                              # 300 spent
    assert resp.status_code == 429 and resp.get_json()["error"]["code"] == "tpm_exceeded_key"


def test_ledger_never_stores_content_by_default(client, store, api_key):
    call(client, api_key, {"model": "mock.echo", "prompt": "my secret prompt"})
    with store.engine.connect() as conn:
        dump = json.dumps([list(map(str, r)) for r in conn.exec_driver_sql("SELECT * FROM ledger")])
    assert "my secret prompt" not in dump
