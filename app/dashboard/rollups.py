"""The ledger summed per tenant, UTC day and dimension ("cells"), the unit every dashboard figure is
added up from.

A completed day's cells are computed once, the first time a page asks for that day, and stored in
`ledger_daily` (with a `ledger_days` mark, so an empty day is not recomputed); the days still open
are read live from the ledger each time. Nothing on the call path writes here. A day counts as
completed GRACE_S after its end: a row's time is taken just before its insert commits, so a row
stamped 23:59:59.9 may land a moment after midnight. `flowcall db purge` drops the cells of the days
it touches (`drop_before`), so the next page recomputes them from the rows that are left.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, UTC

from sqlalchemy import and_, case, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from app.dashboard import histogram
from app.tenancy.db import ledger, ledger_daily, ledger_days

GRACE_S = 300
DIMENSIONS = ("day", "agent_id", "key_id", "model", "provider", "endpoint", "error_code")


@dataclass(frozen=True)
class Cell:
    day: str
    agent_id: str | None
    key_id: str | None
    model: str | None
    provider: str | None
    endpoint: str
    error_code: str | None
    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: float
    latency: str = ""                   # histograms, encoded (app/dashboard/histogram.py); "" when not read
    upstream: str = ""
    overhead: str = ""


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _day_expr(dialect: str):
    if dialect == "sqlite":            # naive UTC text, 'YYYY-MM-DD HH:MM:SS...'
        return func.substr(ledger.c.created_at, 1, 10)
    return func.to_char(func.timezone("UTC", ledger.c.created_at), "YYYY-MM-DD")


def live_cells(conn, tenant_id: str, start: datetime, end: datetime, histograms: bool = True) -> list[Cell]:
    """The tenant's rows with start <= created_at < end, summed per day and dimension (with the
    latency histograms only when asked: they are most of the query's work)."""
    c = ledger.c
    dims = [_day_expr(conn.dialect.name).label("day"), c.agent_id, c.key_id,
            func.coalesce(c.model_served, c.model_requested).label("model"), c.provider, c.endpoint, c.error_code]
    measures = [func.count().label("calls"), func.sum(case((c.status >= 400, 1), else_=0)).label("errors"),
                func.coalesce(func.sum(c.input_tokens), 0).label("input_tokens"),
                func.coalesce(func.sum(c.output_tokens), 0).label("output_tokens"),
                func.coalesce(func.sum(c.cost), 0.0).label("cost")]
    if histograms:
        overhead = case((c.upstream_ms.is_not(None), c.latency_ms - c.upstream_ms), else_=None)
        measures += [*histogram.sql_columns(c.latency_ms, "l"), *histogram.sql_columns(c.upstream_ms, "u"),
                     *histogram.sql_columns(overhead, "o")]
    query = (select(*dims, *measures)
             .where(c.tenant_id == tenant_id, c.created_at >= start, c.created_at < end)
             .group_by(*dims))
    out = []
    for r in conn.execute(query).mappings():
        hists = {name: histogram.encode(histogram.from_row(r, prefix)) for name, prefix in
                 (("latency", "l"), ("upstream", "u"), ("overhead", "o"))} if histograms else {}
        out.append(Cell(day=str(r["day"]), agent_id=r["agent_id"], key_id=r["key_id"], model=r["model"],
                        provider=r["provider"], endpoint=r["endpoint"], error_code=r["error_code"],
                        calls=int(r["calls"]), errors=int(r["errors"] or 0), input_tokens=int(r["input_tokens"]),
                        output_tokens=int(r["output_tokens"]), cost=float(r["cost"] or 0.0), **hists))
    return out


class Rollups:
    def __init__(self, engine):
        self.engine = engine

    def cells(self, tenant_id: str, first: date, last: date, now: datetime | None = None,
              histograms: bool = False) -> list[Cell]:
        """Every cell of the days first..last (inclusive): stored for completed days (computed now
        if missing), live for the rest; with the latency histograms when `histograms`."""
        now = now or datetime.now(UTC)
        completed_until = (now - timedelta(seconds=GRACE_S)).date()    # days before this one are complete
        stored_last = min(last, completed_until - timedelta(days=1))
        out: list[Cell] = []
        if first <= stored_last:
            self._fill(tenant_id, first, stored_last)
            out.extend(self._stored(tenant_id, first, stored_last, histograms))
        live_first = max(first, stored_last + timedelta(days=1))
        if live_first <= last:
            with self.engine.connect() as conn:
                out.extend(live_cells(conn, tenant_id, day_start(live_first), day_start(last + timedelta(days=1)),
                                      histograms))
        return out

    def _fill(self, tenant_id: str, first: date, last: date) -> None:
        """Compute and store the missing days between first and last, each missing run in one query."""
        with self.engine.connect() as conn:
            done = set(conn.execute(select(ledger_days.c.day).where(
                ledger_days.c.tenant_id == tenant_id, ledger_days.c.day >= first.isoformat(),
                ledger_days.c.day <= last.isoformat())).scalars())
        missing = [first + timedelta(days=i) for i in range((last - first).days + 1)
                   if (first + timedelta(days=i)).isoformat() not in done]
        if not missing:
            return
        with self.engine.connect() as conn:
            cells = live_cells(conn, tenant_id, day_start(missing[0]), day_start(missing[-1] + timedelta(days=1)))
        wanted = {d.isoformat() for d in missing}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(ledger_days), [{"tenant_id": tenant_id, "day": d} for d in sorted(wanted)])
                rows = [_row(tenant_id, cell) for cell in cells if cell.day in wanted]
                if rows:
                    conn.execute(insert(ledger_daily), rows)
        except IntegrityError:
            pass                    # another worker stored (some of) these days first; theirs stand

    def _stored(self, tenant_id: str, first: date, last: date, histograms: bool) -> list[Cell]:
        d = ledger_daily.c
        columns = [d.day, d.agent_id, d.key_id, d.model, d.provider, d.endpoint, d.error_code, d.calls, d.errors,
                   d.input_tokens, d.output_tokens, d.cost]
        if histograms:
            columns += [d.latency, d.upstream, d.overhead]
        query = select(*columns).where(d.tenant_id == tenant_id, d.day >= first.isoformat(), d.day <= last.isoformat())
        with self.engine.connect() as conn:
            return [Cell(*row) for row in conn.execute(query)]

    def cost(self, tenant_id: str, first: date, last: date, key_id: str | None = None,
             now: datetime | None = None) -> float:
        """USD spent by the tenant (or one of its keys) on first..last: one sum over the stored days, one
        over the open ones (the budget figures, without reading every cell)."""
        now = now or datetime.now(UTC)
        stored_last = min(last, (now - timedelta(seconds=GRACE_S)).date() - timedelta(days=1))
        total = 0.0
        if first <= stored_last:
            self._fill(tenant_id, first, stored_last)
        with self.engine.connect() as conn:
            if first <= stored_last:
                d = ledger_daily.c
                where = [d.tenant_id == tenant_id, d.day >= first.isoformat(), d.day <= stored_last.isoformat()]
                if key_id is not None:
                    where.append(d.key_id == key_id)
                total += float(conn.execute(select(func.coalesce(func.sum(d.cost), 0.0)).where(*where)).scalar_one())
            live_first = max(first, stored_last + timedelta(days=1))
            if live_first <= last:
                c = ledger.c
                where = [c.tenant_id == tenant_id, c.created_at >= day_start(live_first),
                         c.created_at < day_start(last + timedelta(days=1))]
                if key_id is not None:
                    where.append(c.key_id == key_id)
                total += float(conn.execute(select(func.coalesce(func.sum(c.cost), 0.0)).where(*where)).scalar_one())
        return round(total, 8)


def _row(tenant_id: str, cell: Cell) -> dict:
    return {"tenant_id": tenant_id, "day": cell.day, "agent_id": cell.agent_id, "key_id": cell.key_id,
            "model": cell.model, "provider": cell.provider, "endpoint": cell.endpoint, "error_code": cell.error_code,
            "calls": cell.calls, "errors": cell.errors, "input_tokens": cell.input_tokens,
            "output_tokens": cell.output_tokens, "cost": cell.cost, "latency": cell.latency,
            "upstream": cell.upstream, "overhead": cell.overhead}


def drop_before(conn, before: datetime) -> None:
    """Forget the cells of every day that starts before `before` (the ledger purge's cutoff), in the
    purge's transaction: those days are recomputed from what is left when a page next asks."""
    cutoff = before.astimezone(UTC)
    first_kept = cutoff.date() if cutoff.time() == time.min else cutoff.date() + timedelta(days=1)
    conn.execute(delete(ledger_daily).where(ledger_daily.c.day < first_kept.isoformat()))
    conn.execute(delete(ledger_days).where(and_(ledger_days.c.day < first_kept.isoformat())))
