"""Rate limits (requests and tokens per minute) and monthly budgets, per API key and per tenant.

Counters live where every worker and every machine sees the same numbers: Redis when
FLOWCALL_REDIS_URL is set (the `limits` library's RedisStorage), otherwise the database itself
(`SqlStorage`, an atomic upsert per hit), so several gunicorn workers on one machine agree without
any extra server. Budgets are sums over the usage ledger, the one source of truth for money.

When Redis is down, rate limits fail OPEN (the call goes ahead, with an error in the log): an
automation's 3 a.m. run should not fail because our counter store hiccuped, and spending stays
capped regardless because budgets are enforced from the database, not from Redis.

Budgets reserve each call's estimated cost before it runs and settle to the real cost when its
ledger row is written (app/tenancy/budgets.py), so concurrent calls cannot overspend. Tokens per minute are
not reserved: they count in fixed one-minute windows of the counter store, and a call that starts in
one window and ends in the next could not take back its reservation from the window that counted it;
so TPM can be passed by the tokens of the calls already in flight when the minute's tokens run out.

Requests count when they arrive; tokens count when the answer is in (the provider decides how many),
so a call is refused for tokens only once the minute's tokens are already spent.
"""
from __future__ import annotations

import logging
import time
from functools import partial

from limits import RateLimitItemPerMinute
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from app.tenancy.budgets import BudgetHolds, Scope
from app.tenancy.db import rate_counters
from app.errors import RateLimited
from app.tenancy.ledger import Ledger
from app.tenancy.store import Limits

log = logging.getLogger(__name__)


class SqlStorage(Storage):
    """A `limits` storage in our own database: shared by every worker that shares the database."""

    STORAGE_SCHEME = ["flowcall+sql"]

    def __init__(self, engine, clock=time.time):
        super().__init__()
        self.engine = engine
        self.clock = clock
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    @property
    def base_exceptions(self):
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = self.clock()
        c = rate_counters.c
        stmt = self._insert(rate_counters).values(key=key, count=amount, expires_at=now + expiry)
        stmt = stmt.on_conflict_do_update(index_elements=[c.key], set_={
            "count": case((c.expires_at <= now, amount), else_=c.count + amount),
            "expires_at": case((c.expires_at <= now, now + expiry), else_=c.expires_at),
        }).returning(c.count)
        with self.engine.begin() as conn:
            return int(conn.execute(stmt).scalar_one())

    def get(self, key: str) -> int:
        with self.engine.connect() as conn:
            row = conn.execute(select(rate_counters.c.count).where(
                rate_counters.c.key == key, rate_counters.c.expires_at > self.clock())).first()
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        with self.engine.connect() as conn:
            row = conn.execute(select(rate_counters.c.expires_at).where(rate_counters.c.key == key)).first()
        return float(row[0]) if row and row[0] > self.clock() else self.clock()

    def check(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
            return True
        except SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        with self.engine.begin() as conn:
            return conn.execute(delete(rate_counters)).rowcount

    def clear(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(rate_counters).where(rate_counters.c.key == key))


def make_storage(engine, redis_url: str | None) -> Storage:
    if redis_url:
        from limits.storage import RedisStorage
        return RedisStorage(redis_url, wrap_exceptions=True, socket_timeout=0.5, socket_connect_timeout=0.5)
    return SqlStorage(engine)


class Quotas:
    def __init__(self, storage: Storage, ledger: Ledger, clock=time.time):
        self.storage = storage
        self.limiter = FixedWindowRateLimiter(storage)
        self.ledger = ledger
        self.clock = clock
        self.holds = BudgetHolds(ledger.engine)

    def _scopes(self, principal, key_limits: Limits, tenant_limits: Limits):
        if principal.key_id:
            yield "key", principal.key_id, key_limits
        yield "tenant", principal.tenant_id, tenant_limits

    def admit(self, principal, key_limits: Limits, tenant_limits: Limits, cost: int = 1,
              reserve_usd: float = 0.0, hold_seconds: float = 3600.0) -> str | None:
        """Before the provider call: monthly budget, tokens already spent, requests per minute.

        `cost` is how many calls this request makes (a batch counts every item). With a budget,
        `reserve_usd` is held for `hold_seconds` (app/tenancy/budgets.py); the hold's id is returned for
        the ledger write to release. A refusal holds nothing."""
        scopes = [Scope(scope, ident, limits.budget_usd)
                  for scope, ident, limits in self._scopes(principal, key_limits, tenant_limits)
                  if limits.budget_usd is not None]
        hold = None
        if scopes:
            hold = self.holds.reserve(scopes, tenant_id=principal.tenant_id, key_id=principal.key_id,
                                      amount=reserve_usd, seconds=hold_seconds)
        try:
            self._rates(principal, key_limits, tenant_limits, cost)
        except BaseException:
            if hold is not None:
                self.holds.release(hold)
            raise
        return hold

    def _rates(self, principal, key_limits: Limits, tenant_limits: Limits, cost: int) -> None:
        for scope, ident, limits in self._scopes(principal, key_limits, tenant_limits):
            if limits.tpm is not None:
                item = RateLimitItemPerMinute(limits.tpm, namespace="fc-tpm")
                if not self._safe(partial(self.limiter.test, item, scope, ident), True):
                    raise RateLimited(f"The {scope}'s tokens-per-minute limit ({limits.tpm}) is spent.",
                                      code=f"tpm_exceeded_{scope}", retry_after=self._reset_in(item, scope, ident))
            if limits.rpm is not None:
                item = RateLimitItemPerMinute(limits.rpm, namespace="fc-rpm")
                if not self._safe(partial(self.limiter.hit, item, scope, ident, cost=cost), True):
                    raise RateLimited(f"The {scope}'s requests-per-minute limit ({limits.rpm}) is reached.",
                                      code=f"rpm_exceeded_{scope}", retry_after=self._reset_in(item, scope, ident))

    def record_tokens(self, principal, key_limits: Limits, tenant_limits: Limits, tokens: int) -> None:
        if tokens <= 0:
            return
        for scope, ident, limits in self._scopes(principal, key_limits, tenant_limits):
            if limits.tpm is not None:
                item = RateLimitItemPerMinute(limits.tpm, namespace="fc-tpm")
                self._safe(partial(self.limiter.hit, item, scope, ident, cost=tokens), True)

    def _reset_in(self, item, *ids) -> float:
        reset = self._safe(lambda: self.limiter.get_window_stats(item, *ids).reset_time, self.clock() + 60)
        return max(1.0, reset - self.clock())

    @staticmethod
    def _safe(fn, fail_open_value):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - counter store down: fail open, loudly
            log.error("rate-limit storage unavailable, failing open: %s", type(exc).__name__)
            return fail_open_value

