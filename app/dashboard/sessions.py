"""Dashboard sessions, held server-side: the browser's cookie carries a random 256-bit token, the
table its SHA-256 (a leaked table signs nobody in), with the scope, a CSRF token and an expiry.
Signing out deletes the row; revoking the key ends the session at the key's next check (each page
asks Store.active_key, cached 5 s)."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, insert, select

from app.tenancy.db import dashboard_sessions


@dataclass(frozen=True)
class Session:
    tenant_id: str
    agent_id: str | None
    key_id: str | None
    subject: str | None
    csrf: str
    expires_at: float

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf.encode(), presented.encode("utf-8", "replace"))


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class Sessions:
    def __init__(self, engine, clock=time.time):
        self.engine = engine
        self.clock = clock

    def create(self, tenant_id: str, agent_id: str | None, key_id: str | None, subject: str | None,
               lifetime_s: float) -> tuple[str, Session]:
        """A new session -> (the cookie's token, the session). Expired sessions are swept here."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(tenant_id, agent_id, key_id, subject[:200] if subject else None,
                          secrets.token_urlsafe(32), now + lifetime_s)
        with self.engine.begin() as conn:
            conn.execute(delete(dashboard_sessions).where(dashboard_sessions.c.expires_at <= now))
            conn.execute(insert(dashboard_sessions).values(token_hash=_hash(token), **session.__dict__))
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 100:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(dashboard_sessions).where(
                dashboard_sessions.c.token_hash == _hash(token))).mappings().first()
        if row is None or row["expires_at"] <= self.clock():
            return None
        return Session(row["tenant_id"], row["agent_id"], row["key_id"], row["subject"], row["csrf"],
                       row["expires_at"])

    def delete(self, token: str | None) -> None:
        if token:
            with self.engine.begin() as conn:
                conn.execute(delete(dashboard_sessions).where(dashboard_sessions.c.token_hash == _hash(token)))
