"""`gunicorn wsgi:app` (gunicorn.conf.py) runs the dashboard's roller beside its workers: a child of
the master that sums the ledger into the rollups without any page asking, tells the workers it runs,
and ends with the master; FLOWCALL_DASHBOARD_ROLLER=0 runs none."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, UTC
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.tenancy.db import ledger_days, make_engine
from conftest import migrated_db_url
from dashboard_seed import seed
from service import e2e_service

pytestmark = pytest.mark.e2e
DEADLINE_S = 60.0


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                child = int(stat.parent.name)
                out.append((child, (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, ValueError, IndexError):
            continue                    # a process that ended while we looked
    return out


def _rollers(pid: int) -> list[int]:
    return [child for child, cmd in _children(pid) if "app.dashboard.roller" in cmd]


def _until(condition, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)                 # polling a condition under a deadline, not waiting for time
    pytest.fail(f"not within {DEADLINE_S} s: {what}")


def test_the_master_runs_a_roller_that_sums_without_a_page_and_ends_with_it(tmp_path):
    url = migrated_db_url(tmp_path)
    engine = make_engine(url)
    for days_ago in (1, 3):
        seed(engine, datetime.now(UTC) - timedelta(days=days_ago), tenant_id=str(uuid.uuid4()),
             request_id=uuid.uuid4().hex, input_tokens=3)

    def marks() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(ledger_days)).scalar_one()

    assert marks() == 0
    with e2e_service(tmp_path, database_url=url) as svc:
        master = svc["proc"].pid
        roller = _until(lambda: _rollers(master), "a roller child of the master")
        assert len(roller) == 1
        _until(lambda: marks() >= 2 * 35, "both tenants' 35 days summed by the roller")
    _until(lambda: not Path(f"/proc/{roller[0]}").exists() or "Z" in _state(roller[0]), "the roller gone")
    engine.dispose()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_no_roller_when_turned_off(tmp_path):
    with e2e_service(tmp_path, extra_env={"FLOWCALL_DASHBOARD_ROLLER": "0"}) as svc:   # a worker has answered
        assert _rollers(svc["proc"].pid) == [] and len(_children(svc["proc"].pid)) >= 1
