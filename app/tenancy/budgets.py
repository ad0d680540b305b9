"""Monthly budgets that hold under concurrency: reserve before the call, reconcile after it.

A budget check that only sums the ledger lets every call in flight through: the ledger learns of
a call's cost when it ends. So each admitted call first reserves an estimate of its cost (a hold);
a call is admitted while the month's ledger total plus the holds of calls in flight is below the
budget, so the spend can pass the budget by at most one call's reservation (as long as no call
costs more than its estimate). When the call ends, its ledger row is written and its hold deleted
in one transaction (`Ledger.write(..., then=...)`), so the money is never counted twice or not at
all. A hold whose call crashed expires with the call's deadline (plus HOLD_MARGIN_S).

Check-and-reserve is one database transaction serialised per scope (a key's, a tenant's) by
upserting that scope's row in `budget_locks`: a row lock on PostgreSQL, the write lock on SQLite.
So every worker and every process sharing the database agrees, with or without Redis: budgets are
money and live with the ledger, never in the counter store that may fail open.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, is_dataclass
from decimal import Decimal

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from app import model_defaults, reasoning
from app.calls import Call, ImagePart, TextPart, Usage
from app.tenancy.db import Precompiled, budget_holds, budget_locks, ledger, transaction
from app.errors import BudgetExceeded, FlowcallError
from app.tenancy.ledger import month_start

HOLD_MARGIN_S = 60.0        # after the call's deadline: time to write its ledger row
IMAGE_TOKENS = 2_000        # per image: more than the providers bill for one image at the largest size


# -- the estimate -------------------------------------------------------------------------------
def estimate_tokens(call: Call, output_limit: int | None = None, max_output_tokens: int | None = None) -> Usage:
    """Tokens a call can use: input from the prompt's size (UTF-8 bytes, an upper bound for the
    byte-level tokenizers providers use, plus IMAGE_TOKENS per image), output its maxTokens."""
    size = 0
    images = 0
    for message in call.messages:
        for part in message.parts:
            if isinstance(part, TextPart):
                size += len(part.text.encode("utf-8", "replace"))
            elif isinstance(part, ImagePart):
                images += 1
            else:                           # tool calls and results: their JSON
                size += _json_size(part)
    for tool in call.tools:
        size += _json_size(tool)
    if call.response_format is not None and call.response_format.schema is not None:
        size += _json_size(call.response_format.schema)
    output = output_limit if output_limit is not None else call.options.max_tokens
    if max_output_tokens:
        output = min(output, max_output_tokens)
    return Usage(input_tokens=size + images * IMAGE_TOKENS, output_tokens=output)


def _json_size(value) -> int:
    if is_dataclass(value):
        value = asdict(value)
    return len(json.dumps(value, default=str, ensure_ascii=False).encode("utf-8", "replace"))


def estimate_cost(call: Call, model) -> float | None:
    """USD `call` can cost on `model` at the catalog's prices, output at the limit actually sent
    (a thinking model's allowance included); None when the model has no price. Budgets reserve it
    before the call, and charge it for a call whose provider reported no usage."""
    limit = model_defaults.max_tokens(model, call.options) + reasoning.output_headroom(model, call.options)
    return model.cost(estimate_tokens(call, limit, model.max_output_tokens))


def reservation(call: Call, catalog, settings) -> float:
    """The most any candidate of the call's route would cost (fallbacks may be dearer)."""
    from app.routing import resolve as routing
    try:
        route = routing.route(call, catalog, settings)
    except FlowcallError:
        return 0.0          # dispatch refuses the call with the same error before any provider is paid
    return max(estimate_cost(call, candidate.model) or 0.0 for candidate in route.candidates)


def usd(amount: float) -> str:
    """A dollar amount exactly as configured ($0.0001, not $0.00), with cents at least."""
    text = format(Decimal(str(amount)).normalize(), "f")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


# -- the holds ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scope:
    name: str               # "key" | "tenant"
    ident: str
    budget_usd: float


class BudgetHolds:
    def __init__(self, engine, clock=time.time):
        self.engine = engine
        self.clock = clock
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._release = Precompiled(delete(budget_holds).where(budget_holds.c.id == bindparam("hold")), engine.dialect)

    def reserve(self, scopes: list[Scope], *, tenant_id: str, key_id: str | None, amount: float,
                seconds: float) -> str:
        """Admit the call against every scope's budget and hold `amount` for it; the hold's id.
        Raises BudgetExceeded (nothing held) when a scope's spend plus holds reaches its budget."""
        return transaction(self.engine, lambda conn: self._reserve(conn, scopes, tenant_id, key_id, amount, seconds))

    def _reserve(self, conn, scopes: list[Scope], tenant_id: str, key_id: str | None, amount: float,
                 seconds: float) -> str:
        now = self.clock()
        for scope in scopes:        # always key before tenant: one lock order, no deadlock
            lock = self._insert(budget_locks).values(scope=f"{scope.name}:{scope.ident}", version=1)
            conn.execute(lock.on_conflict_do_update(index_elements=[budget_locks.c.scope],
                                                    set_={"version": budget_locks.c.version + 1}))
        conn.execute(delete(budget_holds).where(budget_holds.c.expires_at <= now))
        for scope in scopes:
            spent, held = self._committed(conn, scope, now)
            if spent + held >= scope.budget_usd:
                in_flight = f", {usd(round(held, 8))} reserved by calls in flight" if held else ""
                raise BudgetExceeded(
                    f"The {scope.name}'s monthly budget of {usd(scope.budget_usd)} is spent "
                    f"({usd(round(spent, 8))} this month{in_flight}); it resets on the 1st (UTC).",
                    code=f"budget_exceeded_{scope.name}")
        hold_id = uuid.uuid4().hex
        conn.execute(budget_holds.insert().values(id=hold_id, tenant_id=tenant_id, key_id=key_id,
                                                  amount=amount, expires_at=now + seconds))
        return hold_id

    @staticmethod
    def _committed(conn, scope: Scope, now: float) -> tuple[float, float]:
        """The month's spend and the live holds, in one statement (one snapshot on PostgreSQL)."""
        ledger_col = ledger.c.key_id if scope.name == "key" else ledger.c.tenant_id
        hold_col = budget_holds.c.key_id if scope.name == "key" else budget_holds.c.tenant_id
        spent = select(func.coalesce(func.sum(ledger.c.cost), 0.0)).where(
            ledger_col == scope.ident, ledger.c.created_at >= month_start()).scalar_subquery()
        held = select(func.coalesce(func.sum(budget_holds.c.amount), 0.0)).where(
            hold_col == scope.ident, budget_holds.c.expires_at > now).scalar_subquery()
        row = conn.execute(select(spent, held)).one()
        return float(row[0]), float(row[1])

    @staticmethod
    def release_in(conn, hold_id: str) -> None:
        """Delete the hold inside the caller's transaction (the one writing the call's ledger row)."""
        conn.execute(delete(budget_holds).where(budget_holds.c.id == hold_id))

    def release_statement(self, hold_id: str) -> tuple[Precompiled, dict]:
        """`release_in` as a statement for the ledger row's transaction (Ledger.write's `also`)."""
        return self._release, {"hold": hold_id}

    def release(self, hold_id: str) -> None:
        transaction(self.engine, lambda conn: self.release_in(conn, hold_id))
