"""The database: tables, engines, and the migration check the service runs before it starts.

Schema changes go through Alembic migrations in `app/migrations/` (`flowcall db upgrade`); the
service refuses to start on a database that is not at the latest revision, rather than failing on
the first query that touches a missing column.
"""
from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import TypeVar

from sqlalchemy import (BigInteger, Boolean, Column, DateTime, Float, Index, Integer, MetaData, Numeric, String,
                        Table, Text, create_engine, event)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError

from app.readable import readable_now

T = TypeVar("T")

metadata = MetaData()
_ID = BigInteger().with_variant(Integer(), "sqlite")     # SQLite autoincrements only INTEGER keys
_MONEY = Numeric(18, 8, asdecimal=False)

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(32), primary_key=True),
    Column("secret_hash", String(64), nullable=False),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("agent_id", String(64), nullable=True),
    Column("name", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("budget_usd", _MONEY, nullable=True),
)

# The limit columns repeat api_keys' on purpose: a key and its tenant are the two scopes of the same
# Limits (app/tenancy/store.py), each set on its own.
tenants = Table(
    "tenants", metadata,
    Column("id", String(64), primary_key=True),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("budget_usd", _MONEY, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

ledger = Table(
    "ledger", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("agent_id", String(64), nullable=True),
    Column("key_id", String(32), nullable=True),
    Column("request_id", String(128), nullable=True),
    Column("endpoint", String(64), nullable=False),
    Column("model_requested", String(200), nullable=True),
    Column("model_served", String(200), nullable=True),
    Column("provider", String(32), nullable=True),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("cost", _MONEY, nullable=True),
    Column("latency_ms", Integer, nullable=False, default=0),
    Column("status", Integer, nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("prompt", Text, nullable=True),        # only with FLOWCALL_LOG_CONTENT=1
    Column("answer", Text, nullable=True),
    Column("routing_reason", String(500), nullable=True),     # the dashboard's call detail (issue 17)
    Column("fallbacks", String(1000), nullable=True),         # the routing's untried fallbacks, comma-separated
    Column("upstream_ms", Integer, nullable=True),            # time at the provider; latency_ms minus it is ours
    Column("error_message", String(500), nullable=True),      # what the caller was told (the error's message)
    Index("ix_ledger_tenant_created", "tenant_id", "created_at"),
    Index("ix_ledger_key_created", "key_id", "created_at"),
)

# The dashboard (app/dashboard/): server-side sessions (the cookie holds a random token, this its SHA-256),
# and rollups of completed UTC days (and of the completed hours of the day still open), computed when a
# page first asks (`ledger_days` marks a tenant's day or hour as rolled up, even an empty one). Nothing
# on the call path touches either.
dashboard_sessions = Table(
    "dashboard_sessions", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("agent_id", String(64), nullable=True),
    Column("key_id", String(32), nullable=True),
    Column("subject", String(200), nullable=True),
    Column("csrf", String(64), nullable=False),
    Column("expires_at", Float, nullable=False, index=True),         # epoch seconds
)

ledger_days = Table(
    "ledger_days", metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("day", String(13), primary_key=True),                     # YYYY-MM-DD, or YYYY-MM-DDTHH: an hour, UTC
)

ledger_daily = Table(
    "ledger_daily", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("day", String(10), nullable=False),
    Column("hour_start", String(13), nullable=True),      # set: one hour's sums of a day still open (YYYY-MM-DDTHH)
    Column("agent_id", String(64), nullable=True),
    Column("key_id", String(32), nullable=True),
    Column("model", String(200), nullable=True),
    Column("provider", String(32), nullable=True),
    Column("endpoint", String(64), nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("calls", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost", Float, nullable=False),
    # latency histograms, one column per bucket (app/dashboard/histogram.py): lat_*, up_*, oh_*
    *[Column(f"{kind}_{i}", Integer, nullable=False, server_default="0")
      for kind in ("lat", "up", "oh") for i in [*range(13), "n"]],
    Index("ix_ledger_daily_tenant_day", "tenant_id", "day"),
)

idempotency = Table(
    "idempotency", metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("body_hash", String(64), nullable=False),
    Column("state", String(16), nullable=False),          # running | done
    Column("locked_until", Float, nullable=False),        # epoch seconds; a crashed run frees its key
    Column("expires_at", Float, nullable=False, index=True),
    Column("response_status", Integer, nullable=True),
    Column("response_body", Text, nullable=True),
)

rate_counters = Table(
    "rate_counters", metadata,
    Column("key", String(255), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False),
)

# Budget reservations of calls in flight (app/tenancy/budgets.py), and one row per budgeted scope that
# check-and-reserve locks so concurrent reservations of that scope queue.
budget_holds = Table(
    "budget_holds", metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("key_id", String(32), nullable=True, index=True),
    Column("amount", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),     # epoch seconds; a crashed call's hold lapses
)

budget_locks = Table(
    "budget_locks", metadata,
    Column("scope", String(128), primary_key=True),              # "key:<id>" | "tenant:<id>"
    Column("version", BigInteger, nullable=False),
)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")     # readers never wait for the writer
            cur.execute("PRAGMA busy_timeout=30000")   # writers queue instead of failing
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
        return engine
    # At most 15 server connections per worker process: a burst queues for a connection (30 s)
    # instead of opening one per request, so the workers together stay under PostgreSQL's
    # max_connections (100 by default): 4 workers x 15 = 60, leaving room for the CLI and migrations.
    # No pool_pre_ping: its SELECT 1 was one round trip per checkout, as many as the work itself on
    # the hot path. A checkout instead looks at the socket without a round trip (_drop_if_closed),
    # and the hot path's writes go through `transaction`, which retries once when the connection
    # turns out dead before COMMIT was sent. pool_recycle bounds a connection's age (firewalls and
    # proxies that drop idle connections silently, which no local check sees).
    engine = create_engine(url, pool_size=5, max_overflow=10, pool_timeout=30, pool_recycle=600)
    event.listen(engine, "checkout", _drop_if_closed)
    return engine


def _drop_if_closed(dbapi_conn, _record, _proxy) -> None:
    """A pooled connection the server has closed (restart, pg_terminate_backend, idle timeout) has
    a readable socket: the server's farewell or EOF, where an idle healthy one has nothing to read.
    Checked without a round trip; DisconnectionError makes the pool open a fresh connection."""
    try:
        readable = readable_now(dbapi_conn.fileno())
    except Exception as exc:  # noqa: BLE001 - a closed or unusable connection: replace it
        raise DisconnectionError(f"pooled connection unusable: {type(exc).__name__}") from exc
    if readable:
        raise DisconnectionError("the server closed this pooled connection")


def transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run `work(conn)` in one transaction and commit it -> its result.

    Without pool_pre_ping a connection can be found dead by the first statement that uses it (the
    server went away between the checkout's check and that statement). Nothing is committed until
    COMMIT is sent, so a disconnect raised by `work` is retried once on a fresh connection; a
    failure of the COMMIT itself is never retried: the server may have committed before the
    connection broke, and a retry would write the rows twice."""
    for attempt in (1, 2):
        with engine.connect() as conn:
            trans = conn.begin()
            try:
                result = work(conn)
            except DBAPIError as exc:
                trans.rollback()
                if attempt == 1 and exc.connection_invalidated:
                    continue
                raise
            except BaseException:
                trans.rollback()
                raise
            trans.commit()
            return result
    raise AssertionError("unreachable")     # pragma: no cover - the second attempt returns or raises


class Precompiled:
    """A statement compiled once for an engine's dialect, run with `run(conn, values)`.

    On the hot path SQLAlchemy's per-execution work (building the statement, its cache key, the
    compile-cache lookup) costs more CPU than the round trip; a fixed statement needs none of it."""

    def __init__(self, statement, dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.order = list(compiled.positiontup) if compiled.positional else None

    def params(self, values: dict):
        return tuple(values[name] for name in self.order) if self.order else values

    def run(self, conn: Connection, values: dict):
        return conn.exec_driver_sql(self.sql, self.params(values))


def alembic_config(engine: Engine):
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("app") / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    import logging

    from alembic import command
    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(alembic_config(engine), revision)


def revisions(engine: Engine) -> tuple[str | None, str]:
    """(the database's current revision, the code's head revision)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


class NotMigrated(RuntimeError):
    """The database is behind the code: run `flowcall db upgrade`."""


def check_migrated(engine: Engine) -> None:
    current, head = revisions(engine)
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        raise NotMigrated(
            f"The database at {where} is at revision {current or 'none (empty)'}, the code needs {head}. "
            f"Run `flowcall db upgrade` (with the same FLOWCALL_DATABASE_URL) and start again.")
