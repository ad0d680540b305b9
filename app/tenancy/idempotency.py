"""Idempotency keys: a workflow platform's retry of the same request is executed once.

The first request with a key inserts a `running` row (the primary key makes that atomic across
workers and machines); repeats then get the stored answer (replay), a 409 while it runs, or a 422
when the body differs. Only successful answers are kept (24 h): a failed call frees its key so the
platform's retry really retries. A worker that dies mid-call leaves a row whose lock expires
(the call's deadline plus a margin), after which a repeat takes the key over.

On PostgreSQL the claims of concurrent calls commit together (app/tenancy/group_commit.py): one
`INSERT ... ON CONFLICT DO NOTHING RETURNING` a batch, so an idempotent call shares three round
trips (BEGIN, INSERT, COMMIT) instead of making its own; each caller still starts its provider call
only after its own claim is committed. On SQLite a claim is its own short transaction: SQLite runs
it in-process without yielding to other greenlets, so there is nothing to share it with and a
batch's bookkeeping only added cost (bench/README.md).
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
from app.tenancy.group_commit import GroupCommitter
from app.errors import IdempotencyConflict, IdempotencyMismatch, ValidationError

TTL_SECONDS = 24 * 3600
LOCK_MARGIN_SECONDS = 30
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_ROW = ("tenant_id", "key", "body_hash", "state", "locked_until", "expires_at")


class _Claim:
    """One call's claim in a batch; `won` says whether its row was inserted."""
    __slots__ = ("row", "won")

    def __init__(self, row: dict):
        self.row = row
        self.won = False


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
    def __init__(self, engine, clock=time.time, batch_claims: bool | None = None):
        """`batch_claims`: claims commit in batches (default: on PostgreSQL only)."""
        self.engine = engine
        self.clock = clock
        c, dialect = idempotency.c, engine.dialect
        where = (c.tenant_id == bindparam("w_tenant"), c.key == bindparam("w_key"))
        # compiled once: these run on every idempotent call (see Precompiled)
        self._claim = Precompiled(idempotency.insert().values({name: bindparam(name) for name in _ROW}), dialect)
        self._claims_of: dict[int, Precompiled] = {}    # a batch's INSERT by its row count (at most MAX_BATCH)
        if batch_claims is None:
            batch_claims = dialect.name == "postgresql"
        self.claims = GroupCommitter(engine, self._claim_batch) if batch_claims else None
        self._finish = Precompiled(update(idempotency).where(*where).values(
            state=bindparam("done"), response_status=bindparam("status"), response_body=bindparam("body")), dialect)
        self._release = Precompiled(delete(idempotency).where(*where), dialect)

    def begin(self, tenant_id: str, key: str, digest: str, lock_seconds: float) -> Replay | None:
        """Claim the key (None: go ahead and run), or answer for it (a Replay), or raise 409/422."""
        now = self.clock()
        row = {"tenant_id": tenant_id, "key": key, "body_hash": digest, "state": "running",
               "locked_until": now + lock_seconds + LOCK_MARGIN_SECONDS, "expires_at": now + TTL_SECONDS}
        for attempt in range(3):
            if self._claimed(row, batched=attempt == 0):
                return None
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

    def _claimed(self, row: dict, batched: bool) -> bool:
        """Insert the claim row -> whether the key was free. The first try joins a batch; a retry
        (the key was freed or taken over meanwhile) claims on its own."""
        if batched and self.claims is not None:
            claim = _Claim(row)
            self.claims.submit(claim)
            return claim.won
        try:
            transaction(self.engine, lambda conn: self._claim.run(conn, row))
            return True
        except IntegrityError:
            return False

    def _claim_batch(self, conn, claims: list[_Claim]) -> None:
        """The committer's write: every claim of the batch in one statement. The keys that were free
        come back; a key taken (by a stored row, or by an earlier claim of this batch) does not."""
        rows = sorted({(c.row["tenant_id"], c.row["key"]): c.row for c in reversed(claims)}.items())
        statement = self._claims_of.get(len(rows)) or self._claims_of.setdefault(len(rows), self._claim_rows(len(rows)))
        params = {f"{name}_{i}": row[name] for i, (_, row) in enumerate(rows) for name in _ROW}
        won = set(map(tuple, statement.run(conn, params).all()))
        for claim in claims:
            pair = (claim.row["tenant_id"], claim.row["key"])
            claim.won = pair in won
            won.discard(pair)                  # a second claim of the same key in this batch lost

    def _claim_rows(self, n: int) -> Precompiled:
        """INSERT of n claim rows that skips taken keys and returns the ones it inserted."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        values = [{name: bindparam(f"{name}_{i}") for name in _ROW} for i in range(n)]
        statement = insert(idempotency).values(values).on_conflict_do_nothing()
        return Precompiled(statement.returning(idempotency.c.tenant_id, idempotency.c.key), self.engine.dialect)

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
