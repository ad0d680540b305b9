"""The ledger summed per tenant, UTC day and dimension, the unit every dashboard figure is added up
from; a page asks for the sums grouped by the dimensions it shows ("cells"), and the database adds.

Each completed hour is summed once from the ledger into `ledger_daily` (rows with `hour_start`), and
each completed day once (rows without): from its 24 stored hours, or straight from the ledger when
they were never stored (a backfill), each with a `ledger_days` mark so that an empty hour or day is
not summed again. A page reads stored days, the stored hours of the day still
open, and only the current hour live from the ledger. Summing is done ahead of the pages by
`Rollups.roll`, which `flowcall worker` runs every ROLL_EVERY_S (and `flowcall db rollup` once, for
cron), in its own process: a page then finds at most the hour that completed since the last roll
missing, and sums that itself. Without a roller, a page sums whatever it finds missing (the first
page over a busy month reads the whole month once). Nothing on the call path writes here.

A day or hour counts as completed GRACE_S after its end: a row's time is taken just before its
insert commits, so a row stamped 23:59:59.9 may land a moment after midnight. Pages and rollers
decide by their own clocks, so a page still inside the grace may read hours of a day another
process has just summed: the hours are kept until the day is more than a day old. `flowcall db
purge` drops the sums of the days it touches (`drop_before`), so they are summed again from the
rows that are left.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, UTC

from sqlalchemy import case, delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from app.dashboard import histogram
from app.tenancy.db import ledger, ledger_daily, ledger_days

GRACE_S = 300
ROLL_DAYS = 35                  # what the scheduled roll keeps stored: the default 30-day range and the month
ROLL_EVERY_S = 300
HOURS_PER_QUERY = 24            # one ledger range query (and transaction) per day's worth of hours
DAYS_PER_QUERY = 31             # a backfill's days: one ledger range query (and transaction) per month
FILL_ATTEMPTS = 3
PAGE_ROWS = 20_000              # with a roller: the most ledger rows a page sums itself (about 0.4 s on SQLite)
# Every tenant with a ledger row, in tenant order, one index probe each (a loose scan of
# ix_ledger_tenant_created), instead of reading every row's tenant_id.
_TENANTS = """
WITH RECURSIVE t(id) AS (
    SELECT min(tenant_id) FROM ledger
    UNION ALL
    SELECT (SELECT min(tenant_id) FROM ledger WHERE tenant_id > t.id) FROM t WHERE t.id IS NOT NULL
) SELECT id FROM t"""
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
    def __init__(self, engine, pages_sum_history: bool = True):
        """`pages_sum_history` False (a roller runs): a page that would read more than PAGE_ROWS
        ledger rows to sum what it finds missing raises RollupPending instead of reading them in
        the web worker."""
        self.engine = engine
        self.pages_sum_history = pages_sum_history

    def cells(self, tenant_id: str, first: date, last: date, now: datetime | None = None,
              dims: tuple[str, ...] = DIMENSIONS, histograms: bool = False, agent: str | None = None) -> list[Cell]:
        """The sums of the days first..last (inclusive) grouped by `dims` (one agent's, with `agent`):
        stored completed days, stored completed hours of the days still open (either computed now if
        the scheduled roll has not stored them yet), then the rest live. A group may come more than
        once: the figures add them."""
        now = now or datetime.now(UTC)
        span = _Span(first, last, now)
        self._fill(tenant_id, span, self.pages_sum_history)
        d = ledger_daily.c
        out: list[Cell] = []
        if first <= span.stored_last:
            out += self._stored(tenant_id, dims, histograms, agent, d.hour_start.is_(None),
                                d.day >= first.isoformat(), d.day <= span.stored_last.isoformat())
        if span.open_start < span.cut:
            out += self._stored(tenant_id, dims, histograms, agent, d.day >= span.open_start.date().isoformat(),
                                d.hour_start >= hour_start(span.open_start), d.hour_start < hour_start(span.cut))
        if span.cut < span.end:
            with self.engine.connect() as conn:
                out += live_cells(conn, tenant_id, span.cut, span.end, dims, histograms, agent)
        return out

    def roll(self, now: datetime | None = None, days: int = ROLL_DAYS) -> dict[str, int]:
        """What `flowcall worker` does every ROLL_EVERY_S and `flowcall db rollup` once: store every
        tenant's completed days and hours of the last `days` days, so that pages read only sums and
        the current hour. Runs in its own process, never in a web worker."""
        now = now or datetime.now(UTC)
        span = _Span(now.date() - timedelta(days=days - 1), now.date(), now)
        stored = tenants = 0
        with self.engine.connect() as conn:
            ids = [t for t in conn.execute(text(_TENANTS)).scalars() if t is not None]
        for tenant_id in ids:
            tenants += 1
            stored += self._fill(tenant_id, span, history=True)
        return {"tenants": tenants, "units_stored": stored}

    def _fill(self, tenant_id: str, span: _Span, history: bool) -> int:
        """Store what `span` reads from rollups and is missing: its completed days (from their stored
        hours, else from the ledger) and the completed hours of its open days -> units stored."""
        stored = 0
        if span.first <= span.stored_last:
            days = _units(day_start(span.first), day_start(span.stored_last + timedelta(days=1)), timedelta(days=1))
            for _ in range(FILL_ATTEMPTS):
                missing = self._missing(tenant_id, days)
                if not missing:
                    break
                summed = self._hours_stored(tenant_id, missing)
                if not history:
                    self._within_page_bound(tenant_id, missing, summed)
                if summed:                  # the usual case: the roller stored all but the last hour or so
                    stored += self._fill_hours(tenant_id, [h for day in summed for h in _hours_of(day)])
                    stored += self._build_days(tenant_id, summed, span.now)
                for run, start, end in _ranges([day for day in missing if day not in summed], DAYS_PER_QUERY, DAY):
                    stored += self._days_from_ledger(tenant_id, run, start, end, span.now)
            else:
                raise RollupConflict(f"tenant {tenant_id}: days still missing after {FILL_ATTEMPTS} attempts")
        if span.open_start < span.cut:
            stored += self._fill_hours(tenant_id, _units(span.open_start, span.cut))
        return stored

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

    def _missing(self, tenant_id: str, units: list[str]) -> list[str]:
        with self.engine.connect() as conn:
            done = set(conn.execute(select(ledger_days.c.day).where(
                ledger_days.c.tenant_id == tenant_id, ledger_days.c.day >= units[0],
                ledger_days.c.day <= units[-1])).scalars())
        return [u for u in units if u not in done]

    def _within_page_bound(self, tenant_id: str, missing: list[str], summed: list[str]) -> None:
        """Raise RollupPending when summing `missing` days would read more than PAGE_ROWS ledger rows:
        the unsummed hours of the `summed` ones, the whole of the others. Counted with a LIMIT, so
        the check itself reads at most PAGE_ROWS + 1 index entries."""
        hours = self._missing(tenant_id, [h for day in summed for h in _hours_of(day)]) if summed else []
        days = [day for day in missing if day not in summed]
        ranges = _ranges(hours, len(hours), HOUR) + _ranges(days, len(days), DAY)
        left = PAGE_ROWS
        with self.engine.connect() as conn:
            for _run, start, end in ranges:
                rows = select(ledger.c.id).where(ledger.c.tenant_id == tenant_id, ledger.c.created_at >= start,
                                                 ledger.c.created_at < end).limit(left + 1).subquery()
                left -= conn.execute(select(func.count()).select_from(rows)).scalar_one()
                if left < 0:
                    raise RollupPending(f"over {PAGE_ROWS} ledger rows of tenant {tenant_id} are not summed yet")

    def _hours_stored(self, tenant_id: str, days: list[str]) -> list[str]:
        """Those of `days` with some of their hours stored: their other hours are summed (at most a
        day's rows, usually the last hour's), then the day from its hours. A day with none (a
        backfill) is summed straight from the ledger instead, without storing its hours."""
        with self.engine.connect() as conn:
            marks = conn.execute(select(ledger_days.c.day).where(
                ledger_days.c.tenant_id == tenant_id, ledger_days.c.day > days[0],
                ledger_days.c.day < days[-1] + "U", func.length(ledger_days.c.day) == len("YYYY-MM-DDTHH"))).scalars()
            per_day: dict[str, int] = {}
            for mark in marks:
                per_day[mark[:10]] = per_day.get(mark[:10], 0) + 1
        return [day for day in days if per_day.get(day)]

    def _days_from_ledger(self, tenant_id: str, days: list[str], start: datetime, end: datetime,
                          now: datetime) -> int:
        """Sum consecutive `days` (start..end) straight from the ledger (a backfill: their hours were
        never stored)."""
        with self.engine.connect() as conn:
            cells = live_cells(conn, tenant_id, start, end)
        return len(days) if self._store(tenant_id, days, [_row(tenant_id, c) for c in cells], now) else 0

    def _fill_hours(self, tenant_id: str, hours: list[str]) -> int:
        """Compute and store the missing ones of `hours` from the ledger, a day's worth (at most) of
        consecutive hours per query and transaction. Another process storing some of them at the
        same time makes our transaction fail whole (the marks collide): we look again, so on return
        every hour is stored exactly once, by one of us."""
        stored = 0
        for _ in range(FILL_ATTEMPTS):
            missing = self._missing(tenant_id, hours) if hours else []
            if not missing:
                return stored
            for run, start, end in _ranges(missing, HOURS_PER_QUERY, HOUR):
                with self.engine.connect() as conn:
                    cells = live_cells(conn, tenant_id, start, end, ("hour", *DIMENSIONS))
                if self._store(tenant_id, run, [_row(tenant_id, c) for c in cells]):
                    stored += len(run)
        raise RollupConflict(f"tenant {tenant_id}: hours still missing after {FILL_ATTEMPTS} attempts")

    def _build_days(self, tenant_id: str, days: list[str], now: datetime) -> int:
        """Sum each day's 24 stored hours into the day's own rows (no ledger read), in one transaction
        with the days' marks. The hours stay until their day is over a day old (a page whose clock is
        still inside the grace reads them), then go with the next days stored."""
        d = ledger_daily.c
        dims = [getattr(d, name) for name in DIMENSIONS if name != "day"]
        sums = [func.sum(getattr(d, name)) for name in (*MEASURES, *histogram.COLUMNS)]
        built = select(d.tenant_id, d.day, *dims, *sums).where(
            d.tenant_id == tenant_id, d.hour_start.is_not(None), d.day.in_(days)).group_by(d.tenant_id, d.day, *dims)
        columns = ["tenant_id", "day", *(c.name for c in dims), *MEASURES, *histogram.COLUMNS]
        return len(days) if self._store(tenant_id, days, insert(ledger_daily).from_select(columns, built), now) else 0

    def _store(self, tenant_id: str, marks: list[str], rows, now: datetime | None = None) -> bool:
        """Insert the marks and the rows (dicts, or an INSERT statement) in one transaction; with
        `now` (days being stored), also forget the tenant's hours of days over a day old."""
        d = ledger_daily.c
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(ledger_days), [{"tenant_id": tenant_id, "day": m} for m in marks])
                if isinstance(rows, list):
                    if rows:
                        conn.execute(insert(ledger_daily), rows)
                else:
                    conn.execute(rows)
                if now is not None:
                    old = (now.date() - timedelta(days=1)).isoformat()
                    conn.execute(delete(ledger_daily).where(d.tenant_id == tenant_id, d.hour_start.is_not(None),
                                                            d.day < old))
                    conn.execute(delete(ledger_days).where(ledger_days.c.tenant_id == tenant_id,
                                                           func.length(ledger_days.c.day) == len("YYYY-MM-DDTHH"),
                                                           ledger_days.c.day < old))
        except IntegrityError:
            return False            # another process stored (some of) these first; theirs stand
        return True


class RollupPending(RuntimeError):
    """More history to sum than a page may read itself while a roller is there to do it."""


class RollupConflict(RuntimeError):
    """Hours that kept colliding with another process's: never expected, since a collision means the
    other stored them."""


@dataclass(frozen=True)
class _Span:
    """Which of first..last are read from stored days, stored hours and the ledger, seen at `now`."""
    first: date
    last: date
    now: datetime

    @property
    def stored_last(self) -> date:
        settled = self.now - timedelta(seconds=GRACE_S)
        return min(self.last, settled.date() - timedelta(days=1))

    @property
    def open_start(self) -> datetime:
        return day_start(max(self.first, self.stored_last + timedelta(days=1)))

    @property
    def end(self) -> datetime:
        return day_start(self.last + timedelta(days=1))

    @property
    def cut(self) -> datetime:
        settled = (self.now - timedelta(seconds=GRACE_S)).replace(minute=0, second=0, microsecond=0)
        return min(max(settled, self.open_start), self.end)


def _units(start: datetime, end: datetime, step: timedelta = timedelta(hours=1)) -> list[str]:
    """The days (step of a day) or hours between start and end, as ledger_days names them."""
    out, at = [], start
    while at < end:
        out.append(at.date().isoformat() if step == timedelta(days=1) else hour_start(at))
        at += step
    return out


HOUR, DAY = "%Y-%m-%dT%H", "%Y-%m-%d"
STEPS = {HOUR: timedelta(hours=1), DAY: timedelta(days=1)}


def _at(unit: str, form: str) -> datetime:
    return datetime.strptime(unit, form).replace(tzinfo=UTC)


def _ranges(units: list[str], size: int, form: str) -> list[tuple[list[str], datetime, datetime]]:
    """Each run of consecutive `units` (see _runs) with the ledger range it covers: start <= t < end."""
    step = STEPS[form]
    return [(run, _at(run[0], form), _at(run[-1], form) + step) for run in _runs(units, size, form, step)]


def _hours_of(day: str) -> list[str]:
    start = day_start(date.fromisoformat(day))
    return _units(start, start + timedelta(days=1))


def _runs(units: list[str], size: int, form: str, step: timedelta) -> list[list[str]]:
    """Consecutive units (hours or days, named in `form`) in runs of at most `size`: one ledger range
    query each."""
    runs: list[list[str]] = []
    previous = None
    for h in units:
        at = datetime.strptime(h, form)
        if runs and previous is not None and at - previous == step and len(runs[-1]) < size:
            runs[-1].append(h)
        else:
            runs.append([h])
        previous = at
    return runs


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
