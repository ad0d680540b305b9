"""Trimming what grows with every call: `flowcall db purge` (for cron) and the worker's hourly round.

Stored idempotent answers expire after 24 h and finished jobs after FLOWCALL_JOB_RETENTION_DAYS,
but expired rows stay until these functions delete them; an idempotent call stores its whole
answer (about 0.9 KB more per call for a 537-byte answer, measured on SQLite). The ledger is the
usage and budget record, so it is never trimmed automatically: `purge_ledger` deletes rows before a
date the operator chooses (never inside the current month, which budgets sum), optionally writing
them to a CSV archive first, and the dashboard's rollups of the days it touched.
"""
from __future__ import annotations

import csv
from datetime import datetime, timedelta, UTC
from typing import TextIO

from sqlalchemy import delete, select

from app.dashboard.rollups import drop_before
from app.tenancy.db import ledger
from app.tenancy.idempotency import Idempotency
from app.batch.job_store import JobStore
from app.tenancy.ledger import month_start

ARCHIVE_BATCH = 5000


def purge_expired(engine, job_retention_days: int, now: datetime | None = None) -> dict[str, int]:
    """Delete expired idempotency rows and jobs finished more than `job_retention_days` ago."""
    now = now or datetime.now(UTC)
    return {"idempotency": Idempotency(engine, clock=now.timestamp).purge_expired(),
            "jobs": JobStore(engine).purge(now - timedelta(days=job_retention_days))}


def check_ledger_cutoff(before: datetime, now: datetime | None = None) -> None:
    """Budgets sum the current month's rows: deleting any of them would let tenants overspend."""
    first = month_start(now)
    if before > first:
        raise ValueError(f"the ledger's current month is what budgets sum: choose a date on or before "
                         f"{first:%Y-%m-%d}")


def purge_ledger(engine, before: datetime, archive: TextIO | None = None) -> int:
    """Delete ledger rows created before `before` (after writing them to `archive` as CSV). Rows
    are only ever appended with the current time, so no row can join the range meanwhile."""
    check_ledger_cutoff(before)
    old = ledger.c.created_at < before
    deleted = 0
    with engine.begin() as conn:
        if archive is not None:
            writer = csv.writer(archive)
            writer.writerow([c.name for c in ledger.columns])
            last = 0
            while True:
                rows = conn.execute(select(ledger).where(old, ledger.c.id > last)
                                    .order_by(ledger.c.id).limit(ARCHIVE_BATCH)).all()
                if not rows:
                    break
                writer.writerows(rows)
                last = rows[-1].id
            archive.flush()
        deleted = conn.execute(delete(ledger).where(old)).rowcount
        drop_before(conn, before)           # the dashboard's rollups of those days go with them
    return deleted

