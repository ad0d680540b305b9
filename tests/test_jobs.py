"""Asynchronous jobs: submitted at once, run from the Huey queue, read back by their own tenant only,
called back once (signed, retried with backoff, SSRF-guarded), and carried over a worker's death
and a restart of the whole service."""
from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
import requests
from sqlalchemy import inspect

from app.batch import callbacks
from app.config import default_queue_path
from app.batch.job_store import job_items, jobs
from app.batch.jobs import Jobs
from nodes import create_app
from app.tenancy.store import Limits
from batch_fakes import FakeLLM, Receiver
from service import ROOT, _wait_ready, clean_env, create_key, free_port

JOBS = "/api/v3/llm/jobs"
SECRET = "whsec-test-0123456789abcdef"
FAR_FUTURE = datetime.datetime(2100, 1, 1)
SINGLE_KEYS = {"success", "response", "data", "model", "provider", "finish_reason", "usage", "cost", "latency_ms",
               "routing", "warnings", "request_id", "tool_calls"}


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake():
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def config(config, fake, tmp_path):
    return {**config, **fake.env(), "FLOWCALL_BREAKER_THRESHOLD": "1000", "FLOWCALL_CALLBACK_SECRET": SECRET,
            "FLOWCALL_ALLOW_PRIVATE_CALLBACK_HOSTS": "127.0.0.1", "FLOWCALL_JOBS_PATH": str(tmp_path / "q.db"),
            "FLOWCALL_CALLBACK_RETRY_DELAY_S": "5", "FLOWCALL_JOB_LEASE_S": "30"}


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


def new_key(store, tenant=None) -> tuple[str, str]:
    tenant = tenant or str(uuid.uuid4())
    _, key = store.create_key(tenant, limits=Limits())
    return key, tenant


def drain(worker: Jobs, limit: int = 50) -> int:
    """Run every task the queue holds now, as a consumer would (a task due later goes to the
    schedule); returns how many were taken."""
    for taken in range(limit):
        task = worker.queue.dequeue()
        if task is None:
            return taken
        worker.queue.execute(task)
    raise AssertionError("the queue did not drain")


def run_scheduled(worker: Jobs) -> int:
    """Run every scheduled task (a callback retry) now, whatever its time; then drain."""
    tasks = worker.queue.read_schedule(FAR_FUTURE)
    for task in tasks:
        worker.queue.execute(task, timestamp=FAR_FUTURE)
    return len(tasks) + drain(worker)


def submit(client, key, body, **headers):
    return client.post(JOBS, json=body, headers={"X-Api-Key": key, **headers})


def status(client, key, job_id):
    return client.get(f"{JOBS}/{job_id}", headers={"X-Api-Key": key})


def verified(post: dict, now: float | None = None) -> bool:
    h = post["headers"]
    return callbacks.verify(SECRET, h.get("X-Flowcall-Timestamp"), h.get("X-Flowcall-Signature"), post["body"],
                            now=now)


# -- the happy paths --------------------------------------------------------------------------------
def test_call_job_runs_and_its_callback_arrives_once_signed(client, store, worker, receiver, fake, clock):
    key, tenant = new_key(store)
    resp = submit(client, key, {"model": "openai.gpt-4o", "prompt": "extract the invoice",
                                "callback_url": f"{receiver.url}/resume/abc?token=1"})
    queued = resp.get_json()
    assert resp.status_code == 202, queued
    job_id = queued["job_id"]
    assert queued["status"] == "queued" and queued["result"] is None and queued["kind"] == "call"
    assert queued["status_url"] == f"http://localhost{JOBS}/{job_id}" == resp.headers["Location"]
    assert queued["callback"] == {"url": f"{receiver.url}/resume/abc?token=1", "state": "waiting", "attempts": 0,
                                  "last_error": None}
    assert status(client, key, job_id).get_json()["status"] == "queued" and not fake.bodies

    assert drain(worker) == 2                                  # the job, then its callback
    done = status(client, key, job_id).get_json()
    assert done["status"] == "done" and done["progress"] == {"done": 1, "total": 1}
    assert set(done["result"]) == SINGLE_KEYS and done["result"]["response"] == "Echo: extract the invoice"
    assert done["callback"]["state"] == "delivered" and done["callback"]["attempts"] == 1
    assert done["finished_at"].endswith("Z") and done["started_at"] <= done["finished_at"]

    [post] = receiver.posts
    assert post["path"] == "/resume/abc?token=1" and verified(post, now=clock.now)
    assert post["headers"]["X-Flowcall-Job-Id"] == job_id
    assert post["headers"]["X-Flowcall-Signature"].startswith("sha256=")
    delivered = json.loads(post["body"])
    assert delivered == {k: v for k, v in done.items() if k != "callback"}
    assert drain(worker) == 0 and len(receiver.posts) == 1
    worker.deliver(job_id)                                     # a stray duplicate task sends nothing
    assert len(receiver.posts) == 1
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT endpoint, status FROM ledger WHERE tenant_id = ?", (tenant,)).all()
    assert [tuple(r) for r in rows] == [("job", 200)]


def test_batch_job_answers_the_batch_endpoints_shape(app, client, store, worker, fake):
    key, _ = new_key(store)
    body = {"items": [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "[500] two"}, {"prompt": "three"}],
            "defaults": {"model": "openai.gpt-4o"}, "concurrency": 2}
    job = submit(client, key, body).get_json()
    assert job["kind"] == "batch" and job["progress"] == {"done": 0, "total": 3} and job["callback"] is None
    drain(worker)
    done = status(client, key, job["job_id"]).get_json()
    sync = client.post("/api/v3/llm/batch", json=body, headers={"X-Api-Key": key}).get_json()
    assert done["status"] == "done" and set(done["result"]) == set(sync)
    result = done["result"]
    assert (result["succeeded"], result["failed"]) == (2, 1)
    assert [(r["index"], r["id"], r["success"]) for r in result["results"]] == [
        (0, "a", True), (1, "b", False), (2, None, True)]
    assert result["results"][1]["error"]["code"] == "provider_overloaded"


def test_single_call_job_that_fails_is_failed_with_the_error_body(client, store, worker):
    key, _ = new_key(store)
    job = submit(client, key, {"model": "openai.gpt-4o", "prompt": "[500] nope"}).get_json()
    drain(worker)
    done = status(client, key, job["job_id"]).get_json()
    assert done["status"] == "failed"
    assert set(done["result"]) == {"success", "error", "request_id"}
    assert done["result"]["error"]["code"] == "provider_overloaded"


# -- who may see what -------------------------------------------------------------------------------
def test_another_tenants_job_is_not_found(client, store, worker):
    key_a, _ = new_key(store)
    key_b, _ = new_key(store)
    job_id = submit(client, key_a, {"model": "mock.echo", "prompt": "mine"}).get_json()["job_id"]
    assert status(client, key_a, job_id).status_code == 200
    assert status(client, key_a, job_id.upper()).status_code == 200
    for other in (status(client, key_b, job_id), status(client, key_a, str(uuid.uuid4())),
                  status(client, key_a, "../../etc/passwd"), status(client, key_a, "x" * 300)):
        assert other.status_code == 404 and other.get_json()["error"]["code"] in ("job_not_found", "not_found")
    assert client.get(f"{JOBS}/{job_id}").status_code == 401


# -- submission checks ------------------------------------------------------------------------------
@pytest.mark.parametrize("url, reason", [
    ("http://10.0.0.5/hook", "private address"),
    ("http://0x0a000001/hook", "private address"),
    ("http://169.254.169.254/latest/meta-data", "link-local address"),
    ("http://[::1]:8080/hook", "loopback address"),
    ("http://0.0.0.0/hook", "unspecified address"),
    ("ftp://example.com/hook", "unsupported scheme"),
    ("http://user:pw@127.0.0.1/hook", "credentials in URL"),
    ("https:///nohost", "no host"),
    ("http://127.0.0.1/a b", "invalid URL"),
])
def test_callback_url_is_ssrf_guarded_at_submission(client, store, url, reason):
    key, _ = new_key(store)
    resp = submit(client, key, {"model": "mock.echo", "prompt": "x", "callback_url": url})
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["error"]["fields"] == {"callback_url": reason}
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM jobs").scalar_one() == 0


def test_callback_address_is_checked_again_at_delivery():
    """DNS may change between submission and delivery: the worker checks (and dials) again."""
    def rebinding(host, port, **kw):
        return [(2, 1, 6, "", ("10.1.2.3", port))]
    with pytest.raises(callbacks.CallbackFailed) as info:
        callbacks.post("http://hooks.example.com/x", b"{}", secret=SECRET, job_id="j", resolver=rebinding)
    assert "private address" in str(info.value) and info.value.retryable is False


def test_callbacks_need_a_secret(app, client, store):
    jobs_without_secret = app.extensions["flowcall"].jobs
    object.__setattr__(jobs_without_secret.settings, "callback_secret", None)
    key, _ = new_key(store)
    resp = submit(client, key, {"model": "mock.echo", "prompt": "x", "callback_url": "https://example.com/hook"})
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "callbacks_not_configured"


@pytest.mark.parametrize("body, status_code, field", [
    ({"model": "mock.echo"}, 400, "prompt"),
    ({"model": "mock.echo", "prompt": "x", "max_tokens": 3}, 400, "max_tokens"),
    ({"items": "x"}, 400, "items"),
    ({"items": [{}] * 101}, 413, "items"),
    ({"model": "mock.echo", "prompt": "x", "callback_url": 5}, 400, "callback_url"),
])
def test_bad_submissions_are_refused_at_once(client, store, body, status_code, field):
    key, _ = new_key(store)
    resp = submit(client, key, body)
    assert resp.status_code == status_code and field in resp.get_json()["error"]["fields"]


def test_an_unusable_queue_is_a_503_not_a_500(config, tmp_path):
    app = create_app({**config, "FLOWCALL_JOBS_PATH": str(tmp_path / "missing-dir" / "q.db")})
    store = app.extensions["flowcall"].store
    try:
        key, _ = new_key(store)
        resp = submit(app.test_client(), key, {"model": "mock.echo", "prompt": "x"})
        assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "queue_unavailable"
    finally:
        store.close()


def test_idempotent_submission_returns_the_same_job(client, store, worker, fake):
    key, _ = new_key(store)
    body = {"model": "openai.gpt-4o", "prompt": "once"}
    first = submit(client, key, body, **{"Idempotency-Key": "zap-run-9"})
    again = submit(client, key, body, **{"Idempotency-Key": "zap-run-9"})
    assert first.status_code == again.status_code == 202 and again.headers["Idempotent-Replay"] == "true"
    assert again.get_json()["job_id"] == first.get_json()["job_id"]
    assert submit(client, key, {**body, "prompt": "twice"}, **{"Idempotency-Key": "zap-run-9"}).status_code == 422
    drain(worker)
    assert fake.prompts["once"] == 1


# -- callbacks: retries and giving up ---------------------------------------------------------------
def test_callback_is_retried_with_backoff_until_the_receiver_takes_it(client, store, worker, clock):
    receiver = Receiver(statuses=[500, 503]).start()
    try:
        key, _ = new_key(store)
        job_id = submit(client, key, {"model": "mock.echo", "prompt": "x",
                                      "callback_url": f"{receiver.url}/hook"}).get_json()["job_id"]
        drain(worker)
        job = status(client, key, job_id).get_json()["callback"]
        assert (job["state"], job["attempts"], job["last_error"]) == ("pending", 1, "the receiver answered HTTP 500")
        assert worker.queue.scheduled_count() == 1
        assert worker.store.get(job_id)["callback_next_at"] == pytest.approx(clock.now + 5)
        assert run_scheduled(worker) == 1 and len(receiver.posts) == 1      # fired early: nothing sent
        clock.now += 5 + worker.settings.lease_s + 1                        # that attempt is now lost ...
        assert worker.recover() == 1                                         # ... and the reaper revives it
        drain(worker)
        assert len(receiver.posts) == 2
        assert worker.store.get(job_id)["callback_next_at"] == pytest.approx(clock.now + 10)   # doubled
        clock.now += 10
        assert run_scheduled(worker) == 1
        job = status(client, key, job_id).get_json()["callback"]
        assert (job["state"], job["attempts"], job["last_error"]) == ("delivered", 3, None)
        assert len(receiver.posts) == 3 and all(verified(p, now=clock.now) for p in receiver.posts)
        assert len({p["body"] for p in receiver.posts}) == 1                # the same document each time
    finally:
        receiver.stop()


@pytest.mark.parametrize("statuses, attempts, expected_attempts", [([410], 8, 1), ([500, 500, 500], 2, 2),
                                                                   ([302], 8, 1)])
def test_callback_gives_up_on_permanent_answers_and_after_its_attempts(app, client, store, worker, clock,
                                                                       statuses, attempts, expected_attempts):
    object.__setattr__(worker.settings, "callback_attempts", attempts)
    receiver = Receiver(statuses=statuses).start()
    try:
        key, _ = new_key(store)
        job_id = submit(client, key, {"model": "mock.echo", "prompt": "x",
                                      "callback_url": f"{receiver.url}/hook"}).get_json()["job_id"]
        drain(worker)
        for _ in range(attempts):
            clock.now += 3600
            run_scheduled(worker)
        job = status(client, key, job_id).get_json()["callback"]
        assert job["state"] == "failed" and job["attempts"] == expected_attempts == len(receiver.posts)
        assert job["last_error"] == f"the receiver answered HTTP {statuses[0]}"
    finally:
        receiver.stop()


def test_retry_delay_doubles_and_is_capped(worker):
    assert [worker.retry_delay(a) for a in (1, 2, 3)] == [5, 10, 20]
    assert worker.retry_delay(30) == 3600


# -- a worker that dies -----------------------------------------------------------------------------
def test_a_dead_workers_batch_is_retaken_without_rerunning_finished_items(client, store, worker, fake, clock):
    key, _ = new_key(store)
    body = {"items": [{"prompt": "first"}, {"prompt": "second"}, {"prompt": "third"}],
            "defaults": {"model": "openai.gpt-4o"}}
    job_id = submit(client, key, body).get_json()["job_id"]
    assert worker.queue.dequeue() is not None                  # a worker took the task ...
    assert worker.store.claim(job_id, worker.settings.lease_s) is not None
    paid_for = {"index": 0, "id": None, "success": True, "response": "kept", "usage": {"input_tokens": 1,
                "output_tokens": 1, "total_tokens": 2}, "cost": 0.0}
    worker.store.save_item(job_id, 0, paid_for)                # ... finished the first item, and died
    assert status(client, key, job_id).get_json()["progress"] == {"done": 1, "total": 3}
    assert worker.recover() == 0                               # its lease still runs: not an orphan yet
    clock.now += worker.settings.lease_s + 1
    assert worker.recover() == 1 and worker.recover() == 0     # re-enqueued once
    assert worker.store.get(job_id)["status"] == "queued"
    drain(worker)
    done = status(client, key, job_id).get_json()
    assert done["status"] == "done" and done["result"]["results"][0]["response"] == "kept"
    assert [r["response"] for r in done["result"]["results"][1:]] == ["Echo: second", "Echo: third"]
    assert "first" not in fake.prompts and fake.prompts["second"] == fake.prompts["third"] == 1
    assert worker.store.get(job_id)["runs"] == 2


def test_an_interrupted_task_hands_its_job_over_at_once(client, store, worker, clock):
    key, _ = new_key(store)
    job_id = submit(client, key, {"model": "mock.echo", "prompt": "x"}).get_json()["job_id"]
    task = worker.queue.dequeue()
    worker.store.claim(job_id, worker.settings.lease_s)
    worker._interrupted("interrupted", task)                   # huey's signal on SIGTERM mid-task
    assert worker.recover() == 1
    drain(worker)
    assert status(client, key, job_id).get_json()["status"] == "done"


def test_a_job_enqueued_twice_runs_once(client, store, worker, fake):
    key, _ = new_key(store)
    job_id = submit(client, key, {"model": "openai.gpt-4o", "prompt": "only once"}).get_json()["job_id"]
    worker.run_task(job_id)
    assert drain(worker) == 2 and fake.prompts["only once"] == 1


def test_a_revoked_key_stops_its_queued_jobs(client, store, worker, fake):
    key, _ = new_key(store)
    job_id = submit(client, key, {"model": "openai.gpt-4o", "prompt": "x"}).get_json()["job_id"]
    store.revoke_key(key.split("_")[1])
    drain(worker)
    row = worker.store.get(job_id)
    assert row["status"] == "failed" and json.loads(row["result"])["error"]["code"] == "invalid_api_key"
    assert not fake.bodies


# -- storage ----------------------------------------------------------------------------------------
def test_the_migration_creates_the_job_tables(store):
    insp = inspect(store.engine)
    for table in (jobs, job_items):
        assert {c["name"] for c in insp.get_columns(table.name)} == {c.name for c in table.columns}


@pytest.mark.parametrize("url, expected", [
    ("sqlite:////var/lib/flowcall/flowcall.db", "/var/lib/flowcall/flowcall-jobs.db"),
    ("sqlite:///flowcall.db", "flowcall-jobs.db"),
    ("sqlite://", "flowcall-jobs.db"),
    ("postgresql+psycopg://u@h/db", "flowcall-jobs.db"),
])
def test_queue_file_defaults_beside_the_sqlite_store(url, expected):
    assert default_queue_path(url) == expected


def test_signature_recipe():
    body = b'{"job_id":"x"}'
    ts = 1_800_000_000
    signature = callbacks.sign(SECRET, ts, body)
    assert callbacks.verify(SECRET, str(ts), signature, body, now=ts + 10)
    assert not callbacks.verify(SECRET, str(ts), signature, body + b" ", now=ts)           # body changed
    assert not callbacks.verify(SECRET, str(ts + 1), signature, body, now=ts)              # timestamp changed
    assert not callbacks.verify(SECRET, str(ts), signature, body, now=ts + 301)            # replayed later
    assert not callbacks.verify("other-secret", str(ts), signature, body, now=ts)
    assert not callbacks.verify(SECRET, None, signature, body, now=ts)


# -- the real thing: gunicorn + `flowcall worker`, both restarted mid-job ---------------------------
def _start_service(env: dict, port: int, logs) -> tuple[subprocess.Popen, subprocess.Popen]:
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}",
                            "--pythonpath", "tests", "wsgi_batch:app"],
                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--workers", "2"],
                              cwd=ROOT, env=env, stdout=logs, stderr=logs)
    _wait_ready(f"http://127.0.0.1:{port}", web)
    return web, worker


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=30)
    if proc.stderr:
        proc.stderr.close()


def _until(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.e2e
def test_a_job_survives_a_restart_and_calls_back_once_signed(tmp_path, fake, receiver):
    from conftest import migrated_db_url
    fake.hold = lambda prompt: True                        # every provider call waits for `release`
    env = clean_env({"FLOWCALL_DATABASE_URL": migrated_db_url(tmp_path), **fake.env(),
                     "FLOWCALL_JOBS_PATH": str(tmp_path / "jobs-queue.db"), "FLOWCALL_JOB_LEASE_S": "2",
                     "FLOWCALL_CALLBACK_SECRET": SECRET, "FLOWCALL_ALLOW_PRIVATE_CALLBACK_HOSTS": "127.0.0.1",
                     "FLOWCALL_LOG_LEVEL": "INFO"})
    key, _ = create_key(env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "worker.log", "ab") as logs:
        web, worker = _start_service(env, port, logs)
        try:
            resp = requests.post(f"{url}{JOBS}", headers={"X-Api-Key": key}, timeout=30, json={
                "model": "openai.gpt-4o", "prompt": "a long extraction", "callback_url": f"{receiver.url}/n8n/resume"})
            assert resp.status_code == 202, resp.text
            job_id = resp.json()["job_id"]
            _until(lambda: fake.held >= 1, "the worker's provider call")
            assert requests.get(f"{url}{JOBS}/{job_id}", headers={"X-Api-Key": key}, timeout=30).json()[
                "status"] == "running"
            worker.kill()                                   # the worker dies mid-call ...
            worker.wait(timeout=30)
            _stop(web)                                      # ... and the service is restarted
            web, worker = _start_service(env, port, logs)
            fake.release.set()                              # the provider answers from now on
            def finished():
                job = requests.get(f"{url}{JOBS}/{job_id}", headers={"X-Api-Key": key}, timeout=30).json()
                return job if job["status"] == "done" and job["callback"]["state"] == "delivered" else None
            job = _until(finished, "the job to finish after the restart, and its callback")
        finally:
            _stop(worker, signal.SIGINT)
            _stop(web)
    assert job["result"]["success"] is True and job["result"]["response"] == "Echo: a long extraction"
    assert fake.prompts["a long extraction"] == 2            # the dead worker's call, and the rerun
    [post] = receiver.posts                                  # exactly once, even after the worker stopped
    assert post["path"] == "/n8n/resume" and verified(post)
    assert json.loads(post["body"])["job_id"] == job_id and json.loads(post["body"])["status"] == "done"
    assert os.path.exists(tmp_path / "jobs-queue.db")



# -- a worker killed between paying for an answer and saving it ------------------------------------
class _Killed(BaseException):
    """Stands for kill -9 right after the ledger row was written (nothing after it runs)."""


def _ledger_rows(store, tenant) -> list:
    from sqlalchemy import select
    from app.tenancy.db import ledger
    with store.engine.connect() as conn:
        return conn.execute(select(ledger.c.request_id, ledger.c.status).where(ledger.c.tenant_id == tenant)).all()


def test_a_batch_item_answered_but_not_saved_is_not_called_again(client, store, worker, fake, clock, monkeypatch):
    key, tenant = new_key(store)
    body = {"items": [{"prompt": "first"}, {"prompt": "second", "id": "b"}, {"prompt": "third"}],
            "defaults": {"model": "openai.gpt-4o"}, "concurrency": 1}
    job_id = submit(client, key, body).get_json()["job_id"]
    save = type(worker.store).save_item

    def die_saving_the_second(self, job, index, result):
        if index == 1:
            raise _Killed()
        save(self, job, index, result)

    monkeypatch.setattr(type(worker.store), "save_item", die_saving_the_second)
    with pytest.raises(_Killed):
        drain(worker)
    monkeypatch.setattr(type(worker.store), "save_item", save)
    assert len(_ledger_rows(store, tenant)) == 2               # first and second paid for; second not saved
    clock.now += worker.settings.lease_s + 1
    assert worker.recover() == 1
    drain(worker)
    done = status(client, key, job_id).get_json()
    results = done["result"]["results"]
    assert done["status"] == "done" and [r["success"] for r in results] == [True, False, True]
    assert results[1]["error"]["code"] == "answer_lost" and results[1]["id"] == "b" and results[1]["index"] == 1
    assert fake.prompts == {"first": 1, "second": 1, "third": 1}   # nothing reached the provider twice
    rows = _ledger_rows(store, tenant)
    assert len(rows) == 3 and len({r.request_id for r in rows}) == 3


def test_a_call_job_answered_but_not_finished_is_not_called_again(client, store, worker, fake, clock, monkeypatch):
    key, tenant = new_key(store)
    job_id = submit(client, key, {"model": "openai.gpt-4o", "prompt": "only"}).get_json()["job_id"]

    def die_finishing(*args, **kwargs):
        raise _Killed()

    finish = type(worker.store).finish
    monkeypatch.setattr(type(worker.store), "finish", die_finishing)
    with pytest.raises(_Killed):
        drain(worker)
    monkeypatch.setattr(type(worker.store), "finish", finish)
    clock.now += worker.settings.lease_s + 1
    assert worker.recover() == 1
    drain(worker)
    done = status(client, key, job_id).get_json()
    assert done["status"] == "failed" and done["result"]["error"]["code"] == "answer_lost"
    assert fake.prompts == {"only": 1} and len(_ledger_rows(store, tenant)) == 1
