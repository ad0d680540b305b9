"""The ledger summed per tenant, UTC day and dimension, the unit every dashboard figure is added up
from; a page asks for the sums grouped by the dimensions it shows ("cells"), and the database adds.

A completed day's sums are computed once, the first time a page asks for that day, and stored in
`ledger_daily` (with a `ledger_days` mark, so an empty day is not recomputed). The day still open is
summed the same way per completed hour (rows with `hour_start`, replaced by the day's own when it
completes), and only its current hour is read live from the ledger. Nothing on the call path writes
here. A day or hour counts as completed GRACE_S after its end: a row's time is taken just before its
insert commits, so a row stamped 23:59:59.9 may land a moment after midnight. `flowcall db purge`
drops the sums of the days it touches (`drop_before`), so the next page recomputes them from the
rows that are left.
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
    hour: str | None = None             # YYYY-MM-DDTHH: only when summing hours of an open day
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


def hour_start(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H")


def _ledger_dims(dialect: str) -> dict:
    c = ledger.c
    if dialect == "sqlite":                     # naive UTC text, 'YYYY-MM-DD HH:MM:SS...'
        day = func.substr(c.created_at, 1, 10)
        hour = func.substr(c.created_at, 1, 10) + "T" + func.substr(c.created_at, 12, 2)
    else:
        day = func.to_char(func.timezone("UTC", c.created_at), "YYYY-MM-DD")
        hour = func.to_char(func.timezone("UTC", c.created_at), 'YYYY-MM-DD"T"HH24')
    return {"day": day, "hour": hour, "agent_id": c.agent_id, "key_id": c.key_id,
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

    def cells(self, tenant_id: str, first: date, last: date, now: datetime | None = None,
              dims: tuple[str, ...] = DIMENSIONS, histograms: bool = False, agent: str | None = None) -> list[Cell]:
        """The sums of the days first..last (inclusive) grouped by `dims` (one agent's, with `agent`):
        stored completed days (computed now if missing), stored completed hours of the days still
        open, then the rest live. A group may come more than once: the figures add them."""
        now = now or datetime.now(UTC)
        settled = now - timedelta(seconds=GRACE_S)
        stored_last = min(last, settled.date() - timedelta(days=1))
        open_start = day_start(max(first, stored_last + timedelta(days=1)))
        end = day_start(last + timedelta(days=1))
        cut = min(max(settled.replace(minute=0, second=0, microsecond=0), open_start), end)
        d = ledger_daily.c
        out: list[Cell] = []
        if first <= stored_last:
            self._fill_days(tenant_id, first, stored_last)
            out += self._stored(tenant_id, dims, histograms, agent, d.hour_start.is_(None),
                                d.day >= first.isoformat(), d.day <= stored_last.isoformat())
        if open_start < cut:
            self._fill_hours(tenant_id, open_start, cut)
            out += self._stored(tenant_id, dims, histograms, agent, d.day >= open_start.date().isoformat(),
                                d.hour_start >= hour_start(open_start), d.hour_start < hour_start(cut))
        if cut < end:
            with self.engine.connect() as conn:
                out += live_cells(conn, tenant_id, cut, end, dims, histograms, agent)
        return out

    def _stored(self, tenant_id: str, dims: tuple[str, ...], histograms: bool, agent: str | None, *where) -> list[Cell]:
        d = ledger_daily.c
        group = [getattr(d, dim) for dim in dims]
        measures = [func.sum(getattr(d, m)).label(m) for m in MEASURES]
        if histograms:
            measures += [func.sum(getattr(d, name)).label(name) for name in histogram.COLUMNS]
        where = [d.tenant_id == tenant_id, *where] + ([d.agent_id == agent] if agent is not None else [])
        with self.engine.connect() as conn:
            return _cells(conn, select(*group, *measures).where(*where).group_by(*group), dims, histograms)

    def cost(self, tenant_id: str, first: date, last: date, key_id: str | None = None,
             now: datetime | None = None) -> float:
        """USD spent by the tenant (or one of its keys) on first..last (the budget figures)."""
        cells = self.cells(tenant_id, first, last, now, dims=("key_id",))
        return round(sum(c.cost for c in cells if key_id is None or c.key_id == key_id), 8)

    def _marked(self, tenant_id: str, units: list[str]) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(ledger_days.c.day).where(
                ledger_days.c.tenant_id == tenant_id, ledger_days.c.day >= units[0],
                ledger_days.c.day <= units[-1])).scalars())

    def _store(self, tenant_id: str, marks: list[str], rows: list[dict], replace_hours_before: str | None) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(ledger_days), [{"tenant_id": tenant_id, "day": m} for m in marks])
                if rows:
                    conn.execute(insert(ledger_daily), rows)
                if replace_hours_before:        # the completed days' own sums replace their hours'
                    conn.execute(delete(ledger_daily).where(
                        ledger_daily.c.tenant_id == tenant_id, ledger_daily.c.hour_start.is_not(None),
                        ledger_daily.c.hour_start < replace_hours_before))
        except IntegrityError:
            pass                    # another worker stored (some of) these first; theirs stand

    def _fill_days(self, tenant_id: str, first: date, last: date) -> None:
        """Compute and store the missing days between first and last, in one query over their span."""
        days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
        done = self._marked(tenant_id, days)
        missing = [day for day in days if day not in done]
        if not missing:
            return
        start, end = day_start(date.fromisoformat(missing[0])), day_start(date.fromisoformat(missing[-1]))
        with self.engine.connect() as conn:
            cells = live_cells(conn, tenant_id, start, end + timedelta(days=1))
        wanted = set(missing)
        self._store(tenant_id, missing, [_row(tenant_id, c) for c in cells if c.day in wanted],
                    hour_start(end + timedelta(days=1)))

    def _fill_hours(self, tenant_id: str, start: datetime, end: datetime) -> None:
        """The same for the completed hours start..end of the days still open."""
        hours = [hour_start(start + timedelta(hours=i)) for i in range(int((end - start).total_seconds() // 3600))]
        done = self._marked(tenant_id, hours)
        missing = [h for h in hours if h not in done]
        if not missing:
            return
        first = datetime.strptime(missing[0], "%Y-%m-%dT%H").replace(tzinfo=UTC)
        last = datetime.strptime(missing[-1], "%Y-%m-%dT%H").replace(tzinfo=UTC)
        with self.engine.connect() as conn:
            cells = live_cells(conn, tenant_id, first, last + timedelta(hours=1), ("hour", *DIMENSIONS))
        wanted = set(missing)
        self._store(tenant_id, missing, [_row(tenant_id, c) for c in cells if c.hour in wanted], None)


def _row(tenant_id: str, cell: Cell) -> dict:
    row = {"tenant_id": tenant_id, "hour_start": cell.hour, **{d: getattr(cell, d) for d in DIMENSIONS},
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
