"""A job's calls noted before they are made, so a retaken job can account for the ones that died.

Every call of a job goes through the gateway, and every gateway run that ends writes exactly one
ledger row (an answer, a provider error or a refusal). A worker killed mid-call writes none, so
before each call the job's worker counts it here (`job_calls`: job, request id, how many times
started), in its own committed transaction. When the job is retaken after its lease lapsed, each
request id started more times than it has ledger rows had that many calls die in flight: each gets
a ledger row `interrupted` (499, usage unknown, app/batch/resume.py), so the ledger holds one row per
call made, however many times the job was retaken.
"""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Column, Integer, String, Table, func, select, update
from sqlalchemy.exc import IntegrityError

from app.tenancy.db import ledger, metadata

job_calls = Table(
    "job_calls", metadata,
    Column("job_id", String(36), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("starts", Integer, nullable=False),
)

_CHUNK = 500


def note_started(engine, job_id: str, request_id: str) -> None:
    """Count one more call of `request_id`, committed before the call is made. A job runs on one
    worker at a time (its lease), so the insert races only with itself after a lost commit."""
    bump = update(job_calls).where(job_calls.c.job_id == job_id, job_calls.c.request_id == request_id)
    with engine.begin() as conn:
        if conn.execute(bump.values(starts=job_calls.c.starts + 1)).rowcount:
            return
    try:
        with engine.begin() as conn:
            conn.execute(job_calls.insert().values(job_id=job_id, request_id=request_id, starts=1))
    except IntegrityError:
        with engine.begin() as conn:
            conn.execute(bump.values(starts=job_calls.c.starts + 1))


def unrecorded(engine, job: dict, endpoint: str) -> dict[str, int]:
    """request id -> how many of its calls have no ledger row (died in flight), for this job."""
    with engine.connect() as conn:
        starts = dict(conn.execute(select(job_calls.c.request_id, job_calls.c.starts)
                                   .where(job_calls.c.job_id == job["id"])).all())
    rows = _ledger_counts(engine, job["tenant_id"], endpoint, starts, job["created_at"])
    return {rid: n - rows.get(rid, 0) for rid, n in starts.items() if n > rows.get(rid, 0)}


def _ledger_counts(engine, tenant_id: str, endpoint: str, request_ids: Iterable[str], since) -> dict[str, int]:
    ids = list(request_ids)
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        for start in range(0, len(ids), _CHUNK):
            rows = conn.execute(select(ledger.c.request_id, func.count()).where(
                ledger.c.tenant_id == tenant_id, ledger.c.endpoint == endpoint, ledger.c.created_at >= since,
                ledger.c.request_id.in_(ids[start:start + _CHUNK])).group_by(ledger.c.request_id))
            counts.update({rid: int(n) for rid, n in rows})
    return counts


def forget(conn, job_ids) -> None:
    """Drop the notes of purged jobs (`job_ids`: a list or a subquery)."""
    conn.execute(job_calls.delete().where(job_calls.c.job_id.in_(job_ids)))
