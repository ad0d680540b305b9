"""Stored idempotent answers, finished jobs and (on request) old ledger rows are deleted by
`flowcall db purge` and by the worker's hourly round, so the database does not grow forever."""
from __future__ import annotations

import csv
import uuid
from datetime import datetime, timedelta, UTC

import pytest
from sqlalchemy import func, insert, select

from app.cli import main
from app.tenancy.db import idempotency, ledger, make_engine
from app.tenancy.idempotency import TTL_SECONDS, Idempotency
from app.batch.job_store import jobs
from app.batch.jobs import Jobs
from app.tenancy.ledger import month_start
from app.tenancy.purge import purge_expired
from conftest import migrated_db_url


@pytest.fixture
def db(tmp_path, monkeypatch):
    url = migrated_db_url(tmp_path)
    monkeypatch.setenv("FLOWCALL_DATABASE_URL", url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _remember(engine, key: str, at: float) -> None:
    store = Idempotency(engine, clock=lambda: at)
    assert store.begin("t", key, "h", 60) is None
    store.finish("t", key, 200, {"text": "answer"})


def _job(engine, finished_days_ago: float | None) -> None:
    now = datetime.now(UTC)
    finished = None if finished_days_ago is None else now - timedelta(days=finished_days_ago)
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(id=str(uuid.uuid4()), tenant_id="t", kind="call",
                                         status="queued" if finished is None else "done", request="{}",
                                         items_total=1, runs=0, callback_attempts=0,
                                         created_at=now - timedelta(days=30), finished_at=finished))


def _ledger_row(engine, created_at: datetime, tenant: str = "t") -> None:
    with engine.begin() as conn:
        conn.execute(insert(ledger).values(created_at=created_at, tenant_id=tenant, endpoint="call", status=200,
                                           input_tokens=1, output_tokens=2, cost=0.5, latency_ms=1, attempts=1))


def test_db_purge_deletes_expired_answers_and_old_jobs_only(db, capsys):
    now = datetime.now(UTC).timestamp()
    _remember(db, "old", now - TTL_SECONDS - 60)
    _remember(db, "fresh", now - 60)
    _job(db, finished_days_ago=8)          # past the default 7-day retention
    _job(db, finished_days_ago=1)
    _job(db, finished_days_ago=None)       # still queued: never purged
    assert main(["db", "purge"]) == 0
    out = capsys.readouterr().out
    assert "idempotency: 1 " in out and "jobs: 1 " in out
    with db.connect() as conn:
        assert [r.key for r in conn.execute(select(idempotency.c.key))] == ["fresh"]
    assert _count(db, jobs) == 2


def test_job_retention_comes_from_the_setting(db, monkeypatch, capsys):
    _job(db, finished_days_ago=3)
    monkeypatch.setenv("FLOWCALL_JOB_RETENTION_DAYS", "2")
    assert main(["db", "purge"]) == 0
    assert _count(db, jobs) == 0


def test_db_purge_archives_then_deletes_ledger_rows_before_the_date(db, tmp_path, capsys):
    first = month_start()
    _ledger_row(db, first - timedelta(days=40))
    _ledger_row(db, first - timedelta(seconds=1))
    _ledger_row(db, first + timedelta(seconds=1))
    archive = tmp_path / "ledger.csv"
    assert main(["db", "purge", "--ledger-before", f"{first:%Y-%m-%d}", "--archive", str(archive)]) == 0
    assert "ledger: 2 rows" in capsys.readouterr().out
    with archive.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {r["cost"] for r in rows} == {"0.5"} and rows[0]["tenant_id"] == "t"
    assert _count(db, ledger) == 1


def test_the_ledger_of_the_current_month_is_never_purged(db, capsys):
    _ledger_row(db, datetime.now(UTC))
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert main(["db", "purge", "--ledger-before", f"{tomorrow:%Y-%m-%d}"]) == 2
    assert "budgets" in capsys.readouterr().err
    assert _count(db, ledger) == 1


def test_answers_stored_by_real_idempotent_calls_are_purged_after_their_ttl(client, api_key, app):
    for i in range(3):
        resp = client.post("/api/v3/llm/public/call", json={"model": "mock.echo", "prompt": f"hi {i}"},
                           headers={"X-Api-Key": api_key, "Idempotency-Key": f"k{i}"})
        assert resp.status_code == 200
    engine = app.extensions["flowcall"].store.engine
    assert _count(engine, idempotency) == 3
    assert purge_expired(engine, 7)["idempotency"] == 0
    later = datetime.now(UTC) + timedelta(seconds=TTL_SECONDS + 1)
    assert purge_expired(engine, 7, now=later)["idempotency"] == 3
    assert _count(engine, idempotency) == 0


def test_the_worker_purges_expired_answers_in_its_recovery_round(app):
    engine = app.extensions["flowcall"].store.engine
    _remember(engine, "old", datetime.now(UTC).timestamp() - TTL_SECONDS - 60)
    from huey import MemoryHuey
    worker = Jobs(app.extensions["flowcall"], queue=MemoryHuey("test-purge", immediate=False))
    worker.recover()
    assert _count(engine, idempotency) == 0


def test_db_rollup_stores_the_dashboards_sums_and_a_second_run_finds_nothing(db, capsys):
    from app.tenancy.db import ledger_daily, ledger_days
    now = datetime.now(UTC)
    for days_ago in (1, 2, 40):
        _ledger_row(db, now - timedelta(days=days_ago), tenant=f"t{days_ago}")
    assert main(["db", "rollup", "--days", "7"]) == 0
    out = capsys.readouterr().out
    assert "for 3 tenants" in out and " 0 hours" not in out
    with db.connect() as conn:
        daily = conn.execute(select(func.sum(ledger_daily.c.calls)).where(ledger_daily.c.hour_start.is_(None)))
        assert daily.scalar_one() == 2                  # the 40-day-old row is outside the 7 days
    marks = _count(db, ledger_days)
    assert main(["db", "rollup", "--days", "7"]) == 0
    assert "0 hours or days stored" in capsys.readouterr().out and _count(db, ledger_days) == marks
    assert main(["db", "rollup", "--days", "0"]) == 2


def test_the_worker_keeps_the_rollups_until_stopped(db, monkeypatch):
    import threading
    from app.dashboard import roller
    from app.tenancy.db import ledger_days
    _ledger_row(db, datetime.now(UTC) - timedelta(days=2))
    stop = threading.Event()
    rounds = []

    class Counting(roller.Rollups):
        def roll(self, *args, **kwargs):
            done = super().roll(*args, **kwargs)
            rounds.append(done)
            stop.set()                                  # one round, then the worker stops
            return done

    monkeypatch.setattr(roller, "Rollups", Counting)
    roller.keep_rolled(db, stop, every_s=3600)         # returns once stopped: no wait for the hour
    assert len(rounds) == 1 and rounds[0]["units_stored"] > 0 and _count(db, ledger_days) > 0
