"""The ledger summed per tenant, UTC day and dimension, the unit every dashboard figure is added up
from; a page asks for the sums grouped by the dimensions it shows ("cells"), and the database adds.

A completed day's sums are computed once, the first time a page asks for that day, and stored in
`ledger_daily` (with a `ledger_days` mark, so an empty day is not recomputed); the days still open
are read live from the ledger each time. Nothing on the call path writes here. A day counts as
completed GRACE_S after its end: a row's time is taken just before its insert commits, so a row
stamped 23:59:59.9 may land a moment after midnight. `flowcall db purge` drops the sums of the days
it touches (`drop_before`), so the next page recomputes them from the rows that are left.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, UTC

from sqlalchemy import case, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from app.dashboard import histogram
from app.tenancy.db import ledger, ledger_daily, ledger_days

GRACE_S = 300
DIMENSIONS = ("day", "agent_id", "key_id", "model", "provider", "endpoint", "error_code")
MEASURES = ("calls", "errors", "input_tokens", "output_tokens", "cost")


@dataclass(frozen=True)
class Cell:
    """The sums of one group; a dimension the query did not group by is None."""
    day: str | None = None
    agent_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    provider: str | None = None
    endpoint: str | None = None
    error_code: str | None = None
    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency: tuple[int, ...] = histogram.EMPTY      # read only when asked (the breakdowns)
    upstream: tuple[int, ...] = histogram.EMPTY
    overhead: tuple[int, ...] = histogram.EMPTY


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _ledger_dims(dialect: str) -> dict:
    c = ledger.c
    day = func.substr(c.created_at, 1, 10) if dialect == "sqlite" else \
        func.to_char(func.timezone("UTC", c.created_at), "YYYY-MM-DD")       # SQLite: naive UTC text
    return {"day": day, "agent_id": c.agent_id, "key_id": c.key_id,
            "model": func.coalesce(c.model_served, c.model_requested), "provider": c.provider,
            "endpoint": c.endpoint, "error_code": c.error_code}


def _cells(conn, query, dims: tuple[str, ...], histograms: bool) -> list[Cell]:
    out = []
    for r in conn.execute(query).mappings():
        hists = {"latency": histogram.from_row(r, "lat"), "upstream": histogram.from_row(r, "up"),
                 "overhead": histogram.from_row(r, "oh")} if histograms else {}
        out.append(Cell(**{d: (str(r[d]) if r[d] is not None else None) for d in dims},
                        calls=int(r["calls"] or 0), errors=int(r["errors"] or 0),
                        input_tokens=int(r["input_tokens"] or 0), output_tokens=int(r["output_tokens"] or 0),
                        cost=float(r["cost"] or 0.0), **hists))
    return out


def live_cells(conn, tenant_id: str, start: datetime, end: datetime, dims: tuple[str, ...] = DIMENSIONS,
               histograms: bool = True, agent: str | None = None) -> list[Cell]:
    """The tenant's rows with start <= created_at < end, summed per `dims`."""
    c = ledger.c
    columns = _ledger_dims(conn.dialect.name)
    group = [columns[d].label(d) for d in dims]
    measures = [func.count().label("calls"), func.sum(case((c.status >= 400, 1), else_=0)).label("errors"),
                func.coalesce(func.sum(c.input_tokens), 0).label("input_tokens"),
                func.coalesce(func.sum(c.output_tokens), 0).label("output_tokens"),
                func.coalesce(func.sum(c.cost), 0.0).label("cost")]
    if histograms:
        overhead = case((c.upstream_ms.is_not(None), c.latency_ms - c.upstream_ms), else_=None)
        measures += [*histogram.sql_columns(c.latency_ms, "lat"), *histogram.sql_columns(c.upstream_ms, "up"),
                     *histogram.sql_columns(overhead, "oh")]
    where = [c.tenant_id == tenant_id, c.created_at >= start, c.created_at < end]
    if agent is not None:
        where.append(c.agent_id == agent)
    return _cells(conn, select(*group, *measures).where(*where).group_by(*group), dims, histograms)


class Rollups:
    def __init__(self, engine):
        self.engine = engine

    def _split(self, first: date, last: date, now: datetime | None) -> tuple[date, date]:
        """(the last day read from the stored sums, the first day read live)."""
        now = now or datetime.now(UTC)
        stored_last = min(last, (now - timedelta(seconds=GRACE_S)).date() - timedelta(days=1))
        return stored_last, max(first, stored_last + timedelta(days=1))

    def cells(self, tenant_id: str, first: date, last: date, now: datetime | None = None,
              dims: tuple[str, ...] = DIMENSIONS, histograms: bool = False, agent: str | None = None) -> list[Cell]:
        """The sums of the days first..last (inclusive) grouped by `dims` (one agent's, with `agent`):
        from the stored days (computed now if missing), then from the open ones, live. A group may
        appear twice (stored and live): the figures add them."""
        stored_last, live_first = self._split(first, last, now)
        out: list[Cell] = []
        if first <= stored_last:
            self._fill(tenant_id, first, stored_last)
            d = ledger_daily.c
            group = [getattr(d, dim) for dim in dims]
            measures = [func.sum(getattr(d, m)).label(m) for m in MEASURES]
            if histograms:
                measures += [func.sum(getattr(d, name)).label(name) for name in histogram.COLUMNS]
            where = [d.tenant_id == tenant_id, d.day >= first.isoformat(), d.day <= stored_last.isoformat()]
            if agent is not None:
                where.append(d.agent_id == agent)
            with self.engine.connect() as conn:
                out.extend(_cells(conn, select(*group, *measures).where(*where).group_by(*group), dims, histograms))
        if live_first <= last:
            with self.engine.connect() as conn:
                out.extend(live_cells(conn, tenant_id, day_start(live_first), day_start(last + timedelta(days=1)),
                                      dims, histograms, agent))
        return out

    def cost(self, tenant_id: str, first: date, last: date, key_id: str | None = None,
             now: datetime | None = None) -> float:
        """USD spent by the tenant (or one of its keys) on first..last (the budget figures)."""
        stored_last, live_first = self._split(first, last, now)
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
            if live_first <= last:
                c = ledger.c
                where = [c.tenant_id == tenant_id, c.created_at >= day_start(live_first),
                         c.created_at < day_start(last + timedelta(days=1))]
                if key_id is not None:
                    where.append(c.key_id == key_id)
                total += float(conn.execute(select(func.coalesce(func.sum(c.cost), 0.0)).where(*where)).scalar_one())
        return round(total, 8)

    def _fill(self, tenant_id: str, first: date, last: date) -> None:
        """Compute and store the missing days between first and last, in one query over their span."""
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


def _row(tenant_id: str, cell: Cell) -> dict:
    row = {"tenant_id": tenant_id, **{d: getattr(cell, d) for d in DIMENSIONS},
           **{m: getattr(cell, m) for m in MEASURES}}
    for kind, hist in (("lat", cell.latency), ("up", cell.upstream), ("oh", cell.overhead)):
        row.update(zip(histogram.names(kind), hist, strict=True))
    return row


def drop_before(conn, before: datetime) -> None:
    """Forget the sums of every day that starts before `before` (the ledger purge's cutoff), in the
    purge's transaction: those days are recomputed from what is left when a page next asks."""
    cutoff = before.astimezone(UTC)
    first_kept = cutoff.date() if cutoff.time() == time.min else cutoff.date() + timedelta(days=1)
    conn.execute(delete(ledger_daily).where(ledger_daily.c.day < first_kept.isoformat()))
    conn.execute(delete(ledger_days).where(ledger_days.c.day < first_kept.isoformat()))
