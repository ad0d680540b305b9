"""Ledger, idempotency, counters, limits and budgets on every backend (SQLite; PostgreSQL and Redis
when configured), plus the migrations themselves."""
from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, UTC

import pytest
from sqlalchemy import inspect

from app.batch import job_calls, job_store  # noqa: F401 - their tables join app.tenancy.db.metadata
from app.openai_api import response_store  # noqa: F401 - their tables join app.tenancy.db.metadata
from app.tenancy.auth import Principal
from app.tenancy.db import metadata, revisions
from app.errors import BudgetExceeded, IdempotencyConflict, IdempotencyMismatch, RateLimited
from app.tenancy.idempotency import Idempotency, Replay, body_hash
from app.tenancy.ledger import Ledger, Row
from app.tenancy.quotas import Quotas, SqlStorage, make_storage
from app.tenancy.store import Limits, Store
from backends import COUNTERS, DATABASES, REDIS_URL, flush_redis, fresh_database_url


@pytest.fixture(params=DATABASES)
def store(request, tmp_path):
    s = Store(fresh_database_url(request.param, tmp_path))
    yield s
    s.close()


@pytest.fixture(params=COUNTERS)
def storage(request, store):
    if request.param == "redis":
        flush_redis()
        return make_storage(store.engine, REDIS_URL)
    return SqlStorage(store.engine)


def tenant() -> str:
    return str(uuid.uuid4())


# -- migrations -------------------------------------------------------------------------------------
def test_migrations_match_the_models(store):
    """The hand-written migration creates exactly the tables and columns app/tenancy/db.py declares."""
    current, head = revisions(store.engine)
    assert current == head
    insp = inspect(store.engine)
    for table in metadata.tables.values():
        assert {c["name"] for c in insp.get_columns(table.name)} == {c.name for c in table.columns}, table.name


# -- ledger -----------------------------------------------------------------------------------------
def test_ledger_usage_totals_groups_and_isolation(store):
    ledger = Ledger(store.engine)
    a, b = tenant(), tenant()
    agent = str(uuid.uuid4())
    ledger.write(Row(tenant_id=a, agent_id=agent, endpoint="call", status=200, model_served="openai.gpt-4o",
                     provider="openai", input_tokens=10, output_tokens=5, cost=0.001, attempts=1))
    ledger.write(Row(tenant_id=a, endpoint="call", status=200, model_served="anthropic.claude-sonnet-4-6",
                     provider="anthropic", input_tokens=20, output_tokens=10, cost=0.002, attempts=1))
    ledger.write(Row(tenant_id=a, endpoint="call", status=502, model_requested="openai.gpt-4o",
                     error_code="provider_overloaded", attempts=3))
    ledger.write(Row(tenant_id=b, endpoint="call", status=200, input_tokens=999, output_tokens=999, cost=9.0))
    start = datetime.now(UTC) - timedelta(days=1)
    end = datetime.now(UTC) + timedelta(days=1)
    usage = ledger.usage(a, start, end, "model")
    assert usage["totals"] == {"calls": 3, "errors": 1, "input_tokens": 30, "output_tokens": 15,
                               "total_tokens": 45, "cost": pytest.approx(0.003)}
    assert {g["group"]: g["calls"] for g in usage["groups"]} == {
        "openai.gpt-4o": 2, "anthropic.claude-sonnet-4-6": 1}
    by_agent = {g["group"]: g["calls"] for g in ledger.usage(a, start, end, "agent")["groups"]}
    assert by_agent == {agent: 1, None: 2}
    [day] = ledger.usage(a, start, end, "day")["groups"]
    assert day["group"] == datetime.now(UTC).date().isoformat() and day["calls"] == 3
    assert ledger.usage(tenant(), start, end, None)["totals"]["calls"] == 0


def test_content_is_not_stored_unless_asked(store):
    a = tenant()
    Ledger(store.engine).write(Row(tenant_id=a, endpoint="call", status=200, prompt="secret plan", answer="ok"))
    Ledger(store.engine, log_content=True).write(Row(tenant_id=a, endpoint="call", status=200, prompt="kept",
                                                     answer="yes"))
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT prompt, answer FROM ledger ORDER BY id").all()
    assert [tuple(r) for r in rows] == [(None, None), ("kept", "yes")]


# -- idempotency ------------------------------------------------------------------------------------
def test_idempotency_protocol(store):
    now = [1000.0]
    idem = Idempotency(store.engine, clock=lambda: now[0])
    t = tenant()
    digest = body_hash("call", {"model": "mock.echo", "prompt": "hi"})
    assert idem.begin(t, "k1", digest, lock_seconds=60) is None           # claimed
    with pytest.raises(IdempotencyConflict):
        idem.begin(t, "k1", digest, lock_seconds=60)                       # still running
    with pytest.raises(IdempotencyMismatch):
        idem.begin(t, "k1", body_hash("call", {"other": 1}), lock_seconds=60)
    idem.finish(t, "k1", 200, {"success": True, "response": "hi"})
    assert idem.begin(t, "k1", digest, lock_seconds=60) == Replay(200, {"success": True, "response": "hi"})
    assert idem.begin(tenant(), "k1", digest, lock_seconds=60) is None    # keys are per tenant
    now[0] += 24 * 3600 + 1
    assert idem.begin(t, "k1", digest, lock_seconds=60) is None           # expired: runs again


def test_failed_call_frees_its_key_and_a_dead_worker_lock_expires(store):
    now = [1000.0]
    idem = Idempotency(store.engine, clock=lambda: now[0])
    t, digest = tenant(), "d" * 64
    assert idem.begin(t, "k", digest, lock_seconds=10) is None
    idem.release(t, "k")
    assert idem.begin(t, "k", digest, lock_seconds=10) is None            # released: claim again
    with pytest.raises(IdempotencyConflict):
        idem.begin(t, "k", digest, lock_seconds=10)
    now[0] += 10 + 30 + 1                                                 # the worker died: lock expired
    assert idem.begin(t, "k", digest, lock_seconds=10) is None


def test_concurrent_claims_have_one_winner(store):
    idem = Idempotency(store.engine)
    t, digest = tenant(), "e" * 64
    results, lock = [], threading.Lock()

    def claim():
        try:
            outcome = idem.begin(t, "same", digest, lock_seconds=60)
        except IdempotencyConflict:
            outcome = "conflict"
        with lock:
            results.append(outcome)
    threads = [threading.Thread(target=claim) for _ in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results.count(None) == 1 and results.count("conflict") == 15


# -- counters and limits ----------------------------------------------------------------------------
def test_counter_increments_are_atomic(storage):
    def hammer():
        for _ in range(25):
            storage.incr("fc-test", 60)
    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert storage.get("fc-test") == 200


def test_sql_counter_window_expires(store):
    now = [1000.0]
    storage = SqlStorage(store.engine, clock=lambda: now[0])
    assert storage.incr("w", 60, 5) == 5 and storage.incr("w", 60) == 6
    assert storage.get_expiry("w") == 1060
    now[0] += 61
    assert storage.get("w") == 0 and storage.incr("w", 60) == 1


NO_LIMITS = Limits()


def principal(key_id="k1", t=None, limits=NO_LIMITS):
    return Principal(tenant_id=t or tenant(), agent_id=None, method="api_key", key_id=key_id, limits=limits)


def test_rpm_exact(store, storage):
    quotas = Quotas(storage, Ledger(store.engine))
    p = principal(limits=Limits(rpm=5))
    for _ in range(5):
        quotas.admit(p, p.limits, Limits())
    with pytest.raises(RateLimited) as info:
        quotas.admit(p, p.limits, Limits())
    assert info.value.code == "rpm_exceeded_key" and 1 <= info.value.retry_after <= 60
    other_key = principal(key_id="k2", t=p.tenant_id, limits=Limits(rpm=5))
    quotas.admit(other_key, other_key.limits, Limits())                    # per key


def test_tenant_rpm_covers_all_its_keys(store, storage):
    quotas = Quotas(storage, Ledger(store.engine))
    t = tenant()
    for i in range(3):
        quotas.admit(principal(key_id=f"k{i}", t=t), Limits(), Limits(rpm=3))
    with pytest.raises(RateLimited) as info:
        quotas.admit(principal(key_id="k9", t=t), Limits(), Limits(rpm=3))
    assert info.value.code == "rpm_exceeded_tenant"


def test_tpm_counts_tokens_after_the_call(store, storage):
    quotas = Quotas(storage, Ledger(store.engine))
    p = principal(limits=Limits(tpm=100))
    quotas.admit(p, p.limits, Limits())
    quotas.record_tokens(p, p.limits, Limits(), 99)
    quotas.admit(p, p.limits, Limits())                                    # 99 < 100: allowed
    quotas.record_tokens(p, p.limits, Limits(), 1)
    with pytest.raises(RateLimited) as info:
        quotas.admit(p, p.limits, Limits())
    assert info.value.code == "tpm_exceeded_key"


def test_budgets_from_the_ledger(store, storage):
    ledger = Ledger(store.engine)
    quotas = Quotas(storage, ledger)
    p = principal(limits=Limits(budget_usd=0.01))
    quotas.admit(p, p.limits, Limits())
    ledger.write(Row(tenant_id=p.tenant_id, key_id=p.key_id, endpoint="call", status=200, cost=0.01))
    with pytest.raises(BudgetExceeded) as info:
        quotas.admit(p, p.limits, Limits())
    assert info.value.status == 402 and info.value.code == "budget_exceeded_key"
    with pytest.raises(BudgetExceeded) as info:
        quotas.admit(principal(key_id="other", t=p.tenant_id), Limits(), Limits(budget_usd=0.005))
    assert info.value.code == "budget_exceeded_tenant"


def test_redis_down_fails_open(store):
    quotas = Quotas(make_storage(store.engine, "redis://127.0.0.1:1/0"), Ledger(store.engine))
    p = principal(limits=Limits(rpm=1, tpm=1))
    for _ in range(3):
        quotas.admit(p, p.limits, Limits())            # no exception: limits are not enforced
        quotas.record_tokens(p, p.limits, Limits(), 10)


def test_budget_still_enforced_when_redis_is_down(store):
    ledger = Ledger(store.engine)
    quotas = Quotas(make_storage(store.engine, "redis://127.0.0.1:1/0"), ledger)
    p = principal(limits=Limits(budget_usd=0.001))
    ledger.write(Row(tenant_id=p.tenant_id, key_id=p.key_id, endpoint="call", status=200, cost=0.002))
    with pytest.raises(BudgetExceeded):
        quotas.admit(p, p.limits, Limits())
