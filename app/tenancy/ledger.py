"""The usage ledger: one row per executed call, success or failure, and the tenant's totals.

A row is written after its call ends, and the call's answer is sent only once the row is committed:
a crash loses at most the rows of the calls in flight. Rows of calls ending together are committed
in one transaction (app/tenancy/group_commit.py): one COMMIT for many calls, each still waiting for
its own. Prompts and answers are not stored unless FLOWCALL_LOG_CONTENT=1.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, UTC

from sqlalchemy import Date, bindparam, case, cast, func, select

from app.tenancy.db import Precompiled, ledger
from app.tenancy.group_commit import GroupCommitter

GROUPS = ("model", "agent", "day", "provider", "key")


@dataclass(frozen=True)
class Row:
    tenant_id: str
    endpoint: str
    status: int
    agent_id: str | None = None
    key_id: str | None = None
    request_id: str | None = None
    model_requested: str | None = None
    model_served: str | None = None
    provider: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    latency_ms: int = 0
    error_code: str | None = None
    attempts: int = 0
    prompt: str | None = None
    answer: str | None = None
    routing_reason: str | None = None
    fallbacks: str | None = None
    upstream_ms: int | None = None
    error_message: str | None = None


class Ledger:
    def __init__(self, engine, log_content: bool = False):
        self.engine = engine
        self.log_content = log_content
        # The insert is compiled once: on the hot path, SQLAlchemy's per-statement compilation and
        # cache-key work cost more than the insert itself (bench/README.md, profile).
        columns = [c.name for c in ledger.columns if c.name != "id"]
        self._insert = Precompiled(ledger.insert().values({name: bindparam(name) for name in columns}), engine.dialect)
        self._sqlite = engine.dialect.name == "sqlite"
        self.committer = GroupCommitter(engine, self._write_batch)

    def write(self, row: Row, then=None, also=()) -> None:
        """Insert the row and return once it is committed. In the same transaction: `also`, fixed
        statements as (Precompiled, params) pairs (a budget hold's release, an idempotency key's
        answer), which a batch runs as one executemany per statement, and `then(conn)` if given.
        Raises when the row could not be written."""
        values = dict(row.__dict__)
        if not self.log_content:
            values["prompt"] = values["answer"] = None
        else:                               # a lone surrogate would fail the insert and lose the row
            for name in ("prompt", "answer"):
                if values[name] is not None:
                    values[name] = values[name].encode("utf-8", "replace").decode("utf-8")
        now = datetime.now(UTC)
        # SQLite stores SQLAlchemy DateTimes as naive UTC text; the driver sees raw parameters here
        values["created_at"] = now.replace(tzinfo=None).isoformat(" ") if self._sqlite else now
        self.committer.submit((self._insert.params(values), tuple(also), then))

    def _write_batch(self, conn, items) -> None:
        """One transaction: the rows in one executemany, each other statement in one executemany (on
        psycopg an executemany is pipelined: one round trip however many rows), then the callbacks."""
        conn.exec_driver_sql(self._insert.sql, [params for params, _, _ in items])
        grouped: dict[str, list] = {}
        for _, also, _ in items:
            for statement, params in also:
                grouped.setdefault(statement.sql, []).append(statement.params(params))
        for sql, params in grouped.items():
            conn.exec_driver_sql(sql, params)
        for _, _, then in items:
            if then is not None:
                then(conn)

    def spent_since(self, since: datetime, *, tenant_id: str | None = None, key_id: str | None = None) -> float:
        """USD spent by a tenant or a key since `since` (budgets)."""
        query = select(func.coalesce(func.sum(ledger.c.cost), 0.0)).where(ledger.c.created_at >= since)
        if tenant_id is not None:
            query = query.where(ledger.c.tenant_id == tenant_id)
        if key_id is not None:
            query = query.where(ledger.c.key_id == key_id)
        with self.engine.connect() as conn:
            return float(conn.execute(query).scalar_one())

    def usage(self, tenant_id: str, start: datetime, end: datetime, group_by: str | None) -> dict:
        """Totals of one tenant between start (inclusive) and end (exclusive), optionally grouped."""
        measures = [
            func.count().label("calls"),
            func.sum(case((ledger.c.status >= 400, 1), else_=0)).label("errors"),
            func.coalesce(func.sum(ledger.c.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(ledger.c.output_tokens), 0).label("output_tokens"),
            func.coalesce(func.sum(ledger.c.cost), 0.0).label("cost"),
        ]
        where = (ledger.c.tenant_id == tenant_id, ledger.c.created_at >= start, ledger.c.created_at < end)
        with self.engine.connect() as conn:
            totals = _flat(conn.execute(select(*measures).where(*where)).mappings().one())
            groups = []
            if group_by:
                column = {
                    "model": func.coalesce(ledger.c.model_served, ledger.c.model_requested),
                    "agent": ledger.c.agent_id, "provider": ledger.c.provider, "key": ledger.c.key_id,
                    "day": cast(ledger.c.created_at, Date) if self.engine.dialect.name != "sqlite"
                    else func.substr(ledger.c.created_at, 1, 10),
                }[group_by].label("group")
                rows = conn.execute(select(column, *measures).where(*where).group_by(column).order_by(column))
                groups = [{"group": str(r["group"]) if r["group"] is not None else None, **_flat(r)}
                          for r in rows.mappings()]
        return {"totals": totals, "groups": groups}


def _flat(r) -> dict:
    return {"calls": int(r["calls"] or 0), "errors": int(r["errors"] or 0),
            "input_tokens": int(r["input_tokens"] or 0), "output_tokens": int(r["output_tokens"] or 0),
            "total_tokens": int(r["input_tokens"] or 0) + int(r["output_tokens"] or 0),
            "cost": round(float(r["cost"] or 0.0), 8)}


def month_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def parse_day(value: str | None, default: date) -> datetime:
    """`YYYY-MM-DD` or an ISO timestamp -> an aware UTC datetime."""
    if not value:
        return datetime.combine(default, time.min, tzinfo=UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def default_range(today: date | None = None) -> tuple[date, date]:
    today = today or datetime.now(UTC).date()
    return today.replace(day=1), today + timedelta(days=1)
