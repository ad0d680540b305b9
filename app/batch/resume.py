"""Resuming a batch after a crash without paying twice for an answer that was received.

An item's ledger row is written the moment its answer arrives (app/tenancy/gateway.py); its result is saved
(a line of `flowcall batch`'s OUTPUT, a job's item row) just after. A process killed between the two
leaves an answer that was paid for and recorded but not saved. Calling that item again would pay
twice and write a second ledger row for it, so a resumed run asks the ledger first: an item whose
request id already has a successful ledger row is not called again, and its result is the error
`answer_lost` (its tokens and cost are in that ledger row). Items that were in flight at the kill
have no ledger row (no answer arrived) and are the only ones called again; `flowcall batch`, which
notes each row before calling it, and a retaken job, which counts each call before making it
(app/batch/job_calls.py), first record them in the ledger as `interrupted` (usage unknown), so their
ledger holds one row per call made.
"""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from app.tenancy.db import ledger
from app.errors import FlowcallError

_CHUNK = 500


class AnswerLost(FlowcallError):
    status = 500
    code = "answer_lost"


def answer_lost(request_id: str) -> AnswerLost:
    return AnswerLost(f"This item was answered (and billed) by a run that stopped before saving the answer; "
                      f"it is not called again. Its usage is in the ledger under request id {request_id}.")


class Interrupted(FlowcallError):
    status = 499
    code = "interrupted"


def recorded(engine, tenant_id: str, endpoint: str, request_ids: Iterable[str]) -> dict[str, set[int]]:
    """request id -> the statuses of its ledger rows, for the ids among `request_ids` that have any."""
    ids = list(dict.fromkeys(request_ids))
    found: dict[str, set[int]] = {}
    with engine.connect() as conn:
        for start in range(0, len(ids), _CHUNK):
            rows = conn.execute(select(ledger.c.request_id, ledger.c.status).where(
                ledger.c.tenant_id == tenant_id, ledger.c.endpoint == endpoint,
                ledger.c.request_id.in_(ids[start:start + _CHUNK])))
            for request_id, status in rows:
                found.setdefault(request_id, set()).add(status)
    return found


def record_interrupted(ledger_, principal, endpoint: str, request_id: str, model: str | None) -> None:
    """The ledger row of a call that was in flight when its process died: its answer never arrived,
    so its usage is unknown (0 tokens, no cost), but the provider may have received and billed it."""
    from app.tenancy.ledger import Row
    ledger_.write(Row(tenant_id=principal.tenant_id, agent_id=principal.agent_id, key_id=principal.key_id,
                      request_id=request_id, endpoint=endpoint, status=Interrupted.status,
                      error_code=Interrupted.code, model_requested=model))


def answered(engine, tenant_id: str, endpoint: str, request_ids: Iterable[str], since=None) -> set[str]:
    """The request ids among `request_ids` that already have a successful ledger row (written at or
    after `since`, when given)."""
    ids = list(dict.fromkeys(request_ids))
    found: set[str] = set()
    with engine.connect() as conn:
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            rows = conn.execute(select(ledger.c.request_id).where(
                ledger.c.tenant_id == tenant_id, ledger.c.endpoint == endpoint, ledger.c.status == 200,
                ledger.c.request_id.in_(chunk), *(() if since is None else (ledger.c.created_at >= since,))))
            found.update(r.request_id for r in rows)
    return found
