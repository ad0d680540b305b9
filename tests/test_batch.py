"""POST /api/v3/llm/batch: items run concurrently within their cap, each through the full core
(routing, retries, limits, budgets, ledger), answered in order with per-item success or error."""
from __future__ import annotations

import dataclasses
import json
import uuid

import pytest

from app.batch.items import merge_defaults, run_bounded, summarize
from app.tenancy.ledger import Row
from app.tenancy.store import Limits
from batch_fakes import FakeLLM
from conftest import make_jwt

BATCH = "/api/v3/llm/batch"
SINGLE_KEYS = {"success", "response", "data", "model", "provider", "finish_reason", "usage", "cost", "latency_ms",
               "routing", "warnings", "request_id", "tool_calls"}
ERROR_KEYS = {"success", "error", "request_id"}


@pytest.fixture
def fake():
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture
def config(config, fake):
    return {**config, **fake.env(), "FLOWCALL_BREAKER_THRESHOLD": "1000"}


@pytest.fixture
def app(app):
    return app


@pytest.fixture
def store(app):
    return app.extensions["flowcall"].store


def new_key(store, **limits) -> tuple[str, str]:
    tenant = str(uuid.uuid4())
    _, key = store.create_key(tenant, limits=Limits(**limits))
    return key, tenant


def post(client, key, body, **headers):
    return client.post(BATCH, json=body, headers={"X-Api-Key": key, **headers})


def ledger_rows(store, tenant):
    with store.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT endpoint, status, error_code, request_id FROM ledger WHERE tenant_id = ?",
                                    (tenant,)).all()


def set_batch_limits(app, **limits) -> None:
    """This app's FLOWCALL_BATCH_* settings, changed after start (as a restart with them would)."""
    svc = app.extensions["flowcall"]
    svc.settings = dataclasses.replace(svc.settings, batch=dataclasses.replace(svc.settings.batch, **limits))


# -- concurrency ------------------------------------------------------------------------------------
@pytest.mark.parametrize("requested, server_cap, expected", [(5, None, 5), (50, "5", 5)])
def test_fifty_items_run_exactly_at_their_concurrency_cap(app, client, store, fake, monkeypatch,
                                                          requested, server_cap, expected):
    """The fake holds every request until `expected` are in flight together: reaching the cap is
    proven by the barrier tripping, never exceeding it by the fake's own count."""
    fake.barrier = __import__("threading").Barrier(expected, timeout=30)
    if server_cap:
        set_batch_limits(app, max_concurrency=int(server_cap))
    key, tenant = new_key(store)
    items = [{"id": f"row-{i}", "prompt": f"item {i}"} for i in range(50)]
    resp = post(client, key, {"items": items, "defaults": {"model": "openai.gpt-4o"}, "concurrency": requested})
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert fake.max_in_flight == expected and not fake.barrier_broken
    assert [r["index"] for r in body["results"]] == list(range(50))
    assert [r["id"] for r in body["results"]] == [f"row-{i}" for i in range(50)]
    assert [r["response"] for r in body["results"]] == [f"Echo: item {i}" for i in range(50)]
    assert (body["total"], body["succeeded"], body["failed"]) == (50, 50, 0)
    assert body["usage"] == {"input_tokens": 50 * 12, "output_tokens": 50 * 7, "total_tokens": 50 * 19}
    assert body["cost"] == pytest.approx(50 * (12 * 2.5 + 7 * 10) / 1e6)
    rows = ledger_rows(store, tenant)
    assert len(rows) == 50 and {r.endpoint for r in rows} == {"batch"}
    assert sorted(r.request_id for r in rows) == sorted(f"{body['request_id']}.{i}" for i in range(50))


def test_run_bounded_never_has_more_than_its_workers_in_flight():
    import threading
    lock, state = threading.Lock(), {"now": 0, "max": 0}
    gate = threading.Barrier(3, timeout=10)

    def work(index, item):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        gate.wait()
        with lock:
            state["now"] -= 1
        return {"i": index}
    results = dict(run_bounded(enumerate(range(30)), work, 3))
    assert state["max"] == 3 and sorted(results) == list(range(30))


# -- per-item results -------------------------------------------------------------------------------
def test_each_item_fails_alone_in_the_single_call_error_shape(client, store, fake):
    key, tenant = new_key(store)
    items = [
        {"id": "ok", "prompt": "fine"},
        {"id": "bad-max", "prompt": "x", "options": {"maxTokens": 0}},
        {"id": "typo", "prompt": "x", "max_tokens": 5},
        "not an object",
        {"id": "limited", "prompt": "[429] please"},
        {"id": "down", "prompt": "[500] please"},
        {"id": "garbled", "prompt": "[malformed] please"},
        {"id": "nomodel", "prompt": "x", "model": "nosuchvendor.model"},
        {"id": 7, "messages": [{"role": "user", "content": "numbered"}]},
        {"id": True, "prompt": "bad id"},
    ]
    body = post(client, key, {"items": items, "defaults": {"model": "openai.gpt-4o"}}).get_json()
    results = body["results"]
    codes = [r["error"]["code"] if not r["success"] else None for r in results]
    assert codes == [None, "validation_error", "validation_error", "validation_error", "provider_rate_limited",
                     "provider_overloaded", "invalid_provider_response", "unknown_provider", None,
                     "validation_error"]
    assert [r["id"] for r in results] == ["ok", "bad-max", "typo", None, "limited", "down", "garbled", "nomodel", 7,
                                          None]
    assert results[1]["error"]["fields"] == {"options.maxTokens": results[1]["error"]["fields"]["options.maxTokens"]}
    assert results[2]["error"]["fields"]["max_tokens"] == "Unknown field: use options.maxTokens."
    assert results[4]["error"]["retryable"] is True and results[4]["error"]["provider"] == "openai"
    assert results[9]["error"]["fields"] == {"id": "must be a string or an integer"}
    for r in results:
        expected = SINGLE_KEYS if r["success"] else ERROR_KEYS
        assert set(r) == expected | {"index", "id"}, r
        assert "error" not in r or not r["success"]
    assert (body["succeeded"], body["failed"]) == (2, 8)
    assert body["usage"]["total_tokens"] == 2 * 19
    assert fake.prompts["[429] please"] == 3 and fake.prompts["[500] please"] == 3   # retried like any call
    # validation failures never reach the gateway; every executed item has its ledger row
    statuses = sorted((r.status, r.error_code) for r in ledger_rows(store, tenant))
    assert statuses == sorted([(200, None), (200, None), (502, "provider_rate_limited"),
                               (502, "provider_overloaded"), (502, "invalid_provider_response"),
                               (400, "unknown_provider")])


def test_success_items_match_the_single_call_answer(client, store):
    key, _ = new_key(store)
    single = client.post("/api/v3/llm/public/call", json={"model": "openai.gpt-4o", "prompt": "same"},
                         headers={"X-Api-Key": key}).get_json()
    item = post(client, key, {"items": [{"model": "openai.gpt-4o", "prompt": "same"}]}).get_json()["results"][0]
    assert set(item) == set(single) | {"index", "id"}
    for field in ("response", "model", "provider", "usage", "cost", "finish_reason"):
        assert item[field] == single[field]


def test_defaults_merge_under_items_options_key_by_key(client, store, fake):
    key, _ = new_key(store)
    defaults = {"model": "openai.gpt-4o", "options": {"maxTokens": 50, "temperature": 0.2},
                "messages": [{"role": "system", "content": "Be brief."}]}
    items = [{"prompt": "a"}, {"prompt": "b", "options": {"temperature": 0.9}}, {"prompt": "c", "model": "mock.echo"}]
    body = post(client, key, {"items": items, "defaults": defaults}).get_json()
    assert body["succeeded"] == 3 and body["results"][2]["provider"] == "mock"
    sent = sorted(fake.bodies, key=lambda b: b["messages"][-1]["content"])
    assert [(b["max_tokens"] if "max_tokens" in b else b.get("max_completion_tokens"), b["temperature"])
            for b in sent] == [(50, 0.2), (50, 0.9)]
    assert all(b["messages"][0] == {"role": "system", "content": "Be brief."} for b in sent)
    assert merge_defaults({"options": {"a": 1}, "model": "x"}, {"options": {"b": 2}}) == {
        "options": {"a": 1, "b": 2}, "model": "x"}


# -- the envelope -----------------------------------------------------------------------------------
@pytest.mark.parametrize("body, field", [
    ({"items": "nope"}, "items"),
    ({"items": []}, "items"),
    ({}, "items"),
    ({"items": [{}], "concurrency": 0}, "concurrency"),
    ({"items": [{}], "concurrency": "lots"}, "concurrency"),
    ({"items": [{}], "concurrency": True}, "concurrency"),
    ({"items": [{}], "parallel": 3}, "parallel"),
    ({"items": [{}], "defaults": {"options": {"maxTokens": 0}}}, "defaults.options.maxTokens"),
    ({"items": [{}], "defaults": {"max_tokens": 5}}, "defaults.max_tokens"),
    ({"items": [{}], "defaults": []}, "defaults"),
])
def test_malformed_envelope_is_one_400(client, api_key, body, field):
    resp = post(client, api_key, body)
    assert resp.status_code == 400, resp.get_json()
    assert field in resp.get_json()["error"]["fields"]


def test_too_many_items_is_413_with_the_limits(app, client, api_key):
    set_batch_limits(app, max_items=3)
    resp = post(client, api_key, {"items": [{"prompt": "x"}] * 4})
    err = resp.get_json()["error"]
    assert resp.status_code == 413 and err["code"] == "payload_too_large"
    assert err["fields"] == {"items": "at most 3 items"}
    assert "4 items" in err["message"] and "FLOWCALL_BATCH_MAX_ITEMS" in err["message"]


def test_too_large_body_is_413_with_the_limits(app, client, api_key):
    set_batch_limits(app, max_body_bytes=2048)
    resp = post(client, api_key, {"items": [{"model": "mock.echo", "prompt": "x" * 3000}]})
    err = resp.get_json()["error"]
    assert resp.status_code == 413 and err["fields"] == {"body": "at most 2048 bytes"}
    assert "100 items" in err["message"] and "2048 bytes" in err["message"]
    assert post(client, api_key, {"items": [{"model": "mock.echo", "prompt": "x" * 100}]}).status_code == 200


def test_limits_from_settings_and_worker_count():
    from app.config import Settings
    limits = Settings.from_env({"FLOWCALL_BATCH_MAX_CONCURRENCY": "6"}).batch
    assert (limits.max_items, limits.max_concurrency, limits.max_body_bytes) == (100, 6, 20 * 1024 * 1024)
    assert [limits.workers(None, 50), limits.workers(3, 50), limits.workers(40, 50), limits.workers(40, 2)] == [
        6, 3, 6, 2]


# -- limits, budgets, idempotency, auth -------------------------------------------------------------
def test_rate_limit_counts_every_item(client, store):
    key, _ = new_key(store, rpm=3)
    body = post(client, key, {"items": [{"prompt": f"p{i}"} for i in range(5)],
                              "defaults": {"model": "mock.echo"}, "concurrency": 1}).get_json()
    assert (body["succeeded"], body["failed"]) == (3, 2)
    assert [r["error"]["code"] for r in body["results"] if not r["success"]] == ["rpm_exceeded_key"] * 2
    single = client.post("/api/v3/llm/public/call", json={"model": "mock.echo", "prompt": "x"},
                         headers={"X-Api-Key": key})
    assert single.status_code == 429


def test_budget_refuses_every_item_before_the_provider(app, client, store, fake):
    key, tenant = new_key(store, budget_usd=0.001)
    app.extensions["flowcall"].ledger.write(Row(tenant_id=tenant, endpoint="call", status=200, cost=0.01,
                                                key_id=key.split("_")[1]))
    body = post(client, key, {"items": [{"prompt": "a"}, {"prompt": "b"}],
                              "defaults": {"model": "openai.gpt-4o"}}).get_json()
    assert [r["error"]["code"] for r in body["results"]] == ["budget_exceeded_key"] * 2
    assert not fake.bodies


def test_idempotency_key_covers_the_whole_batch(client, store, fake):
    key, tenant = new_key(store)
    body = {"items": [{"prompt": "one"}, {"prompt": "two"}], "defaults": {"model": "openai.gpt-4o"}}
    first = post(client, key, body, **{"Idempotency-Key": "nightly-42"})
    again = post(client, key, body, **{"Idempotency-Key": "nightly-42"})
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replay"] == "true" and again.get_json() == first.get_json()
    assert sum(fake.prompts.values()) == 2 and len(ledger_rows(store, tenant)) == 2
    other = post(client, key, {**body, "concurrency": 1}, **{"Idempotency-Key": "nightly-42"})
    assert other.status_code == 422 and other.get_json()["error"]["code"] == "idempotency_key_reused"
    assert post(client, key, body, **{"Idempotency-Key": " "}).status_code == 400


def test_either_auth(client, tenant_id, agent_id):
    body = {"items": [{"model": "mock.echo", "prompt": "hi"}]}
    assert client.post(BATCH, json=body).status_code == 401
    assert client.post(BATCH, json=body, headers={"X-Api-Key": "fc_nope"}).status_code == 401
    headers = {"Authorization": f"Bearer {make_jwt(tenant_id)}", "x-tenant-id": tenant_id, "x-agent-id": agent_id}
    resp = client.post(BATCH, json=body, headers=headers)
    assert resp.status_code == 200 and resp.get_json()["results"][0]["response"] == "hi"


def test_invalid_json_is_400(client, api_key):
    resp = client.post(BATCH, data=b'{"items": [', headers={"X-Api-Key": api_key, "Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_json"


def test_summarize_counts_unpriced_items_as_zero():
    results = [{"success": True, "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}, "cost": None},
               {"success": True, "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}, "cost": 0.5},
               {"success": False, "error": {"code": "x"}}]
    assert summarize(results) == {"total": 3, "succeeded": 2, "failed": 1, "cost": 0.5,
                                  "usage": {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5}}
    assert json.dumps(summarize([]))
