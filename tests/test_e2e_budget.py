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

from backends import SERVICE_BACKENDS, service_backend_env
from fake_provider import FakeProvider
from service import ROOT, create_key, e2e_service

pytestmark = pytest.mark.e2e
BODY = {"model": "openai.gpt-4o", "prompt": "hi", "options": {"maxTokens": 50}}
RESERVATION = (2 * 2.5 + 50 * 10) / 1e6       # "hi" is 2 bytes, 50 output tokens, at gpt-4o prices
COST_PER_CALL = (12 * 2.5 + 7 * 10) / 1e6      # what the fake's usage costs


@pytest.fixture(scope="module")
def fake():
    with FakeProvider(latency_ms=50) as fp:
        yield fp


@pytest.fixture(scope="module", params=SERVICE_BACKENDS)
def service(request, fake, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budget")
    with e2e_service(tmp, fake, workers=4, extra_env=service_backend_env(request.param, tmp)) as svc:
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
