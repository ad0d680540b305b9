"""One metered call: idempotency, limits and budget, the dispatch itself, tokens, and the ledger row.

This is the core's front door for every node that runs calls; it knows tenants and money, while
`dispatch` knows only models and providers.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from .calls import Answer, Call
from .errors import FlowcallError
from .idempotency import Idempotency, body_hash
from .ledger import Ledger, Row
from .quotas import Quotas
from .store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict
    replayed: bool = False
    answer: Answer | None = None


class Gateway:
    def __init__(self, store: Store, dispatcher, ledger: Ledger, idempotency: Idempotency, quotas: Quotas):
        self.store = store
        self.dispatcher = dispatcher
        self.ledger = ledger
        self.idempotency = idempotency
        self.quotas = quotas

    def run(self, principal, endpoint: str, body: dict, make_call: Callable[[], Call],
            render: Callable[[Answer], dict], idempotency_key: str | None = None) -> Outcome:
        """Run `make_call()` once for this principal; `render` turns the answer into the stored body."""
        if idempotency_key:
            timeout = self.dispatcher.settings.max_timeout_ms / 1000
            replay = self.idempotency.begin(principal.tenant_id, idempotency_key,
                                            body_hash(endpoint, body), lock_seconds=timeout)
            if replay is not None:
                return Outcome(replay.status, replay.body, replayed=True)
        call = None
        started = time.perf_counter()
        try:
            call = make_call()
            tenant_limits = self.store.tenant_limits(principal.tenant_id)
            self.quotas.admit(principal, principal.limits, tenant_limits)
            answer = self.dispatcher.execute(call)
            self.quotas.record_tokens(principal, principal.limits, tenant_limits, answer.usage.total_tokens)
        except FlowcallError as err:
            self._account(principal, endpoint, call, status=err.status, error=err, started=started)
            if idempotency_key:
                self.idempotency.release(principal.tenant_id, idempotency_key)
            raise
        except Exception:
            self._account(principal, endpoint, call, status=500, started=started)
            if idempotency_key:
                self.idempotency.release(principal.tenant_id, idempotency_key)
            raise
        self._account(principal, endpoint, call, status=200, answer=answer)
        rendered = render(answer)
        if idempotency_key:
            self.idempotency.finish(principal.tenant_id, idempotency_key, 200, rendered)
        return Outcome(200, rendered, answer=answer)

    def _account(self, principal, endpoint: str, call: Call | None, *, status: int,
                 answer: Answer | None = None, error: FlowcallError | None = None,
                 started: float | None = None) -> None:
        """Write the ledger row; a failed write costs that row only, never the caller's answer."""
        usage = answer.usage if answer else None
        row = Row(
            tenant_id=principal.tenant_id, agent_id=principal.agent_id, key_id=principal.key_id,
            request_id=call.request_id if call else None, endpoint=endpoint,
            model_requested=call.model if call else None,
            model_served=answer.routing.model_chosen if answer else (error.model_id if error else None),
            provider=answer.provider if answer else (error.provider if error else None),
            input_tokens=usage.input_tokens if usage else 0, output_tokens=usage.output_tokens if usage else 0,
            cost=answer.cost if answer else None,
            latency_ms=answer.latency_ms if answer else int((time.perf_counter() - (started or 0)) * 1000),
            status=status, error_code=error.code if error else (None if status < 400 else "internal_error"),
            attempts=answer.routing.attempts if answer else (error.attempts if error else 0),
            prompt="\n".join(m.text for m in call.messages) if call else None,
            answer=answer.text if answer else None,
        )
        try:
            self.ledger.write(row)
        except Exception:  # noqa: BLE001 - accounting must not break the answer
            log.exception("ledger write failed for request %s", row.request_id)
