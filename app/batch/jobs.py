"""Asynchronous jobs: a call or a batch accepted at once, run by `flowcall worker`, its result read
by id or POSTed to a callback. Zapier kills an action step after 30 s and Make's HTTP module after
40 s; a long extraction or a large batch does not fit in one request, so it becomes a job.

Where things live:
- the job record (who, what, status, result, callback state) is ours, in the `jobs` table, with a
  `job_items` row per finished batch item, so a resumed batch skips what it already paid for
  (app/batch/job_store.py);
- the queue is Huey's: SqliteHuey in one file (FLOWCALL_JOBS_PATH) for one machine, RedisHuey when
  FLOWCALL_REDIS_URL is set. The queue only ever says "run job X" or "deliver X's callback".

Surviving restarts: a worker claims a job with a lease (FLOWCALL_JOB_LEASE_S) that it renews while
the job runs. A worker that dies stops renewing, and any worker's reaper re-enqueues a job whose
lease has lapsed. Claims are conditional updates, so a job enqueued twice still runs once at a time.
Callbacks follow the same rule: pending -> sending (leased) -> delivered, or back to pending with
the next attempt's time; once a receiver has answered 2xx, the callback is never sent again.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from datetime import datetime, UTC

from app.batch import callbacks
from app.tenancy.auth import Principal
from app.batch.items import (ItemContext, batch_body, error_body, execute_item, item_request_id, parse_envelope,
                             run_envelope)
from app.config import JobSettings
from app.dashboard import roller
from app.errors import FlowcallError, ServiceUnavailable, Unauthorized
from app.tenancy.idempotency import body_hash
from app.batch.job_calls import note_started, unrecorded
from app.batch.job_store import JobStore
from app.tenancy.purge import purge_expired
from app.batch.resume import answer_lost, answered, record_interrupted
from app.schemas import CallSchema, load
from app.tenancy.store import Limits

_CALL_SCHEMA = CallSchema()      # built once, as nodes/call.py's is

log = logging.getLogger(__name__)

RUN_TASK = "flowcall.run_job"
DELIVER_TASK = "flowcall.deliver_callback"
CALLBACK_MAX_DELAY_S = 3600.0
CALLBACK_LEASE_S = 3 * callbacks.TIMEOUT_S       # one attempt dials at most a few addresses


def make_queue(settings: JobSettings):
    from huey import RedisHuey, SqliteHuey
    if settings.redis_url:
        return RedisHuey("flowcall", url=settings.redis_url, results=False, utc=True)
    return SqliteHuey("flowcall", filename=settings.queue_path, results=False, utc=True)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:                 # SQLite keeps no zone: we always write UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Heartbeat:
    """Renews a running job's lease so no reaper mistakes a long job for a dead worker's."""

    def __init__(self, store: JobStore, job_id: str, lease_s: float):
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, args=(store, job_id, lease_s), daemon=True,
                                       name=f"lease-{job_id[:8]}")

    def _beat(self, store, job_id, lease_s):
        while not self.stopped.wait(lease_s / 3):
            try:
                store.renew(job_id, lease_s)
            except Exception:  # noqa: BLE001 - a missed renewal is retried at the next beat
                log.exception("could not renew the lease of job %s", job_id)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()


class Jobs:
    """Submit, run, report and call back. One per process; the worker runs the queue's consumer."""

    def __init__(self, services, settings: JobSettings | None = None, queue=None, clock=time.time):
        from huey.signals import SIGNAL_INTERRUPTED
        self.services = services
        self.settings = settings or services.settings.jobs
        self.limits = services.settings.batch
        self.store = JobStore(services.store.engine, clock)
        self.clock = clock
        self.queue = queue if queue is not None else make_queue(self.settings)
        self.run_task = self.queue.task(name=RUN_TASK)(self.run)
        self.deliver_task = self.queue.task(name=DELIVER_TASK)(self.deliver)
        self.queue.signal(SIGNAL_INTERRUPTED)(self._interrupted)
        self._last_purge = 0.0

    # -- submission ---------------------------------------------------------------------------
    def validate(self, body: dict) -> tuple[str, dict, str | None, int]:
        """(kind, what to run, callback URL, item count); the same 400/413s as the synchronous
        endpoints, at submission rather than in the worker."""
        body = dict(body)
        callback_url = body.pop("callback_url", None)
        if callback_url is not None:
            if not self.settings.callback_secret:
                raise ServiceUnavailable(
                    "Callbacks are not configured on this server: set FLOWCALL_CALLBACK_SECRET (receivers "
                    "verify the signature with it), or leave callback_url out and poll status_url.",
                    code="callbacks_not_configured", fields={"callback_url": "callbacks are not configured"})
            callbacks.check_url(callback_url, self.settings.allow_private_callback_hosts)
        if "items" in body:
            return "batch", body, callback_url, len(parse_envelope(body, self.limits).items)
        load(_CALL_SCHEMA, body)
        return "call", body, callback_url, 1

    def submit(self, principal, body: dict, *, request_id: str, status_url_for,
               idempotency_key: str | None = None) -> tuple[int, dict, bool]:
        """(HTTP status, answer, replayed). An Idempotency-Key makes a resubmission return the same job."""
        idem = self.services.gateway.idempotency
        if idempotency_key:
            replay = idem.begin(principal.tenant_id, idempotency_key, body_hash("jobs", body), lock_seconds=30)
            if replay is not None:
                return replay.status, replay.body, True
        try:
            doc = self._create(principal, body, request_id, status_url_for)
        except BaseException:
            if idempotency_key:
                idem.release(principal.tenant_id, idempotency_key)
            raise
        if idempotency_key:
            idem.finish(principal.tenant_id, idempotency_key, 202, doc)
        return 202, doc, False

    def _create(self, principal, body: dict, request_id: str, status_url_for) -> dict:
        kind, request, callback_url, total = self.validate(body)
        job_id = str(uuid.uuid4())
        self.store.insert(id=job_id, tenant_id=principal.tenant_id, agent_id=principal.agent_id,
                          key_id=principal.key_id, kind=kind, status="queued", request=json.dumps(request),
                          request_id=request_id, status_url=status_url_for(job_id), items_total=total,
                          callback_url=callback_url)
        doc = self.status_doc(self.store.get(job_id))     # before a fast worker can make it "running"
        try:
            self.run_task(job_id)
        except Exception:
            log.exception("could not enqueue job %s", job_id)
            err = ServiceUnavailable("The job queue is not reachable; the job was not queued.",
                                     code="queue_unavailable", retryable=True)
            self.store.finish(job_id, "failed", err.status, error_body(err, request_id), False)
            raise err from None
        return doc

    # -- reading ------------------------------------------------------------------------------
    def status(self, job_id: str, tenant_id: str) -> dict | None:
        """The job as its own tenant sees it; None for anyone else's (a 404, not a 403)."""
        job_id = _canonical_uuid(job_id)
        row = self.store.get(job_id, tenant_id) if job_id else None
        return self.status_doc(row) if row else None

    def status_doc(self, row: dict, for_callback: bool = False) -> dict:
        status, total = row["status"], row["items_total"]
        if status in ("done", "failed"):
            done = total
        else:
            done = self.store.count_items(row["id"]) if row["kind"] == "batch" else 0
        doc = {"success": True, "job_id": row["id"], "kind": row["kind"], "status": status,
               "status_url": row["status_url"], "created_at": _iso(row["created_at"]),
               "started_at": _iso(row["started_at"]), "finished_at": _iso(row["finished_at"]),
               "progress": {"done": done, "total": total},
               "result": json.loads(row["result"]) if row["result"] else None,
               "request_id": row["request_id"]}
        if not for_callback:
            doc["callback"] = None if not row["callback_url"] else {
                "url": row["callback_url"], "state": row["callback_state"] or "waiting",
                "attempts": row["callback_attempts"], "last_error": row["callback_error"]}
        return doc

    # -- running (in the worker) --------------------------------------------------------------
    def run(self, job_id: str) -> None:
        row = self.store.claim(job_id, self.settings.lease_s)
        if row is None:
            return                                  # finished, or another worker holds it
        with _Heartbeat(self.store, job_id, self.settings.lease_s):
            try:
                status, result_status, result = self._execute(row)
            except FlowcallError as err:
                status, result_status, result = "failed", err.status, error_body(err, row["request_id"])
            except Exception:  # noqa: BLE001 - the job fails, the worker lives on
                log.exception("job %s failed unexpectedly", job_id)
                err = FlowcallError("Internal error; the request id identifies it in our logs.")
                status, result_status, result = "failed", err.status, error_body(err, row["request_id"])
        self.store.finish(job_id, status, result_status, result, bool(row["callback_url"]))
        if row["callback_url"]:
            self.deliver_task(job_id)

    def _execute(self, row: dict) -> tuple[str, int, dict]:
        svc = self.services
        rid = row["request_id"] or row["id"]
        principal = self._principal(row)
        ctx = ItemContext(svc.gateway, principal, "job", rid, svc.settings.max_image_bytes,
                          before_call=lambda item_rid: note_started(svc.store.engine, row["id"], item_rid))
        request = json.loads(row["request"])
        started = time.perf_counter()
        if row["kind"] == "batch":
            envelope = parse_envelope(request, self.limits)
            skip = self.store.items(row["id"])
            if row["runs"] > 1:             # a dead worker's job: items it was paid for are not called again
                self._record_died_in_flight(row, principal, {
                    item_request_id(rid, i): _item_model(raw, envelope.defaults)
                    for i, raw in enumerate(envelope.items) if i not in skip})
                skip.update(self._lost_items(row, rid, envelope, skip))
            results = run_envelope(ctx, envelope, self.limits, skip=skip,
                                   on_result=lambda i, r: self.store.save_item(row["id"], i, r))
            return "done", 200, batch_body(results, rid, int((time.perf_counter() - started) * 1000))
        if row["runs"] > 1:
            self._record_died_in_flight(row, principal, {rid: request.get("model")})
        if row["runs"] > 1 and answered(svc.store.engine, row["tenant_id"], "job", [rid], since=row["created_at"]):
            err = answer_lost(rid)
            return "failed", err.status, error_body(err, rid)
        status, body = execute_item(ctx, load(_CALL_SCHEMA, request), rid)
        return ("done" if status == 200 else "failed"), status, body

    def _record_died_in_flight(self, row: dict, principal: Principal, models: dict[str, object]) -> None:
        """Calls of unsaved items (request id -> model) that a dead worker started and that never
        wrote their ledger row: one `interrupted` row each (app/batch/job_calls.py), before any is made again."""
        missing = unrecorded(self.services.store.engine, row, "job")
        for item_rid, model in models.items():
            for _ in range(missing.get(item_rid, 0)):
                record_interrupted(self.services.ledger, principal, "job", item_rid,
                                   model if isinstance(model, str) else None)
        lost = sum(missing.get(item_rid, 0) for item_rid in models)
        if lost:
            log.warning("job %s: %d call(s) died in flight with its worker; recorded as interrupted", row["id"], lost)

    def _lost_items(self, row: dict, rid: str, envelope, saved: dict) -> dict[int, dict]:
        """Items of a resumed batch job answered (and recorded in the ledger) by the run that died
        before saving them: their result is `answer_lost` (app/batch/resume.py), saved like any other."""
        missing = {item_request_id(rid, i): i for i in range(len(envelope.items)) if i not in saved}
        lost = {}
        for item_rid in answered(self.services.store.engine, row["tenant_id"], "job", missing,
                                 since=row["created_at"]):
            index = missing[item_rid]
            raw = envelope.items[index]
            lost[index] = {"index": index, "id": raw.get("id") if isinstance(raw, dict) else None,
                           **error_body(answer_lost(item_rid), item_rid)}
            self.store.save_item(row["id"], index, lost[index])
        return lost

    def _principal(self, row: dict) -> Principal:
        """Who submitted the job, as of now: a key revoked meanwhile stops its queued jobs."""
        limits = Limits()
        if row["key_id"]:
            key = next((k for k in self.services.store.list_keys(row["tenant_id"]) if k.id == row["key_id"]), None)
            if key is None or key.revoked:
                raise Unauthorized("The API key that submitted this job has been revoked.", code="invalid_api_key")
            limits = key.limits
        return Principal(tenant_id=row["tenant_id"], agent_id=row["agent_id"],
                         method="api_key" if row["key_id"] else "jwt", key_id=row["key_id"], limits=limits)

    # -- callbacks ----------------------------------------------------------------------------
    def deliver(self, job_id: str) -> None:
        row = self.store.claim_callback(job_id, CALLBACK_LEASE_S)
        if row is None:
            return                                  # delivered, not due yet, or another worker has it
        attempt = row["callback_attempts"] + 1
        if not self.settings.callback_secret:
            self.store.callback_outcome(job_id, "failed", attempt,
                                        error="FLOWCALL_CALLBACK_SECRET is not set in the worker")
            return
        body = json.dumps(self.status_doc(row, for_callback=True), separators=(",", ":")).encode()
        try:
            callbacks.post(row["callback_url"], body, secret=self.settings.callback_secret, job_id=job_id,
                           allow_private=self.settings.allow_private_callback_hosts, clock=self.clock)
        except callbacks.CallbackFailed as exc:
            if exc.retryable and attempt < self.settings.callback_attempts:
                delay = self.retry_delay(attempt)
                self.store.callback_outcome(job_id, "pending", attempt, self.clock() + delay, str(exc))
                self.deliver_task.schedule(args=(job_id,), delay=delay)
                log.info("callback of job %s failed (%s); attempt %d in %.0fs", job_id, exc, attempt + 1, delay)
            else:
                self.store.callback_outcome(job_id, "failed", attempt, error=str(exc))
                log.warning("callback of job %s abandoned after %d attempt(s): %s", job_id, attempt, exc)
            return
        self.store.callback_outcome(job_id, "delivered", attempt)

    def retry_delay(self, attempt: int) -> float:
        """Exponential: the base delay, doubled per failed attempt, at most an hour."""
        return min(self.settings.callback_delay_s * 2 ** (attempt - 1), CALLBACK_MAX_DELAY_S)

    # -- keeping the queue honest -----------------------------------------------------------------
    def recover(self) -> int:
        """Re-enqueue what dead workers left: lapsed job leases and lost callback attempts."""
        run_ids, callback_ids = self.store.orphans(self.settings.lease_s)
        count = 0
        for job_id in run_ids:
            if self.store.requeue_run(job_id):
                log.warning("job %s lost its worker; queued again", job_id)
                self.run_task(job_id)
                count += 1
        for job_id in callback_ids:
            if self.store.requeue_callback(job_id, self.settings.lease_s):
                self.deliver_task(job_id)
                count += 1
        if self.clock() - self._last_purge > 3600:          # the worker is what runs in production
            self._last_purge = self.clock()
            purge_expired(self.store.engine, self.settings.retention_days)
        return count

    def _interrupted(self, signal, task, *args, **kwargs) -> None:
        if task.args:
            self.store.expire(task.args[0])

    def work(self, workers: int | None = None) -> None:
        """Run the consumer (and the reaper) until SIGINT (graceful) or SIGTERM: `flowcall worker`."""
        self.recover()
        stop = threading.Event()
        interval = max(0.5, min(self.settings.lease_s / 2, 30.0))
        reaper = threading.Thread(target=self._reap, args=(stop, interval), daemon=True, name="flowcall-reaper")
        reaper.start()
        roller.start(self.store.engine, stop)          # the dashboard's sums, ahead of its pages
        consumer = self.queue.create_consumer(workers=workers or self.settings.workers, worker_type="thread",
                                              periodic=False, initial_delay=0.1, max_delay=1.0)
        try:
            consumer.run()
        finally:
            stop.set()

    def _reap(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            try:
                self.recover()
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("job recovery failed")


def _item_model(raw, defaults: dict):
    """The model an envelope item asked for (its own, else the batch default), for the ledger."""
    return raw.get("model", defaults.get("model")) if isinstance(raw, dict) else defaults.get("model")


def _canonical_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None

