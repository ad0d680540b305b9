"""The store: API keys today (SQLAlchemy Core; SQLite by default, any SQLAlchemy URL otherwise).

Keys are `fc_<key id>_<secret>`: the id finds the row, the secret is checked against a SHA-256
hash in constant time. A random 256-bit secret needs no slow hash: there is nothing to brute-force.
The plain key is returned once, at creation, and never stored or logged.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import (Boolean, Column, DateTime, MetaData, String, Table, create_engine, event, select,
                        text, update)
from sqlalchemy.engine import Engine

metadata = MetaData()

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(32), primary_key=True),
    Column("secret_hash", String(64), nullable=False),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("agent_id", String(64), nullable=True),
    Column("name", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

_KEY = re.compile(r"^fc_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{20,100})$")
_DUMMY_HASH = hashlib.sha256(b"flowcall-dummy").hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str
    agent_id: str | None
    name: str | None
    created_at: datetime
    revoked: bool


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")     # readers never wait for the writer
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        metadata.create_all(self.engine)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def create_key(self, tenant_id: str, agent_id: str | None = None, name: str | None = None) -> tuple[ApiKey, str]:
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        row = {"id": key_id, "secret_hash": _hash(secret), "tenant_id": tenant_id, "agent_id": agent_id,
               "name": name, "created_at": datetime.now(timezone.utc), "revoked": False}
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(**row))
        return _to_key(row), f"fc_{key_id}_{secret}"

    def verify_key(self, presented: str) -> ApiKey | None:
        """The key's record if `presented` is a valid, unrevoked key; None otherwise."""
        match = _KEY.match(presented or "")
        key_id = match.group("id") if match else ""
        secret = match.group("secret") if match else ""
        row = None
        if match:
            with self.engine.connect() as conn:
                row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        expected = row["secret_hash"] if row else _DUMMY_HASH
        ok = hmac.compare_digest(expected, _hash(secret))   # same work whether or not the id exists
        if not (ok and row) or row["revoked"]:
            return None
        return _to_key(row)

    def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at)
        if tenant_id:
            query = query.where(api_keys.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            return [_to_key(r) for r in conn.execute(query).mappings()]

    def revoke_key(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked=True))
        return result.rowcount > 0

    def close(self) -> None:
        self.engine.dispose()


def _to_key(row) -> ApiKey:
    return ApiKey(id=row["id"], tenant_id=row["tenant_id"], agent_id=row["agent_id"], name=row["name"],
                  created_at=row["created_at"], revoked=bool(row["revoked"]))


def new_uuid() -> str:
    return str(uuid.uuid4())
