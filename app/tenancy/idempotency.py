"""Idempotency keys: a workflow platform's retry of the same request is executed once.

The first request with a key inserts a `running` row (the primary key makes that atomic across
workers and machines); repeats then get the stored answer (replay), a 409 while it runs, or a 422
when the body differs. Only successful answers are kept (24 h): a failed call frees its key so the
platform's retry really retries. A worker that dies mid-call leaves a row whose lock expires
(the call's deadline plus a margin), after which a repeat takes the key over.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError

from app.tenancy.db import Precompiled, idempotency, transaction
from app.errors import IdempotencyConflict, IdempotencyMismatch, ValidationError

TTL_SECONDS = 24 * 3600
LOCK_MARGIN_SECONDS = 30
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True)
class Replay:
    status: int
    body: dict


def body_hash(endpoint: str, body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: JSON may carry a lone surrogate ("\ud800"), which strict UTF-8 cannot encode
    return hashlib.sha256(f"{endpoint}\n{canonical}".encode("utf-8", "surrogatepass")).hexdigest()


def validate_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValidationError("Idempotency-Key must be 1-255 visible ASCII characters.",
                              code="invalid_header", fields={"Idempotency-Key": "1-255 visible ASCII characters"})
    return key


class Idempotency:
    def __init__(self, engine, clock=time.time):
        self.engine = engine
        self.clock = clock
        c, dialect = idempotency.c, engine.dialect
        where = (c.tenant_id == bindparam("w_tenant"), c.key == bindparam("w_key"))
        # compiled once: these run on every idempotent call (see Precompiled)
        self._claim = Precompiled(idempotency.insert().values(
            {name: bindparam(name) for name in ("tenant_id", "key", "body_hash", "state", "locked_until",
                                                "expires_at")}), dialect)
        self._finish = Precompiled(update(idempotency).where(*where).values(
            state=bindparam("done"), response_status=bindparam("status"), response_body=bindparam("body")), dialect)
        self._release = Precompiled(delete(idempotency).where(*where), dialect)

    def begin(self, tenant_id: str, key: str, digest: str, lock_seconds: float) -> Replay | None:
        """Claim the key (None: go ahead and run), or answer for it (a Replay), or raise 409/422."""
        now = self.clock()
        row = {"tenant_id": tenant_id, "key": key, "body_hash": digest, "state": "running",
               "locked_until": now + lock_seconds + LOCK_MARGIN_SECONDS, "expires_at": now + TTL_SECONDS}
        for _ in range(3):
            try:
                transaction(self.engine, lambda conn: self._claim.run(conn, row))
                return None
            except IntegrityError:
                pass
            with self.engine.begin() as conn:
                existing = conn.execute(select(idempotency).where(
                    idempotency.c.tenant_id == tenant_id, idempotency.c.key == key)).mappings().first()
                if existing is None:
                    continue                         # freed meanwhile: try to claim again
                stale = existing["expires_at"] <= now or (
                    existing["state"] == "running" and existing["locked_until"] <= now)
                if stale:
                    taken = conn.execute(update(idempotency).where(and_(
                        idempotency.c.tenant_id == tenant_id, idempotency.c.key == key,
                        idempotency.c.body_hash == existing["body_hash"], idempotency.c.state == existing["state"],
                        idempotency.c.locked_until == existing["locked_until"])).values(**row)).rowcount
                    if taken:
                        return None
                    continue
            if existing["body_hash"] != digest:
                raise IdempotencyMismatch("This Idempotency-Key was used with a different request body.")
            if existing["state"] == "running":
                raise IdempotencyConflict("A request with this Idempotency-Key is still running; retry shortly.",
                                          retry_after=1)
            return Replay(existing["response_status"], json.loads(existing["response_body"]))
        raise IdempotencyConflict("Could not claim the Idempotency-Key; retry shortly.", retry_after=1)

    def finish(self, tenant_id: str, key: str, status: int, body: dict) -> None:
        transaction(self.engine, lambda conn: self.finish_in(conn, tenant_id, key, status, body))

    def finish_in(self, conn, tenant_id: str, key: str, status: int, body: dict) -> None:
        """Store the answer inside the caller's transaction."""
        statement, params = self.finish_statement(tenant_id, key, status, body)
        statement.run(conn, params)

    def finish_statement(self, tenant_id: str, key: str, status: int, body: dict) -> tuple[Precompiled, dict]:
        """`finish` as a statement for the call's ledger row's transaction (Ledger.write's `also`)."""
        return self._finish, {"w_tenant": tenant_id, "w_key": key, "done": "done", "status": status,
                              "body": json.dumps(body)}

    def release_statement(self, tenant_id: str, key: str) -> tuple[Precompiled, dict]:
        """`release` as a statement for the call's ledger row's transaction."""
        return self._release, {"w_tenant": tenant_id, "w_key": key}

    def release(self, tenant_id: str, key: str) -> None:
        """The call failed: forget the key so a retry executes again."""
        transaction(self.engine, lambda conn: self.release_in(conn, tenant_id, key))

    def release_in(self, conn, tenant_id: str, key: str) -> None:
        self._release.run(conn, {"w_tenant": tenant_id, "w_key": key})

    def purge_expired(self) -> int:
        with self.engine.begin() as conn:
            return conn.execute(delete(idempotency).where(idempotency.c.expires_at <= self.clock())).rowcount
