"""API keys and tenants, with their limits (tables in app/tenancy/db.py).

Keys are `fc_<key id>_<secret>`: the id finds the row, the secret is checked against a SHA-256
hash in constant time. A random 256-bit secret needs no slow hash: there is nothing to brute-force.
The plain key is returned once, at creation, and never stored or logged.

Verified keys are cached for a few seconds per process (KEY_CACHE_SECONDS), so the hot path does
not query the database on every call; a revocation takes effect within that time everywhere.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, UTC

from sqlalchemy import select, text, update

from app.tenancy.db import api_keys, check_migrated, make_engine, tenants

KEY_CACHE_SECONDS = 5.0
_KEY = re.compile(r"^fc_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{20,100})$")
_DUMMY_HASH = hashlib.sha256(b"flowcall-dummy").hexdigest()


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None

    def as_dict(self) -> dict:
        return {"rpm": self.rpm, "tpm": self.tpm, "budget_usd": self.budget_usd}


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str
    agent_id: str | None
    name: str | None
    created_at: datetime
    revoked: bool
    limits: Limits = Limits()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Store:
    def __init__(self, url: str, *, require_migrated: bool = True, clock=time.monotonic):
        self.url = url
        self.clock = clock
        self.engine = make_engine(url)
        if require_migrated:
            check_migrated(self.engine)
        self._key_cache: dict[str, tuple[float, str, ApiKey | None]] = {}
        self._tenant_cache: dict[str, tuple[float, Limits]] = {}
        self._lock = threading.Lock()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- keys -----------------------------------------------------------------------------------
    def create_key(self, tenant_id: str, agent_id: str | None = None, name: str | None = None,
                   limits: Limits = Limits()) -> tuple[ApiKey, str]:
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        row = {"id": key_id, "secret_hash": _hash(secret), "tenant_id": tenant_id, "agent_id": agent_id,
               "name": name, "created_at": datetime.now(UTC), "revoked": False, **limits.as_dict()}
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(**row))
        return _to_key(row), f"fc_{key_id}_{secret}"

    def verify_key(self, presented: str) -> ApiKey | None:
        """The key's record if `presented` is a valid, unrevoked key; None otherwise."""
        match = _KEY.match(presented or "")
        key_id = match.group("id") if match else ""
        secret_hash = _hash(match.group("secret") if match else "")
        now = self.clock()
        cached = self._key_cache.get(key_id) if match else None
        if cached and cached[0] > now:
            _, expected, record = cached
        else:
            row = None
            if match:
                with self.engine.connect() as conn:
                    row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
            expected = row["secret_hash"] if row else _DUMMY_HASH
            record = _to_key(row) if row else None
            if match:
                with self._lock:
                    if len(self._key_cache) > 10_000:
                        self._key_cache.clear()
                    self._key_cache[key_id] = (now + KEY_CACHE_SECONDS, expected, record)
        ok = hmac.compare_digest(expected, secret_hash)     # same work whether or not the id exists
        if not ok or record is None or record.revoked:
            return None
        return record

    def active_key(self, key_id: str) -> ApiKey | None:
        """The key's record if it exists and is not revoked, through the same 5 s cache as verify_key
        (the dashboard re-checks a signed-in key on every page with this)."""
        now = self.clock()
        cached = self._key_cache.get(key_id)
        if cached and cached[0] > now:
            record = cached[2]
        else:
            with self.engine.connect() as conn:
                row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
            record = _to_key(row) if row else None
            if row is not None:
                with self._lock:
                    self._key_cache[key_id] = (now + KEY_CACHE_SECONDS, row["secret_hash"], record)
        return record if record is not None and not record.revoked else None

    def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at)
        if tenant_id:
            query = query.where(api_keys.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            return [_to_key(r) for r in conn.execute(query).mappings()]

    def revoke_key(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked=True))
        self._key_cache.pop(key_id, None)
        return result.rowcount > 0

    def set_key_limits(self, key_id: str, limits: Limits) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**limits.as_dict()))
        self._key_cache.pop(key_id, None)
        return result.rowcount > 0

    # -- tenants --------------------------------------------------------------------------------
    def set_tenant_limits(self, tenant_id: str, limits: Limits) -> None:
        values = {**limits.as_dict(), "updated_at": datetime.now(UTC)}
        with self.engine.begin() as conn:
            updated = conn.execute(update(tenants).where(tenants.c.id == tenant_id).values(**values)).rowcount
            if not updated:
                conn.execute(tenants.insert().values(id=tenant_id, **values))
        self._tenant_cache.pop(tenant_id, None)

    def tenant_limits(self, tenant_id: str) -> Limits:
        now = self.clock()
        cached = self._tenant_cache.get(tenant_id)
        if cached and cached[0] > now:
            return cached[1]
        with self.engine.connect() as conn:
            row = conn.execute(select(tenants).where(tenants.c.id == tenant_id)).mappings().first()
        limits = Limits(row["rpm"], row["tpm"], row["budget_usd"]) if row else Limits()
        self._tenant_cache[tenant_id] = (now + KEY_CACHE_SECONDS, limits)
        return limits

    def list_tenants(self) -> list[tuple[str, Limits]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(tenants).order_by(tenants.c.id)).mappings().all()
        return [(r["id"], Limits(r["rpm"], r["tpm"], r["budget_usd"])) for r in rows]

    def close(self) -> None:
        self.engine.dispose()


def _to_key(row) -> ApiKey:
    return ApiKey(id=row["id"], tenant_id=row["tenant_id"], agent_id=row["agent_id"], name=row["name"],
                  created_at=row["created_at"], revoked=bool(row["revoked"]),
                  limits=Limits(row.get("rpm"), row.get("tpm"), row.get("budget_usd")))
