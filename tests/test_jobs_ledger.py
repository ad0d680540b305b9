"""A job retaken after its worker died mid-call: every call the dead worker had in flight gets one
ledger row `interrupted` before it is made again, an item whose answer was saved is never called
again, and the ledger holds exactly one row per provider call, on SQLite and PostgreSQL."""
from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter

import pytest
import requests
from sqlalchemy import inspect, select

from app.batch.items import item_request_id
from app.tenancy.db import ledger, make_engine
from app.batch.job_calls import job_calls
from app.batch.jobs import Jobs
from backends import DATABASES, fresh_database_url
from batch_fakes import FakeLLM
from service import ROOT, _wait_ready, clean_env, create_key, free_port
from test_jobs import JOBS, SECRET, Clock, drain, new_key, status, submit, _until


class _Killed(BaseException):
    """Stands for kill -9 while a call is in flight: its answer never reaches the ledger."""


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path):
    return fresh_database_url(request.param, tmp_path)


@pytest.fixture
def fake():
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture
def config(config, fake, database_url, tmp_path):
    return {**config, **fake.env(), "FLOWCALL_DATABASE_URL": database_url, "FLOWCALL_BREAKER_THRESHOLD": "1000",
            "FLOWCALL_JOBS_PATH": str(tmp_path / "q.db"), "FLOWCALL_JOB_LEASE_S": "30"}


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def app(app, clock):
    app.extensions["flowcall"].jobs = Jobs(app.extensions["flowcall"], clock=clock)
    return app


@pytest.fixture
def worker(app) -> Jobs:
    return app.extensions["flowcall"].jobs


@pytest.fixture
def store(app):
    return app.extensions["flowcall"].store


def ledger_rows(engine, tenant) -> list:
    with engine.connect() as conn:
        return conn.execute(select(ledger.c.request_id, ledger.c.status, ledger.c.error_code, ledger.c.input_tokens,
                                   ledger.c.output_tokens, ledger.c.cost, ledger.c.model_requested)
                            .where(ledger.c.tenant_id == tenant)).all()


def die_before_the_ledger_row(monkeypatch, store_app, doomed: set[str]):
    """The provider answers, then the worker dies before the answer's ledger row: a call in flight."""
    gateway = store_app.extensions["flowcall"].gateway
    account = gateway.account

    def dying(principal, endpoint, call, **kwargs):
        if call is not None and call.request_id in doomed:
            doomed.discard(call.request_id)
            raise _Killed()
        return account(principal, endpoint, call, **kwargs)

    monkeypatch.setattr(gateway, "account", dying)


def retake(worker: Jobs, clock: Clock) -> None:
    clock.now += worker.settings.lease_s + 1
    assert worker.recover() == 1


def test_a_batch_item_killed_in_flight_twice_has_a_ledger_row_per_call(app, client, store, worker, fake, clock,
                                                                        monkeypatch):
    key, tenant = new_key(store)
    body = {"items": [{"prompt": "first"}, {"prompt": "second", "model": "openai.gpt-4o-mini"}, {"prompt": "third"}],
            "defaults": {"model": "openai.gpt-4o"}, "concurrency": 1}
    job_id = submit(client, key, body).get_json()["job_id"]
    rid = worker.store.get(job_id)["request_id"]
    second = item_request_id(rid, 1)
    for _ in range(2):                                         # killed in flight, retaken, killed again
        die_before_the_ledger_row(monkeypatch, app, {second})
        with pytest.raises(_Killed):
            drain(worker)
        monkeypatch.undo()
        retake(worker, clock)
    drain(worker)
    done = status(client, key, job_id).get_json()
    assert done["status"] == "done" and [r["success"] for r in done["result"]["results"]] == [True, True, True]
    assert fake.prompts == {"first": 1, "second": 3, "third": 1}
    rows = ledger_rows(store.engine, tenant)
    assert len(rows) == sum(fake.prompts.values()) == 5
    assert sorted((r.status, r.error_code) for r in rows if r.request_id == second) == [
        (200, None), (499, "interrupted"), (499, "interrupted")]
    for r in rows:
        if r.status == 499:
            assert (r.input_tokens, r.output_tokens, r.cost, r.model_requested) == (0, 0, None, "openai.gpt-4o-mini")
    assert Counter(r.request_id for r in rows if r.status == 200) == {item_request_id(rid, i): 1 for i in range(3)}


def test_only_unsaved_items_in_flight_are_recorded_and_called_again(app, client, store, worker, fake, clock,
                                                                     monkeypatch):
    key, tenant = new_key(store)
    body = {"items": [{"prompt": f"item {i}"} for i in range(4)], "defaults": {"model": "openai.gpt-4o"},
            "concurrency": 1}
    job_id = submit(client, key, body).get_json()["job_id"]
    rid = worker.store.get(job_id)["request_id"]
    die_before_the_ledger_row(monkeypatch, app, {item_request_id(rid, 2)})
    with pytest.raises(_Killed):
        drain(worker)
    monkeypatch.undo()
    assert status(client, key, job_id).get_json()["progress"] == {"done": 2, "total": 4}
    retake(worker, clock)
    drain(worker)
    assert fake.prompts == {"item 0": 1, "item 1": 1, "item 2": 2, "item 3": 1}
    rows = ledger_rows(store.engine, tenant)
    assert len(rows) == sum(fake.prompts.values())
    assert [r.request_id for r in rows if r.status == 499] == [item_request_id(rid, 2)]


def test_a_call_job_killed_in_flight_is_recorded_then_called_again(app, client, store, worker, fake, clock,
                                                                   monkeypatch):
    key, tenant = new_key(store)
    job_id = submit(client, key, {"model": "openai.gpt-4o", "prompt": "only"}).get_json()["job_id"]
    rid = worker.store.get(job_id)["request_id"]
    die_before_the_ledger_row(monkeypatch, app, {rid})
    with pytest.raises(_Killed):
        drain(worker)
    monkeypatch.undo()
    retake(worker, clock)
    drain(worker)
    done = status(client, key, job_id).get_json()
    assert done["status"] == "done" and done["result"]["response"] == "Echo: only"
    assert fake.prompts == {"only": 2}
    rows = ledger_rows(store.engine, tenant)
    assert sorted((r.request_id, r.status, r.model_requested) for r in rows) == [
        (rid, 200, "openai.gpt-4o"), (rid, 499, "openai.gpt-4o")]


def test_a_job_killed_before_any_call_records_nothing(client, store, worker, fake, clock):
    key, tenant = new_key(store)
    job_id = submit(client, key, {"items": [{"prompt": "a"}, {"prompt": "b"}],
                                  "defaults": {"model": "openai.gpt-4o"}}).get_json()["job_id"]
    assert worker.queue.dequeue() is not None and worker.store.claim(job_id, worker.settings.lease_s)
    retake(worker, clock)                                      # the worker died right after its claim
    drain(worker)
    assert fake.prompts == {"a": 1, "b": 1}
    assert sorted(r.status for r in ledger_rows(store.engine, tenant)) == [200, 200]


def test_the_notes_go_with_their_job(store, worker, client, clock):
    key, _ = new_key(store)
    job_id = submit(client, key, {"model": "mock.echo", "prompt": "x"}).get_json()["job_id"]
    drain(worker)
    insp = inspect(store.engine)
    assert {c["name"] for c in insp.get_columns("job_calls")} == {c.name for c in job_calls.columns}
    with store.engine.connect() as conn:
        assert conn.execute(select(job_calls.c.starts).where(job_calls.c.job_id == job_id)).scalars().all() == [1]
    import datetime
    assert worker.store.purge(datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)) == 1
    with store.engine.connect() as conn:
        assert conn.execute(select(job_calls).where(job_calls.c.job_id == job_id)).all() == []


# -- the real thing: `flowcall worker` killed with kill -9 while calls are held at the provider ----------
def _worker(env: dict, logs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--workers", "2"],
                            cwd=ROOT, env=env, stdout=logs, stderr=logs)


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=30)


@pytest.mark.e2e
def test_kill_9_mid_batch_leaves_one_ledger_row_per_provider_call(tmp_path, fake, database_url):
    fake.hold = lambda prompt: prompt.startswith("slow")      # these wait at the provider for `release`
    env = clean_env({"FLOWCALL_DATABASE_URL": database_url, **fake.env(),
                     "FLOWCALL_JOBS_PATH": str(tmp_path / "jobs-queue.db"), "FLOWCALL_JOB_LEASE_S": "2",
                     "FLOWCALL_CALLBACK_SECRET": SECRET, "FLOWCALL_BREAKER_THRESHOLD": "1000"})
    key, tenant = create_key(env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    items = [{"prompt": "quick 0"}, {"prompt": "quick 1"}] + [{"prompt": f"slow {i}"} for i in range(4)]
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}",
                            "--pythonpath", "tests", "wsgi_batch:app"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(tmp_path / "worker.log", "ab") as logs:
        worker = _worker(env, logs)
        try:
            _wait_ready(url, web)
            resp = requests.post(f"{url}{JOBS}", headers={"X-Api-Key": key}, timeout=30, json={
                "items": items, "defaults": {"model": "openai.gpt-4o"}, "concurrency": 4})
            assert resp.status_code == 202, resp.text
            job_id = resp.json()["job_id"]

            def job():
                return requests.get(f"{url}{JOBS}/{job_id}", headers={"X-Api-Key": key}, timeout=30).json()
            _until(lambda: fake.held >= 4 and job()["progress"]["done"] == 2, "4 calls held and 2 items saved")
            worker.kill()                                      # kill -9 with four calls in flight
            worker.wait(timeout=30)
            worker = _worker(env, logs)
            fake.release.set()
            done = _until(lambda: (lambda j: j if j["status"] == "done" else None)(job()), "the retaken job")
        finally:
            fake.release.set()
            _stop(worker, signal.SIGINT)
            _stop(web)
    assert [r["success"] for r in done["result"]["results"]] == [True] * 6
    assert fake.prompts == {"quick 0": 1, "quick 1": 1, "slow 0": 2, "slow 1": 2, "slow 2": 2, "slow 3": 2}
    engine = make_engine(database_url)
    try:
        rows = ledger_rows(engine, tenant)
    finally:
        engine.dispose()
    assert len(rows) == sum(fake.prompts.values()) == 10
    rid = done["request_id"]
    assert Counter((r.request_id, r.status) for r in rows) == {
        **{(item_request_id(rid, i), 200): 1 for i in range(6)},
        **{(item_request_id(rid, i), 499): 1 for i in range(2, 6)}}
