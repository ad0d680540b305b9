"""One metered call: idempotency, limits and budget, the dispatch itself, tokens, and the ledger row.

This is the core's front door for every node that runs calls; it knows tenants and money, while
`dispatch` knows only models and providers. A call is `admit`ted (idempotency claimed, limits and
budget checked), run (whole, or streamed by app/streaming.py), then `close`d exactly once however
it ended: tokens counted, the ledger row written with the idempotency key finished or released in
the same transaction.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from app.tenancy import budgets
from app.calls import Answer, Call, Usage
from app.dispatch import Dispatcher, Mode
from app.errors import FlowcallError
from app.tenancy.group_commit import CommitFailed
from app.tenancy.idempotency import Idempotency, Replay, body_hash
from app.tenancy.ledger import Ledger, Row
from app.tenancy.quotas import Quotas
from app.tenancy.store import Limits, Store

log = logging.getLogger(__name__)

UNRECORDED_WARNING = ("This call's usage could not be written to the usage ledger; the operator has been "
                      "alerted (error log and metric flowcall_ledger_write_failures_total).")


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict
    replayed: bool = False
    answer: Answer | None = None


@dataclass(frozen=True)
class Admission:
    """A call allowed to run: what closing it later needs."""
    call: Call
    tenant_limits: Limits
    started: float
    idempotency_key: str | None
    hold: str | None = None             # the budget reservation its ledger row releases (app/tenancy/budgets.py)


class Gateway:
    def __init__(self, store: Store, dispatcher: Dispatcher, ledger: Ledger, idempotency: Idempotency, quotas: Quotas):
        self.store = store
        self.dispatcher = dispatcher
        self.ledger = ledger
        self.idempotency = idempotency
        self.quotas = quotas

    def run(self, principal, endpoint: str, body: dict, make_call: Callable[[], Call],
            render: Callable[[Answer], dict], idempotency_key: str | None = None,
            mode: Mode | None = None) -> Outcome:
        """Run `make_call()` once for this principal; `render` turns the answer into the stored body.
        `mode`: how dispatch runs it (app/embedding_mode.py's for embeddings), else as a whole answer."""
        admitted = self.admit(principal, endpoint, body, make_call, idempotency_key)
        if isinstance(admitted, Replay):
            return Outcome(admitted.status, admitted.body, replayed=True)
        try:
            answer = self.dispatcher.execute(admitted.call) if mode is None else \
                self.dispatcher.run(admitted.call, mode)
        except BaseException as exc:
            self.close(principal, endpoint, admitted, error=exc)
            raise
        rendered = self.close(principal, endpoint, admitted, answer=answer, render=render)
        return Outcome(200, rendered, answer=answer)

    def admit(self, principal, endpoint: str, body: dict, make_call: Callable[[], Call],
              idempotency_key: str | None = None) -> Admission | Replay:
        """Claim the idempotency key (or return its stored answer), build the call, check limits and
        budget. A refusal is accounted and its key released before the error propagates."""
        started = time.perf_counter()
        call = None
        try:
            call = make_call()
        except BaseException as exc:
            self.close(principal, endpoint, Admission(None, Limits(), started, None), error=exc, count_tokens=False)
            raise
        if idempotency_key:      # the lock lasts this call's own deadline (plus a margin), not the maximum
            replay = self.idempotency.begin(principal.tenant_id, idempotency_key, body_hash(endpoint, body),
                                            lock_seconds=self.dispatcher.timeout_s(call))
            if replay is not None:
                return replay
        try:
            tenant_limits = self.store.tenant_limits(principal.tenant_id)
            reserve = 0.0
            if principal.limits.budget_usd is not None or tenant_limits.budget_usd is not None:
                reserve = budgets.reservation(call, self.dispatcher.catalog, self.dispatcher.settings)
            hold = self.quotas.admit(principal, principal.limits, tenant_limits, reserve_usd=reserve,
                                     hold_seconds=self.dispatcher.timeout_s(call) + budgets.HOLD_MARGIN_S)
        except BaseException as exc:
            self.close(principal, endpoint, Admission(call, Limits(), started, idempotency_key), error=exc,
                       count_tokens=False)
            raise
        return Admission(call, tenant_limits, started, idempotency_key, hold)

    def close(self, principal, endpoint: str, admitted: Admission, *, answer: Answer | None = None,
              error: BaseException | None = None, rendered: dict | None = None, usage: Usage | None = None,
              model_id: str | None = None, provider: str | None = None, cost: float | None = None,
              attempts: int | None = None, count_tokens: bool = True,
              render: Callable[[Answer], dict] | None = None) -> dict | None:
        """The end of an admitted call, however it ended. `usage`/`model_id`/`provider`/`cost` are
        what a call that failed part-way (a broken stream) had already spent. With `render`, the
        rendered body is returned: rendered before the ledger write and, if the row could not be
        written, rendered again saying so. An idempotency key is finished (or released) in the
        row's own transaction, or on its own when the row failed."""
        flowcall_error = error if isinstance(error, FlowcallError) else None
        rendered = rendered if render is None else None
        usage = answer.usage if answer else usage
        if count_tokens and usage is not None:
            self.quotas.record_tokens(principal, principal.limits, admitted.tenant_limits, usage.total_tokens)
        status = 200 if error is None else (flowcall_error.status if flowcall_error else 500)
        # The answer is rendered before the ledger write, as if the row will be written, so that an
        # idempotency key's stored answer commits in the row's own transaction (one write per call,
        # not two); if the row is not written, it is rendered again with the warning, below.
        render_error = None
        if render is not None and answer is not None:
            try:
                rendered = render(answer)
            except Exception as exc:  # noqa: BLE001 - the row is still written; raised after it
                render_error = exc
        key = admitted.idempotency_key
        tenant_id = principal.tenant_id
        finished = bool(key) and error is None and answer is not None and render_error is None
        settle = None
        if finished:
            settle = self.idempotency.finish_statement(tenant_id, key, 200, rendered)
        elif key:
            settle = self.idempotency.release_statement(tenant_id, key)
        recorded = self.account(principal, endpoint, admitted.call, status=status, answer=answer,
                                error=flowcall_error, usage=usage, model_id=model_id, provider=provider, cost=cost,
                                attempts=attempts, started=admitted.started, hold=admitted.hold, settle=settle)
        settled = recorded is True
        if render_error is not None:
            if not settled and key:
                self._settle(tenant_id, admitted, key, finished=False, rendered=None)
            raise render_error
        if render is not None and answer is not None and not recorded:
            rendered = render(replace(answer, warnings=(*answer.warnings, UNRECORDED_WARNING)))
        if key and not settled:          # the key's answer was not committed with the row: settle it alone
            self._settle(tenant_id, admitted, key, finished=finished, rendered=rendered)
        return rendered

    def _settle(self, tenant_id: str, admitted: Admission, key: str, *, finished: bool,
                rendered: dict | None) -> None:
        """Finish or release the key on its own (the ledger row, which would have carried it, failed)."""
        try:
            if finished:
                self.idempotency.finish(tenant_id, key, 200, rendered)
            else:
                self.idempotency.release(tenant_id, key)
        except Exception:  # noqa: BLE001 - the answer stands; a stuck key expires with its lock
            log.exception("idempotency settle failed for key of request %s",
                          admitted.call.request_id if admitted.call else None)

    def account(self, principal, endpoint: str, call: Call | None, *, status: int, answer: Answer | None = None,
                error: FlowcallError | None = None, usage: Usage | None = None, model_id: str | None = None,
                provider: str | None = None, cost: float | None = None, attempts: int | None = None,
                started: float | None = None, hold: str | None = None, settle=None) -> bool | str:
        """Write the ledger row, releasing the call's budget hold and running `settle` (a statement:
        the idempotency key's answer or release) in the same transaction -> True when all of it was
        written, "row_only" when the row was written without `settle`, False when the row was not.

        A failed write is never silent: it is logged as an error with the row's figures (so they
        can be entered by hand), counted in flowcall_ledger_write_failures_total, and a whole answer
        says so in its warnings (close). The answer itself stands: the provider has been paid, and
        failing the call would make the platform retry it and pay again. The row's budget hold
        then lapses at its expiry."""
        usage = answer.usage if answer else (usage or Usage())
        if answer is not None:
            latency_ms = answer.latency_ms
        else:
            latency_ms = int((time.perf_counter() - started) * 1000) if started is not None else 0
        row = Row(
            tenant_id=principal.tenant_id, agent_id=principal.agent_id, key_id=principal.key_id,
            request_id=call.request_id if call else None, endpoint=endpoint,
            model_requested=call.model if call else None,
            model_served=answer.routing.model_chosen if answer else (model_id or (error.model_id if error else None)),
            provider=answer.provider if answer else (provider or (error.provider if error else None)),
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cost=_billed_cost(answer) if answer else cost, latency_ms=latency_ms,
            status=status, error_code=error.code if error else (None if status < 400 else "internal_error"),
            attempts=answer.routing.attempts if answer else (attempts if attempts is not None else
                                                             (error.attempts if error else 0)),
            prompt="\n".join(m.text for m in call.messages) if call else None,
            answer=answer.text if answer else None,
            routing_reason=answer.routing.reason[:500] if answer else None,
            fallbacks=(",".join(answer.routing.fallbacks)[:1000] or None) if answer else None,
            upstream_ms=int(answer.upstream_ms) if answer else None,
            error_message=str(error.message)[:500] if error else None,
        )
        also = [self.quotas.holds.release_statement(hold)] if hold else []
        try:
            try:
                self.ledger.write(row, also=also + ([settle] if settle else []))
            except CommitFailed:
                raise                    # the row may be in: never written twice
            except Exception:
                if settle is None:
                    raise
                # Nothing was committed, and the key's statement may be what failed: the row (the
                # record of a paid call) is written without it; the caller then settles the key alone.
                log.exception("ledger write with the idempotency key's answer failed for request %s; "
                              "writing the row alone", row.request_id)
                self.ledger.write(row, also=also)
                return "row_only"
        except Exception:  # noqa: BLE001 - reported below, never swallowed
            log.exception("ledger write failed for request %s: tenant %s key %s model %s status %s input_tokens %s "
                          "output_tokens %s cost %s", row.request_id, row.tenant_id, row.key_id, row.model_served,
                          row.status, row.input_tokens, row.output_tokens, row.cost)
            from app.telemetry.metrics import LEDGER_WRITE_FAILURES
            LEDGER_WRITE_FAILURES.labels(endpoint).inc()
            return False
        return True


def _billed_cost(answer: Answer) -> float | None:
    """The cost budgets count: the answer's own, or, when the provider reported no usage, the
    estimate from the prompt size and maxTokens (a call with unknown usage is not a free call)."""
    return answer.cost if answer.cost is not None else answer.estimated_cost
