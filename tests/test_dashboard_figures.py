"""The dashboard's numbers are the ledger's: its data layer and its pages against GET /api/v3/llm/usage
over the same range and grouping, on SQLite and (when configured) PostgreSQL, with completed days
read from the rollups and today read live; and after a purge, which drops the purged days' rollups."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, UTC

import pytest
from sqlalchemy import func, select

from app.dashboard import figures, histogram
from app.dashboard.queries import Scope
from app.tenancy.db import ledger_daily, ledger_days
from app.tenancy.ledger import month_start
from app.tenancy.purge import purge_ledger
from backends import DATABASES, fresh_database_url
from dashboard_seed import seed, sign_in
from nodes import create_app

MODELS = ("openai.gpt-4o", "anthropic.claude-sonnet-4-6", None)


@pytest.fixture(params=DATABASES)
def dash_app(request, tmp_path):
    app = create_app({"FLOWCALL_DATABASE_URL": fresh_database_url(request.param, tmp_path)})
    app.config["TESTING"] = True
    yield app
    app.extensions["flowcall"].store.close()


def _populate(app, tenant: str, other: str, now: datetime) -> tuple[str, list[str]]:
    """Rows on 40 days (past month, this month, today) for `tenant`, two agents and two keys; some for `other`."""
    svc = app.extensions["flowcall"]
    engine = svc.store.engine
    key_a, plain = svc.store.create_key(tenant, name="a")
    agents = [str(uuid.uuid4()), str(uuid.uuid4())]
    for day in range(40):
        when = now - timedelta(days=day, hours=(day * 7) % 5)
        for i in range(3):
            failed = (day + i) % 4 == 0
            seed(engine, when - timedelta(minutes=i), tenant_id=tenant, agent_id=agents[(day + i) % 2],
                 key_id=key_a.id if i else "k2", request_id=uuid.uuid4().hex, model_requested="auto",
                 model_served=MODELS[(day + i) % 3], provider=["openai", "anthropic", None][(day + i) % 3],
                 input_tokens=10 * day + i, output_tokens=day + 3 * i, cost=round(0.00012345 * (day + i + 1), 8),
                 latency_ms=40 * i + day, upstream_ms=30 * i, status=502 if failed else 200,
                 error_code="provider_error" if failed else None)
        seed(engine, when, tenant_id=other, request_id=uuid.uuid4().hex, model_served="openai.gpt-4o",
             input_tokens=999, cost=9.0)
    return plain, agents


def _usage(client, key: str, start, end, group_by: str | None = None) -> dict:
    params = {"from": start.isoformat(), "to": end.isoformat(), **({"group_by": group_by} if group_by else {})}
    response = client.get("/api/v3/llm/usage", query_string=params, headers={"X-Api-Key": key})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def _same(ours: dict, theirs: dict) -> None:
    for name in ("calls", "errors", "input_tokens", "output_tokens", "total_tokens"):
        assert ours[name] == theirs[name], name
    assert ours["cost"] == pytest.approx(theirs["cost"], abs=1e-8)


def test_figures_equal_the_usage_endpoint_for_every_grouping(dash_app):
    client = dash_app.test_client()
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    key, agents = _populate(dash_app, tenant, other, now)
    dashboard = dash_app.extensions["flowcall"].dashboard
    first, last = now.date() - timedelta(days=29), now.date()
    start, end = datetime.combine(first, datetime.min.time(), UTC), datetime.combine(last + timedelta(days=1),
                                                                                       datetime.min.time(), UTC)
    for attempt in ("computed", "stored"):                  # the first read computes the rollups, the second reads them
        cells = dashboard.cells(Scope(tenant), first, last)
        usage = _usage(client, key, start, end)
        _same(figures.totals(cells), usage["totals"])
        for by, group_by in (("model", "model"), ("agent", "agent"), ("provider", "provider"), ("key", "key")):
            ours = {r["group"]: r for r in figures.breakdown(cells, by)}
            theirs = {g["group"]: g for g in _usage(client, key, start, end, group_by)["groups"]}
            assert set(ours) == set(theirs), (attempt, by)
            for group, row in ours.items():
                _same(row, theirs[group])
            # what a page reads: summed by the database per group, histograms included
            grouped = figures.breakdown(dashboard.cells(Scope(tenant), first, last, dims=(figures.FIELD[by],),
                                                        histograms=True), by)
            every = figures.breakdown(dashboard.cells(Scope(tenant), first, last, histograms=True), by)
            assert grouped == every and all(r["latency_p95"] and r["upstream_p50"] for r in grouped), (attempt, by)
        days = {d["day"]: d for d in figures.daily(cells, first, last)}
        for g in _usage(client, key, start, end, "day")["groups"]:
            _same(days[g["group"]], g)
    with dash_app.extensions["flowcall"].store.engine.connect() as conn:
        stored_days = conn.execute(select(func.count()).select_from(ledger_days)
                                   .where(ledger_days.c.tenant_id == tenant)).scalar_one()
    assert stored_days >= 28                                  # completed days were rolled up, today was not
    # one agent's view is that agent's rows
    one = figures.totals(dashboard.cells(Scope(tenant), first, last, agent=agents[0]))
    both = figures.totals(dashboard.cells(Scope(tenant), first, last))
    assert 0 < one["calls"] < both["calls"]


def test_the_overview_page_shows_the_usage_endpoints_numbers(dash_app):
    client = dash_app.test_client()
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    key, _ = _populate(dash_app, tenant, other, now)
    assert sign_in(client, key).status_code == 303
    first = now.date() - timedelta(days=6)
    page = client.get(f"/dashboard?from={first.isoformat()}&to={now.date().isoformat()}").get_data(as_text=True)
    start = datetime.combine(first, datetime.min.time(), UTC)
    totals = _usage(client, key, start, start + timedelta(days=7))["totals"]

    def shown(id_: str) -> str:
        return re.search(rf'id="{id_}">([^<]*)<', page).group(1).replace(",", "")
    assert int(shown("total-calls")) == totals["calls"] and int(shown("total-errors")) == totals["errors"]
    assert int(shown("total-tokens")) == totals["total_tokens"]
    assert float(shown("total-cost")) == pytest.approx(totals["cost"], abs=1e-8)
    month = _usage(client, key, month_start(now), now + timedelta(seconds=1))["totals"]
    budget_row = re.search(r'<th scope="row">tenant</th><td>([^<]*)</td>', page).group(1)
    assert float(budget_row) == pytest.approx(month["cost"], abs=1e-8)


def test_a_purge_drops_the_rollups_of_the_purged_days(dash_app):
    client = dash_app.test_client()
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    key, _ = _populate(dash_app, tenant, other, now)
    svc = dash_app.extensions["flowcall"]
    first, last = now.date() - timedelta(days=39), now.date() - timedelta(days=1)
    before_purge = figures.totals(svc.dashboard.cells(Scope(tenant), first, last))   # rolls those days up
    cutoff = month_start(now) - timedelta(days=3, hours=5)                            # mid-day, before this month
    purge_ledger(svc.store.engine, cutoff)
    after = figures.totals(svc.dashboard.cells(Scope(tenant), first, last))
    start = datetime.combine(first, datetime.min.time(), UTC)
    usage = _usage(client, key, start, datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC))
    _same(after, usage["totals"])
    assert after["calls"] < before_purge["calls"]
    with svc.store.engine.connect() as conn:
        old = conn.execute(select(func.count()).select_from(ledger_daily).where(
            ledger_daily.c.day < cutoff.date().isoformat())).scalar_one()
    assert old == 0


def test_histogram_percentiles_are_bucket_bounds():
    values = [5, 5, 20, 80, 900, 200_000]
    hist = histogram.total([tuple(1 if v <= b else 0 for b in histogram.BOUNDS_MS) + (1,) for v in values])
    assert hist[-1] == 6 and hist[0] == 2 and hist[1] == 3
    assert histogram.percentile(hist, 0.5) == "<= 25 ms"
    assert histogram.percentile(hist, 0.95) == f"> {histogram.BOUNDS_MS[-1]} ms"
    assert histogram.percentile(histogram.EMPTY, 0.5) is None
    assert histogram.total([]) == histogram.EMPTY


def test_the_open_day_is_summed_per_completed_hour_then_per_day(dash_app, monkeypatch):
    """A day still open: its completed hours stored, the current one live; once the day completes
    (after the grace), its own sums replace its hours'. The totals equal Ledger.usage throughout."""
    svc = dash_app.extensions["flowcall"]
    engine, tenant = svc.store.engine, str(uuid.uuid4())
    day = datetime(2026, 1, 10, tzinfo=UTC)
    for hour in (0, 3, 14, 15, 23):
        for minute in (0, 59):
            seed(engine, day + timedelta(hours=hour, minutes=minute, seconds=30), tenant_id=tenant,
                 request_id=uuid.uuid4().hex, model_served=f"m.{hour % 2}", input_tokens=hour + 1,
                 cost=0.001 * (hour + 1), latency_ms=hour * 10, upstream_ms=hour, status=500 if hour == 3 else 200)
    seed(engine, day + timedelta(days=1, seconds=10), tenant_id=tenant, request_id="next-day", input_tokens=7)
    expected = svc.ledger.usage(tenant, day, day + timedelta(days=1), "model")

    def check(now: datetime) -> None:
        cells = svc.dashboard.rollups.cells(tenant, day.date(), day.date(), now, dims=("model",), histograms=True)
        _same(figures.totals(cells), expected["totals"])
        rows = {r["group"]: r for r in figures.breakdown(cells, "model")}
        for g in expected["groups"]:
            _same(rows[g["group"]], g)

    def stored(hourly: bool) -> int:
        column = ledger_daily.c.hour_start
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(ledger_daily).where(
                ledger_daily.c.tenant_id == tenant, ledger_daily.c.day == day.date().isoformat(),
                column.is_not(None) if hourly else column.is_(None))).scalar_one()

    check(day + timedelta(hours=15, minutes=30))             # hours 0-14 stored, 15 live
    assert stored(hourly=True) > 0 and stored(hourly=False) == 0
    check(day + timedelta(days=1, minutes=2))                # within the grace: hours 0-22 stored, 23 live
    rollups = svc.dashboard.rollups

    def not_from_the_ledger(*args):
        raise AssertionError("a day whose hours are stored is summed from them")

    monkeypatch.setattr(rollups, "_days_from_ledger", not_from_the_ledger)
    check(day + timedelta(days=1, minutes=10))               # complete: hour 23 summed, then the day from its hours
    monkeypatch.undo()
    assert stored(hourly=False) > 0
    assert stored(hourly=True) > 0                           # kept for a page still inside the grace
    later = day + timedelta(days=2, minutes=10)
    svc.dashboard.rollups.cells(tenant, day.date(), (day + timedelta(days=1)).date(), later)   # builds the next day
    assert stored(hourly=True) == 0                          # the hours of a day over a day old go with it
    check(later)
    assert svc.dashboard.rollups.cost(tenant, day.date(), day.date(), now=day + timedelta(days=2)) == \
        pytest.approx(expected["totals"]["cost"], abs=1e-8)


def test_two_workers_rolling_up_the_same_days_store_them_once(dash_app):
    """Two processes may both find a day missing and both compute it: the second's insert loses the
    race (its marks collide), is rolled back whole, and the figures stay those of one copy."""
    svc = dash_app.extensions["flowcall"]
    engine, tenant = svc.store.engine, str(uuid.uuid4())
    day = datetime(2026, 2, 3, 12, tzinfo=UTC)
    for i in range(4):
        seed(engine, day + timedelta(minutes=i), tenant_id=tenant, request_id=uuid.uuid4().hex, input_tokens=5)
    rollups = svc.dashboard.rollups
    later = day + timedelta(days=3)
    first = figures.totals(rollups.cells(tenant, day.date(), day.date(), later))
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(ledger_daily).where(ledger_daily.c.tenant_id == tenant))
                .mappings()]
    for row in rows:
        row.pop("id")
    assert not rollups._store(tenant, [day.date().isoformat()], rows)      # the slower worker's copy
    again = figures.totals(rollups.cells(tenant, day.date(), day.date(), later))
    assert again == first and first["calls"] == 4 and first["input_tokens"] == 20


def test_the_scheduled_roll_stores_every_tenants_days_and_hours_ahead_of_the_pages(dash_app):
    """`Rollups.roll` (flowcall worker, flowcall db rollup) stores every tenant's completed days and
    hours, so a page then sums nothing itself; a second roll finds nothing to do; the figures are the
    ledger's."""
    svc = dash_app.extensions["flowcall"]
    engine, rollups = svc.store.engine, svc.dashboard.rollups
    tenants = [str(uuid.uuid4()), str(uuid.uuid4())]
    now = datetime(2026, 3, 5, 14, 30, tzinfo=UTC)
    for i in range(60):
        when = now - timedelta(hours=2 * i, minutes=7)
        seed(engine, when, tenant_id=tenants[i % 2], request_id=uuid.uuid4().hex, model_served=f"m.{i % 3}",
             input_tokens=i, cost=0.0001 * i, latency_ms=i, upstream_ms=i // 2, status=500 if i % 7 == 0 else 200)
    first = (now - timedelta(days=6)).date()

    def marks() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(ledger_days)).scalar_one()

    done = rollups.roll(now, days=7)
    assert done["tenants"] >= 2 and done["units_stored"] > 0
    stored = marks()
    assert rollups.roll(now, days=7)["units_stored"] == 0
    for tenant in tenants:
        cells = rollups.cells(tenant, first, now.date(), now, dims=("model",), histograms=True)
        assert marks() == stored                             # the page summed nothing itself
        expected = svc.ledger.usage(tenant, datetime.combine(first, datetime.min.time(), UTC),
                                    now + timedelta(seconds=1), "model")
        _same(figures.totals(cells), expected["totals"])
        assert figures.totals(cells)["calls"] == 30


def test_hours_another_process_stored_meanwhile_are_not_stored_twice(dash_app, monkeypatch):
    """A roller and a page both find hours missing; the one that loses the race (its marks collide)
    has its whole transaction rolled back, looks again and stores only what is still missing."""
    svc = dash_app.extensions["flowcall"]
    engine, rollups, tenant = svc.store.engine, svc.dashboard.rollups, str(uuid.uuid4())
    day = datetime(2026, 4, 7, tzinfo=UTC)
    for hour in range(24):
        seed(engine, day + timedelta(hours=hour, minutes=5), tenant_id=tenant, request_id=uuid.uuid4().hex,
             input_tokens=hour + 1, cost=0.001)
    rollups._fill_hours(tenant, [f"2026-04-07T{h:02d}" for h in (3, 4, 5)])     # the other process, first
    real, stale = rollups._missing, []

    def missing_once_stale(tenant_id, units):
        if not stale:                                   # our first look predates the other's commit
            stale.append(True)
            return list(units)
        return real(tenant_id, units)

    monkeypatch.setattr(rollups, "_missing", missing_once_stale)
    rollups._fill_hours(tenant, [f"2026-04-07T{h:02d}" for h in range(24)])
    monkeypatch.undo()
    with engine.connect() as conn:
        per_hour = dict(conn.execute(select(ledger_daily.c.hour_start, func.sum(ledger_daily.c.calls)).where(
            ledger_daily.c.tenant_id == tenant).group_by(ledger_daily.c.hour_start)).all())
    assert per_hour == {f"2026-04-07T{h:02d}": 1 for h in range(24)}
    cells = rollups.cells(tenant, day.date(), day.date(), day + timedelta(days=1, hours=1))
    assert figures.totals(cells)["input_tokens"] == sum(range(1, 25))


def test_with_a_roller_a_page_leaves_unsummed_history_to_it(tmp_path, monkeypatch):
    """FLOWCALL_DASHBOARD_ROLLER_RUNNING (set by gunicorn.conf.py beside its roller): a page that would
    read more than PAGE_ROWS unsummed ledger rows answers 503 with a page that reloads itself, reading
    no ledger history in the web worker; a tenant with fewer (here: none) is summed by the page; once
    the roller has rolled, the first tenant's page answers with the ledger's figures."""
    from app.dashboard import rollups
    monkeypatch.setattr(rollups, "PAGE_ROWS", 50)             # _populate writes 3 rows a day for the tenant
    url = fresh_database_url("sqlite", tmp_path)
    app = create_app({"FLOWCALL_DATABASE_URL": url, "FLOWCALL_DASHBOARD_ROLLER_RUNNING": "1"})
    app.config["TESTING"] = True
    svc = app.extensions["flowcall"]
    client = app.test_client()
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    key, _ = _populate(app, tenant, other, now)
    sign_in(client, key)
    with svc.store.engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(ledger_days)).scalar_one()
    page = client.get("/dashboard")
    assert page.status_code == 503 and page.headers["Retry-After"] == "15"
    assert '<meta http-equiv="refresh" content="15">' in page.get_data(as_text=True)
    with svc.store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ledger_days)).scalar_one() == before
    _, newcomer = svc.store.create_key(str(uuid.uuid4()), name="new")
    fresh = app.test_client()
    assert sign_in(fresh, newcomer).status_code == 303
    assert fresh.get("/dashboard").status_code == 200       # nothing to read: summed (as empty) at once
    svc.dashboard.rollups.roll(days=35)                     # what the roller does
    page = client.get("/dashboard")
    assert page.status_code == 200
    usage = _usage(client, key, month_start(now), now + timedelta(seconds=1))["totals"]
    budget_row = re.search(r'<th scope="row">tenant</th><td>([^<]*)</td>', page.get_data(as_text=True)).group(1)
    assert float(budget_row) == pytest.approx(usage["cost"], abs=1e-8)
    svc.store.close()
