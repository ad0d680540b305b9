"""Budgets hold under concurrency through the real service (4 gunicorn workers), on SQLite and on
PostgreSQL + Redis (when FLOWCALL_TEST_DATABASE_URL / FLOWCALL_TEST_REDIS_URL are set): each call
reserves its estimate before it runs, so the spend passes a budget by at most one reservation."""
from __future__ import annotations

import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from backends import PG_URL, REDIS_URL, flush_redis, fresh_database_url
from fake_provider import FakeProvider
from service import ROOT, clean_env, create_key, gunicorn, provider_env

pytestmark = pytest.mark.e2e
BODY = {"model": "openai.gpt-4o", "prompt": "hi", "options": {"maxTokens": 50}}
RESERVATION = (2 * 2.5 + 50 * 10) / 1e6       # "hi" is 2 bytes, 50 output tokens, at gpt-4o prices
COST_PER_CALL = (12 * 2.5 + 7 * 10) / 1e6      # what the fake's usage costs

BACKENDS = ["sqlite", pytest.param("postgresql+redis", marks=pytest.mark.skipif(
    not (PG_URL and REDIS_URL), reason="FLOWCALL_TEST_DATABASE_URL and FLOWCALL_TEST_REDIS_URL are not both set"))]


@pytest.fixture(scope="module")
def fake():
    fp = FakeProvider(latency_ms=50).start()
    yield fp
    fp.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def service(request, fake, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budget")
    extra = {}
    if request.param == "sqlite":
        extra["FLOWCALL_DATABASE_URL"] = fresh_database_url("sqlite", tmp)
    else:
        flush_redis()
        extra["FLOWCALL_DATABASE_URL"] = fresh_database_url("postgresql", tmp)
        extra["FLOWCALL_REDIS_URL"] = REDIS_URL
    env = clean_env({**extra, **provider_env(fake.url)})
    with gunicorn(env, workers=4) as svc:
        yield svc


def post(service, key):
    return requests.post(f"{service['url']}/api/v3/llm/public/call", json=BODY, headers={"X-Api-Key": key},
                         timeout=60)


def burst(service, keys, calls=60):
    with ThreadPoolExecutor(max_workers=calls) as pool:
        return list(pool.map(lambda i: post(service, keys[i % len(keys)]), range(calls)))


def spent(service, key) -> float:
    usage = requests.get(f"{service['url']}/api/v3/llm/usage", headers={"X-Api-Key": key}, timeout=30).json()
    return usage["totals"]["cost"]


def test_a_tiny_budget_admits_one_call_of_sixty(service):
    key, _ = create_key(service["env"], None, "--budget-usd", "0.0001")
    answers = burst(service, [key])
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 1 and statuses.count(402) == 59, sorted(set(statuses))
    refusal = next(a.json()["error"] for a in answers if a.status_code == 402)
    assert refusal["code"] == "budget_exceeded_key" and "budget of $0.0001 is spent" in refusal["message"]
    assert spent(service, key) == pytest.approx(COST_PER_CALL)


def test_concurrent_calls_overspend_by_at_most_one_reservation(service):
    key, _ = create_key(service["env"], None, "--budget-usd", "0.002")
    answers = burst(service, [key])
    served = sum(a.status_code == 200 for a in answers)
    assert served >= 1 and served + sum(a.status_code == 402 for a in answers) == 60
    assert spent(service, key) == pytest.approx(served * COST_PER_CALL)
    assert spent(service, key) < 0.002 + RESERVATION


def test_a_tenant_budget_holds_across_its_keys_and_workers(service):
    tenant = str(uuid.uuid4())
    keys = [create_key(service["env"], tenant)[0] for _ in range(3)]
    subprocess.run([sys.executable, "-m", "app.cli", "tenants", "set", tenant, "--budget-usd", "0.0015"],
                   cwd=ROOT, env=service["env"], capture_output=True, check=True)
    answers = burst(service, keys)
    served = sum(a.status_code == 200 for a in answers)
    assert served >= 1
    assert {a.json()["error"]["code"] for a in answers if a.status_code != 200} == {"budget_exceeded_tenant"}
    assert served * COST_PER_CALL < 0.0015 + RESERVATION
