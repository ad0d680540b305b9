"""The database and counter backends the store suites run on: SQLite always, PostgreSQL and Redis
when FLOWCALL_TEST_DATABASE_URL / FLOWCALL_TEST_REDIS_URL name them (skipped with a reason otherwise).
"""
from __future__ import annotations

import os

import pytest
from sqlalchemy import MetaData

from app.tenancy.db import make_engine, upgrade
from conftest import migrated_db_url

PG_URL = os.environ.get("FLOWCALL_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("FLOWCALL_TEST_REDIS_URL")

DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    not PG_URL, reason="FLOWCALL_TEST_DATABASE_URL is not set (no PostgreSQL to test against)"))]
COUNTERS = ["sql", pytest.param("redis", marks=pytest.mark.skipif(
    not REDIS_URL, reason="FLOWCALL_TEST_REDIS_URL is not set (no Redis to test against)"))]


def fresh_database_url(kind: str, tmp_path) -> str:
    """An empty database at the current migration."""
    if kind == "sqlite":
        return migrated_db_url(tmp_path)
    engine = make_engine(PG_URL)
    with engine.begin() as conn:              # everything in the database, whichever code made it
        existing = MetaData()
        existing.reflect(conn)
        existing.drop_all(conn)
    upgrade(engine)
    engine.dispose()
    return PG_URL


def flush_redis() -> None:
    import redis
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()


SERVICE_BACKENDS = ["sqlite", pytest.param("postgresql+redis", marks=pytest.mark.skipif(
    not (PG_URL and REDIS_URL), reason="FLOWCALL_TEST_DATABASE_URL and FLOWCALL_TEST_REDIS_URL are not both set"))]


def service_backend_env(kind: str, tmp_path) -> dict:
    """The settings that put a service on `kind` of SERVICE_BACKENDS: a fresh SQLite file, or a fresh
    PostgreSQL database and a flushed Redis."""
    if kind == "sqlite":
        return {"FLOWCALL_DATABASE_URL": fresh_database_url("sqlite", tmp_path)}
    flush_redis()
    return {"FLOWCALL_DATABASE_URL": fresh_database_url("postgresql", tmp_path), "FLOWCALL_REDIS_URL": REDIS_URL}
