"""Counters, idempotency and the ledger stay exact across 4 gunicorn workers, on SQLite and on
PostgreSQL + Redis (when FLOWCALL_TEST_DATABASE_URL / FLOWCALL_TEST_REDIS_URL are set)."""
from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from backends import SERVICE_BACKENDS, service_backend_env
from fake_answers import openai_answer
from service import create_key, e2e_service

pytestmark = pytest.mark.e2e
COST_PER_CALL = (12 * 2.5 + 7 * 10) / 1e6          # the fake's usage at gpt-4o prices


@pytest.fixture(scope="module", params=SERVICE_BACKENDS)
def service(request, fake, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("concurrency")
    with e2e_service(tmp, fake, workers=4, extra_env=service_backend_env(request.param, tmp)) as svc:
        yield svc


def post(url, key, body, **headers):
    return requests.post(f"{url}/api/v3/llm/public/call", json=body, headers={"X-Api-Key": key, **headers},
                         timeout=60)


def test_rate_limit_is_exact_across_workers_and_every_call_is_in_the_ledger(service, fake):
    key, _ = create_key(service["env"], None, "--rpm", "50")
    body = {"model": "openai.gpt-4o", "prompt": "hi"}
    with ThreadPoolExecutor(max_workers=64) as pool:
        answers = list(pool.map(lambda _: post(service["url"], key, body), range(200)))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 50 and statuses.count(429) == 150, sorted(Counter(statuses).items())
    assert all(a.json()["error"]["code"] == "rpm_exceeded_key" for a in answers if a.status_code == 429)
    answered_cost = sum(a.json()["cost"] for a in answers if a.status_code == 200)
    usage = requests.get(f"{service['url']}/api/v3/llm/usage", headers={"X-Api-Key": key}, timeout=30).json()
    assert usage["totals"]["calls"] == 200 and usage["totals"]["errors"] == 150
    assert usage["totals"]["cost"] == pytest.approx(answered_cost) == pytest.approx(50 * COST_PER_CALL)


def test_concurrent_repeats_of_one_idempotency_key_make_one_provider_call(service, fake):
    key, _ = create_key(service["env"])
    requests.post(f"{fake.url}/_fake/reset", timeout=5)
    body = {"model": "openai.gpt-4o", "prompt": "invoice 42"}
    fake.release.clear()
    held = openai_answer({"model": "gpt-4o", "messages": [{"role": "user", "content": "invoice 42"}]})
    requests.post(f"{fake.url}/_fake/script", timeout=5, json=[{"hang": 30, "body": held}])
    idem = {"Idempotency-Key": f"make-{uuid.uuid4()}"}
    with ThreadPoolExecutor(max_workers=20) as pool:
        first = pool.submit(post, service["url"], key, body, **idem)
        while not requests.get(f"{fake.url}/_fake/requests", timeout=5).json():
            assert not first.done(), first.result().text    # it ended without reaching the provider
        repeats = list(pool.map(lambda _: post(service["url"], key, body, **idem), range(19)))
        assert {r.status_code for r in repeats} == {409}
        assert all(r.json()["error"]["code"] == "idempotency_in_progress" for r in repeats)
        fake.release.set()                                  # let the provider answer
        assert first.result().status_code == 200
    replay = post(service["url"], key, body, **idem)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replay"] == "true"
    assert replay.json() == first.result().json()
    assert len(requests.get(f"{fake.url}/_fake/requests", timeout=5).json()) == 1
    usage = requests.get(f"{service['url']}/api/v3/llm/usage", headers={"X-Api-Key": key}, timeout=30).json()
    assert usage["totals"]["calls"] == 1                    # 409s and the replay are not calls
