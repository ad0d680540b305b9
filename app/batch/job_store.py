"""The job rows: the `jobs` table (who, what, status, result, callback state) and `job_items` (a
finished batch item's result, so a resumed batch skips what it already paid for). Every state
change is one conditional UPDATE, so workers racing for the same job or callback stay safe."""
from __future__ import annotations

import json
import time
from datetime import datetime, UTC

from sqlalchemy import (Column, DateTime, Float, Index, Integer, String, Table, Text, and_, delete, func, or_, select,
                        update)
from sqlalchemy.exc import IntegrityError

from app.tenancy.db import metadata
from app.batch.job_calls import forget

jobs = Table(
    "jobs", metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("agent_id", String(64), nullable=True),
    Column("key_id", String(32), nullable=True),
    Column("kind", String(8), nullable=False),                 # call | batch
    Column("status", String(16), nullable=False),              # queued | running | done | failed
    Column("request", Text, nullable=False),                   # the call body or batch envelope (JSON)
    Column("request_id", String(128), nullable=True),
    Column("status_url", Text, nullable=True),
    Column("items_total", Integer, nullable=False),
    Column("result", Text, nullable=True),                     # the synchronous endpoint's body (JSON)
    Column("result_status", Integer, nullable=True),           # and its HTTP status
    Column("runs", Integer, nullable=False, default=0),
    Column("lease_until", Float, nullable=True),               # epoch s; a lapsed lease is retaken
    Column("callback_url", Text, nullable=True),
    Column("callback_state", String(16), nullable=True),       # pending | sending | delivered | failed
    Column("callback_attempts", Integer, nullable=False, default=0),
    Column("callback_next_at", Float, nullable=True),          # pending: next attempt; sending: lease end
    Column("callback_error", String(500), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Index("ix_jobs_tenant_created", "tenant_id", "created_at"),
    Index("ix_jobs_status_lease", "status", "lease_until"),
    Index("ix_jobs_callback", "callback_state", "callback_next_at"),
)

job_items = Table(
    "job_items", metadata,
    Column("job_id", String(36), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("result", Text, nullable=False),
)

SCHEDULE_SLACK_S = 1.0                           # a scheduled attempt may fire a hair early


class JobStore:
    """The job rows; every state change is one conditional UPDATE, safe across workers."""

    def __init__(self, engine, clock=time.time):
        self.engine = engine
        self.clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def insert(self, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(jobs.insert().values(created_at=self._now(), runs=0, callback_attempts=0, **values))

    def get(self, job_id: str, tenant_id: str | None = None) -> dict | None:
        query = select(jobs).where(jobs.c.id == job_id)
        if tenant_id is not None:
            query = query.where(jobs.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None

    def _update(self, *where, **values) -> int:
        with self.engine.begin() as conn:
            return conn.execute(update(jobs).where(*where).values(**values)).rowcount

    def claim(self, job_id: str, lease_s: float) -> dict | None:
        """queued (or running under a lapsed lease) -> running under our lease; None: not ours."""
        now = self.clock()
        taken = self._update(
            jobs.c.id == job_id,
            or_(jobs.c.status == "queued", and_(jobs.c.status == "running", jobs.c.lease_until < now)),
            status="running", lease_until=now + lease_s, runs=jobs.c.runs + 1,
            started_at=func.coalesce(jobs.c.started_at, self._now()))
        return self.get(job_id) if taken else None

    def renew(self, job_id: str, lease_s: float) -> None:
        self._update(jobs.c.id == job_id, jobs.c.status == "running", lease_until=self.clock() + lease_s)

    def expire(self, job_id: str) -> None:
        """This worker is going away mid-task: let the next one take over at once."""
        self._update(jobs.c.id == job_id, jobs.c.status == "running", lease_until=0.0)
        self._update(jobs.c.id == job_id, jobs.c.callback_state == "sending", callback_next_at=0.0)

    def save_item(self, job_id: str, index: int, result: dict) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(job_items.insert().values(job_id=job_id, idx=index, result=json.dumps(result)))
        except IntegrityError:
            pass                                  # a twin run saved it first: same item, keep theirs

    def items(self, job_id: str) -> dict[int, dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(job_items.c.idx, job_items.c.result).where(job_items.c.job_id == job_id))
            return {int(idx): json.loads(result) for idx, result in rows}

    def count_items(self, job_id: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(job_items)
                                    .where(job_items.c.job_id == job_id)).scalar_one())

    def finish(self, job_id: str, status: str, result_status: int, result: dict, has_callback: bool) -> None:
        values = {"status": status, "result_status": result_status, "result": json.dumps(result),
                  "finished_at": self._now(), "lease_until": None}
        if has_callback:
            values.update(callback_state="pending", callback_next_at=self.clock())
        self._update(jobs.c.id == job_id, jobs.c.status.in_(("queued", "running")), **values)

    def claim_callback(self, job_id: str, lease_s: float) -> dict | None:
        now = self.clock()
        taken = self._update(
            jobs.c.id == job_id,
            or_(and_(jobs.c.callback_state == "pending", jobs.c.callback_next_at <= now + SCHEDULE_SLACK_S),
                and_(jobs.c.callback_state == "sending", jobs.c.callback_next_at < now)),
            callback_state="sending", callback_next_at=now + lease_s)
        return self.get(job_id) if taken else None

    def callback_outcome(self, job_id: str, state: str, attempts: int, next_at: float | None = None,
                         error: str | None = None) -> None:
        self._update(jobs.c.id == job_id, jobs.c.callback_state == "sending", callback_state=state,
                     callback_attempts=attempts, callback_next_at=next_at,
                     callback_error=error[:500] if error else None)

    def orphans(self, lease_s: float) -> tuple[list[str], list[str]]:
        """Jobs whose worker vanished, and callbacks whose scheduled attempt was lost."""
        now = self.clock()
        with self.engine.connect() as conn:
            runs = conn.execute(select(jobs.c.id).where(jobs.c.status == "running", jobs.c.lease_until < now))
            run_ids = [r[0] for r in runs]
            calls = conn.execute(select(jobs.c.id).where(self._callback_orphaned(now, lease_s)))
            return run_ids, [r[0] for r in calls]

    @staticmethod
    def _callback_orphaned(now: float, lease_s: float):
        return or_(and_(jobs.c.callback_state == "pending", jobs.c.callback_next_at < now - lease_s),
                   and_(jobs.c.callback_state == "sending", jobs.c.callback_next_at < now))

    def requeue_run(self, job_id: str) -> bool:
        return bool(self._update(jobs.c.id == job_id, jobs.c.status == "running",
                                 jobs.c.lease_until < self.clock(), status="queued", lease_until=None))

    def requeue_callback(self, job_id: str, lease_s: float) -> bool:
        now = self.clock()
        return bool(self._update(jobs.c.id == job_id, self._callback_orphaned(now, lease_s),
                                 callback_state="pending", callback_next_at=now))

    def purge(self, before: datetime) -> int:
        with self.engine.begin() as conn:
            old = select(jobs.c.id).where(jobs.c.finished_at < before).scalar_subquery()
            conn.execute(delete(job_items).where(job_items.c.job_id.in_(old)))
            forget(conn, old)
            return conn.execute(delete(jobs).where(jobs.c.finished_at < before)).rowcount
