"""What a dashboard page reads, for one scope (a tenant, or one agent of it): rollup cells, the
latest rows of the ledger, the budget and rate figures, the jobs. Every query is keyed by the
signed-in scope's tenant (and agent), never by anything the request names.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, UTC

from sqlalchemy import func, select

from app.batch.job_store import job_items, jobs
from app.dashboard.rollups import DIMENSIONS, Cell, Rollups, day_start
from app.tenancy.db import ledger
from app.tenancy.ledger import month_start
from app.tenancy.store import Limits, Store

PAGE_SIZE = 50
CALL_COLUMNS = ("id", "request_id", "created_at", "endpoint", "model_requested", "model_served", "provider",
                "status", "error_code", "input_tokens", "output_tokens", "cost", "latency_ms", "upstream_ms",
                "attempts", "routing_reason", "fallbacks", "error_message", "agent_id", "key_id")


@dataclass(frozen=True)
class Scope:
    """Whose data a session sees: `agent_id` set means that agent's rows only (an agent-scoped key)."""
    tenant_id: str
    agent_id: str | None = None
    key_id: str | None = None


class Dashboard:
    def __init__(self, engine, store: Store, pages_sum_history: bool = True):
        self.engine = engine
        self.store = store
        self.rollups = Rollups(engine, pages_sum_history)

    # -- cells ----------------------------------------------------------------------------------
    def cells(self, scope: Scope, first: date, last: date, agent: str | None = None, now: datetime | None = None,
              dims: tuple[str, ...] = DIMENSIONS, histograms: bool = False) -> list[Cell]:
        """The scope's sums of first..last grouped by `dims`; `agent` narrows a tenant-wide scope to one agent."""
        return self.rollups.cells(scope.tenant_id, first, last, now, dims, histograms, scope.agent_id or agent)

    def agents(self, scope: Scope, first: date, last: date) -> list[str]:
        """The agents with calls in first..last (the filter's choices); an agent's session: its own."""
        if scope.agent_id:
            return [scope.agent_id]
        cells = self.rollups.cells(scope.tenant_id, first, last, dims=("agent_id",))
        return sorted({c.agent_id for c in cells if c.agent_id})

    # -- rows -----------------------------------------------------------------------------------
    def _where(self, scope: Scope, agent: str | None):
        where = [ledger.c.tenant_id == scope.tenant_id]
        wanted = scope.agent_id or agent
        if wanted:
            where.append(ledger.c.agent_id == wanted)
        return where

    def calls(self, scope: Scope, start: datetime, end: datetime, agent: str | None = None, page: int = 1,
              failed: bool = False, size: int = PAGE_SIZE) -> tuple[list[dict], bool]:
        """(one page of the scope's calls, newest first; whether there is a next page)."""
        c = ledger.c
        where = [*self._where(scope, agent), c.created_at >= start, c.created_at < end]
        if failed:
            where.append(c.status >= 400)
        query = (select(*[getattr(c, name) for name in CALL_COLUMNS]).where(*where)
                 .order_by(c.created_at.desc(), c.id.desc()).limit(size + 1).offset((page - 1) * size))
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        return [_call(r) for r in rows[:size]], len(rows) > size

    def call_rows(self, scope: Scope, start: datetime, end: datetime, agent: str | None, size: int) -> list[tuple]:
        """The scope's newest `size` calls as tuples in CALL_COLUMNS order (the CSV export): the same
        rows as `calls`, without a dict per row. Read whole (bounded by `size`) so the connection goes
        back to the pool before a slow client downloads them."""
        c = ledger.c
        query = (select(*[getattr(c, name) for name in CALL_COLUMNS])
                 .where(*self._where(scope, agent), c.created_at >= start, c.created_at < end)
                 .order_by(c.created_at.desc(), c.id.desc()).limit(size))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        when = CALL_COLUMNS.index("created_at")
        return [(*r[:when], _when(r[when]), *r[when + 1:]) for r in rows]

    def call(self, scope: Scope, row_id: int) -> dict | None:
        """One call of the scope's, or None (another tenant's or agent's row is None too)."""
        query = select(ledger).where(ledger.c.id == row_id, *self._where(scope, None))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _call(dict(row)) if row else None

    def last_minute(self, scope: Scope, now: datetime | None = None) -> dict:
        """Calls and tokens the ledger recorded in the last 60 s (beside the RPM/TPM limits)."""
        now = now or datetime.now(UTC)
        c = ledger.c
        query = select(func.count(), func.coalesce(func.sum(c.input_tokens + c.output_tokens), 0)).where(
            *self._where(scope, None), c.created_at >= now - timedelta(seconds=60))
        with self.engine.connect() as conn:
            calls, tokens = conn.execute(query).one()
        return {"calls": int(calls), "tokens": int(tokens)}

    # -- money ----------------------------------------------------------------------------------
    def budget(self, scope: Scope, now: datetime | None = None) -> list[dict]:
        """This month's spend against each budget the scope may see: the tenant's (tenant-wide
        sessions only: an agent's session must not learn the other agents' spend) and its key's."""
        now = now or datetime.now(UTC)
        first = month_start(now)
        out = []
        if scope.agent_id is None:
            spent = self.rollups.cost(scope.tenant_id, first.date(), now.date(), now=now)
            out.append(_budget("tenant", self.store.tenant_limits(scope.tenant_id), spent, first, now))
        if scope.key_id is not None:
            key = self.store.active_key(scope.key_id)
            if key is not None:
                spent = self.rollups.cost(scope.tenant_id, first.date(), now.date(), key_id=scope.key_id, now=now)
                out.append(_budget("key", key.limits, spent, first, now))
        return out

    # -- jobs -----------------------------------------------------------------------------------
    def jobs(self, scope: Scope, size: int = PAGE_SIZE) -> list[dict]:
        j = jobs.c
        where = [j.tenant_id == scope.tenant_id]
        if scope.agent_id:
            where.append(j.agent_id == scope.agent_id)
        query = (select(j.id, j.kind, j.status, j.items_total, j.result_status, j.request_id, j.created_at,
                        j.started_at, j.finished_at, j.callback_state, j.agent_id)
                 .where(*where).order_by(j.created_at.desc()).limit(size))
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
            ids = [r["id"] for r in rows]
            done = dict(conn.execute(select(job_items.c.job_id, func.count()).where(job_items.c.job_id.in_(ids))
                                     .group_by(job_items.c.job_id)).all()) if ids else {}
        for r in rows:
            finished = r["status"] in ("done", "failed")
            r["done"] = r["items_total"] if finished else int(done.get(r["id"], 0))
            for name in ("created_at", "started_at", "finished_at"):
                r[name] = _when(r[name])
        return rows


def _budget(scope: str, limits: Limits, spent: float, first: datetime, now: datetime) -> dict:
    elapsed_days = max((now - first).total_seconds() / 86400, 1 / 24)
    pace = spent / elapsed_days                       # USD per day so far this month
    budget = limits.budget_usd
    days_left = None
    if budget is not None and pace > 0:
        days_left = max(0.0, round((budget - spent) / pace, 1))
    return {"scope": scope, "budget_usd": budget, "spent": spent, "pace_per_day": round(pace, 8),
            "used_pct": round(100 * spent / budget, 1) if budget else None, "days_left": days_left,
            "rpm": limits.rpm, "tpm": limits.tpm}


def _when(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "seconds") + "Z"


def _call(row: dict) -> dict:
    row["created_at"] = _when(row["created_at"])
    row["total_tokens"] = int(row["input_tokens"] or 0) + int(row["output_tokens"] or 0)
    row["model"] = row.get("model_served") or row.get("model_requested")
    if row.get("upstream_ms") is not None:
        row["overhead_ms"] = max(0, int(row["latency_ms"]) - int(row["upstream_ms"]))
    else:
        row["overhead_ms"] = None
    return row


def day_range(first: date, last: date) -> tuple[datetime, datetime]:
    return day_start(first), day_start(last + timedelta(days=1))
