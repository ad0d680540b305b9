"""One call, end to end: route, then per candidate build -> send -> parse, with retries, fallbacks,
a circuit breaker and one deadline over all of it; then the shared post-processing.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from . import model_defaults, postprocess, routing
from .breaker import CircuitBreaker, is_provider_failure
from .calls import Answer, Call, Completion, ImagePart, Message, Options, Routing, TextPart
from .budgets import estimate_cost
from .catalog import Catalog, Resolved
from .config import Settings
from .errors import (DeadlineExceeded, FlowcallError, ProviderError, ProviderOverloaded, ProviderRateLimited,
                     ProviderTimeout, ProviderUnreachable, ServiceUnavailable, redact)
from .http import HttpResponse
from .observe import Observer
from .providers import Target, adapter_for
from .transport import Transport

log = logging.getLogger(__name__)

TRANSIENT = (ProviderTimeout, ProviderUnreachable, ProviderRateLimited, ProviderOverloaded)
ATTEMPTS_PER_MODEL = 3
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0


@dataclass
class _Trace:
    """What happened during one call, for the answer, the logs and the ledger."""
    attempts: int = 0
    upstream_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    last_error: FlowcallError | None = None


def metric_model(model) -> str:
    """Models the catalog does not list share one label: callers must not mint metric series."""
    return model.id if model.known else f"{model.provider}.unlisted"


def _caller_shaped(tool_calls, call: Call):
    """A strict tool's arguments as the caller's schema has them: the nulls that stand for optional
    properties in the strict subset (app.strict_schema) are removed, as for structured output."""
    strict = {t.name: t.parameters for t in call.tools if t.strict and t.parameters}
    if not strict:
        return tool_calls
    return tuple(replace(tc, arguments=postprocess.without_added_nulls(tc.arguments, strict[tc.name]))
                 if tc.name in strict else tc for tc in tool_calls)


def backoff_delay(attempt: int, retry_after: float | None, rng: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff, but never sooner than the provider's Retry-After."""
    jittered = rng() * min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** attempt))
    return max(jittered, retry_after or 0.0)


class Dispatcher:
    def __init__(self, settings: Settings, catalog: Catalog, transport: Transport | None = None,
                 fetch_image: Callable[[str], tuple[str, bytes]] | None = None,
                 breaker: CircuitBreaker | None = None, observer: Observer | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.catalog = catalog
        self.transport = transport or Transport(settings.http_pool_size)
        self.fetch_image = fetch_image
        self.breaker = breaker or CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_s, clock=clock)
        self.sleep = sleep
        self.clock = clock
        self.observer = observer or Observer()

    # -- the public entry point -------------------------------------------------------------------
    def execute(self, call: Call) -> Answer:
        start = self.clock()
        deadline = start + self.timeout_s(call)
        route = routing.route(call, self.catalog, self.settings)
        trace = _Trace()
        for index, candidate in enumerate(route.candidates):
            if index > 0:
                previous = route.candidates[index - 1].model.id
                why = trace.last_error.code if trace.last_error else "error"
                trace.warnings.append(f"Fell back from {previous} to {candidate.model.id} after {why}.")
                self.observer.fallback(metric_model(route.candidates[index - 1].model), metric_model(candidate.model))
            try:
                remaining_candidates = len(route.candidates) - index
                completion, target, plan_warnings = self._try_model(call, candidate, deadline, trace,
                                                                    remaining_candidates)
            except ProviderError as err:
                trace.last_error = err
                if not self._may_fall_back(err) or self.clock() >= deadline:
                    break
                continue
            answer = self._answer(call, route, index, candidate, target, completion, plan_warnings,
                                  trace, start)
            self.observer.completed(answer)
            return answer
        err = self._final_error(trace, deadline)
        err.attempts = trace.attempts
        err.model_id = route.candidates[-1].model.id if trace.attempts else route.candidates[0].model.id
        raise err

    def probe(self, spec: str, timeout_s: float = 15.0) -> float:
        """One minimal real call, no retries, fallbacks or breaker: for credential checks. Seconds."""
        model = self.catalog.resolve(spec).model
        call = Call(messages=(Message("user", (TextPart("ping"),)),), model=model.id,
                    options=Options(max_tokens=16))
        target = self.target(model)
        started = self.clock()
        self._attempt(adapter_for(target.provider.format), call, target, timeout_s, _Trace())
        return self.clock() - started

    def timeout_s(self, call: Call) -> float:
        ms = call.options.timeout_ms or self.settings.default_timeout_ms
        return min(ms, self.settings.max_timeout_ms) / 1000

    def target(self, model) -> Target:
        provider = self.catalog.providers[model.provider]
        base_url, key = self.settings.credentials(provider)
        if base_url is None:
            envs = " or ".join(provider.key_env or [provider.base_url_env or ""])
            raise ServiceUnavailable(f"Provider {provider.name} is not configured: set {envs}.",
                                     code="provider_not_configured", provider=provider.name)
        return Target(model=model, provider=provider, base_url=base_url, api_key=key)

    # -- one model, with retries -----------------------------------------------------------------
    def _try_model(self, call: Call, candidate: Resolved, deadline: float, trace: _Trace,
                   remaining_candidates: int = 1):
        target = self.target(candidate.model)
        adapter = adapter_for(target.provider.format)
        prepared = self._inline_images(call, target, deadline)
        attempt = 0
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:          # before `allow`, which may hand this call the half-open probe
                raise DeadlineExceeded("The call's deadline passed before the provider answered.",
                                       provider=target.provider.name)
            if not self.breaker.allow(target.provider.name):
                raise ProviderOverloaded(
                    f"{target.provider.name} is failing repeatedly; skipped for a cool-down (circuit open).",
                    provider=target.provider.name, code="circuit_open")
            trace.attempts += 1
            # With fallbacks still to try, one hung attempt may use half the time left, so the
            # fallbacks still run inside the deadline (halving again down the list); the last
            # candidate gets all of it. A slow but healthy first choice keeps most of the budget.
            budget = remaining / 2 if remaining_candidates > 1 else remaining
            try:
                completion, warnings = self._attempt(adapter, prepared, target, budget, trace)
            except ProviderError as err:
                err.provider = err.provider or target.provider.name    # parsing helpers do not know it
                self.judge(target.provider.name, err, self.cut_short(call) or remaining_candidates > 1)
                trace.last_error = err
                attempt += 1
                if not (isinstance(err, TRANSIENT) and err.retryable) or attempt >= ATTEMPTS_PER_MODEL:
                    raise
                if isinstance(err, ProviderTimeout) and remaining_candidates > 1:
                    raise           # a slow model is better replaced than waited for again
                delay = backoff_delay(attempt - 1, err.retry_after)
                if self.clock() + delay >= deadline:
                    raise
                log.info("retrying %s after %s in %.2fs", target.model.id, err.code, delay)
                self.observer.retry(target.provider.name)
                self.sleep(delay)
                continue
            except BaseException:
                self.breaker.release(target.provider.name)
                raise
            self.breaker.record_success(target.provider.name)
            self.observer.circuit(target.provider.name, "closed")
            return completion, target, warnings

    def cut_short(self, call: Call) -> bool:
        """The caller's deadline is shorter than the service's default one."""
        return self.timeout_s(call) < min(self.settings.default_timeout_ms, self.settings.max_timeout_ms) / 1000

    def judge(self, provider: str, err: ProviderError, caller_deadline: bool) -> None:
        """Tell the breaker how an attempt failed: only the provider's own failures count
        (app/breaker.py); `caller_deadline`: the caller cut the attempt's wait short."""
        if is_provider_failure(err, caller_deadline):
            self.breaker.record_failure(provider)
            self.observer.circuit(provider, self.breaker.state(provider))
        else:
            self.breaker.release(provider)

    def _attempt(self, adapter, call: Call, target: Target, remaining: float, trace: _Trace):
        if target.provider.format == "mock":
            return adapter.complete(call, target), ()
        plan = adapter.build_request(call, target)
        connect = min(self.settings.connect_timeout_s, remaining)
        label = metric_model(target.model)
        sent = self.clock()
        try:
            resp: HttpResponse = self.transport.send(plan.request, provider=target.provider.name,
                                                     connect_timeout=connect, read_timeout=remaining)
        except ProviderError as err:
            trace.upstream_s += self.clock() - sent
            self.observer.attempt(target.provider.name, label, err.code, self.clock() - sent)
            raise
        waited = self.clock() - sent            # parsing below is our time, not the provider's
        trace.upstream_s += waited
        try:
            if not 200 <= resp.status < 300:
                raise adapter.parse_error(resp, target)
            completion = adapter.parse_response(resp, call, target)
        except ProviderError as err:
            # every adapter redacts, but a provider (or a proxy before it) can echo our key anywhere
            err.message = redact(err.message, target.secrets)
            err.args = (err.message,)
            self.observer.attempt(target.provider.name, label, err.code, waited)
            raise
        self.observer.attempt(target.provider.name, label, "ok", waited)
        return completion, plan.warnings

    def _inline_images(self, call: Call, target: Target, deadline: float) -> Call:
        """Providers that cannot fetch URLs get the bytes: we download (SSRF-guarded) and inline,
        within the call's deadline."""
        needs_download = any(isinstance(p, ImagePart) and not p.is_data_uri for m in call.messages for p in m.parts)
        if target.provider.image_urls or not needs_download:
            return call
        if self.fetch_image is None:
            raise ServiceUnavailable("Image download is not available in this process.")
        from .images import to_data_uri
        messages = []
        for m in call.messages:
            parts = tuple(
                ImagePart(to_data_uri(*self.fetch_image(p.url, total_timeout=max(0.1, deadline - self.clock()))),
                          p.detail)
                if isinstance(p, ImagePart) and not p.is_data_uri else p for p in m.parts)
            messages.append(Message(m.role, parts))
        return call.with_messages(tuple(messages))

    @staticmethod
    def _may_fall_back(err: ProviderError) -> bool:
        """Move down the list on provider trouble; a request the provider rejects as bad would be
        rejected by the next one too, except a retired model, which another model can serve."""
        return err.retryable or err.code in ("model_not_found", "circuit_open", "provider_not_configured")

    def _final_error(self, trace: _Trace, deadline: float) -> FlowcallError:
        err = trace.last_error or ServiceUnavailable("No model could serve the call.")
        if self.clock() >= deadline and not isinstance(err, (ProviderTimeout, DeadlineExceeded)):
            return DeadlineExceeded(f"The call's deadline passed; last error: {err.message}",
                                    provider=err.provider)
        return err

    # -- the answer ---------------------------------------------------------------------------------
    def _answer(self, call: Call, route, index: int, candidate: Resolved, target: Target,
                completion: Completion, plan_warnings, trace: _Trace, start: float) -> Answer:
        model = candidate.model
        text, cut = postprocess.enforce_stop(completion.text, call.options.stop)
        finish = "stop" if cut and not completion.tool_calls else completion.finish_reason
        completion = replace(completion, text=text, finish_reason=finish)
        data = None
        if call.response_format is not None and not completion.tool_calls:   # a tool call is not the answer yet
            data = postprocess.parse_structured(completion, call.response_format, model.provider)
        if completion.tool_calls:
            completion = replace(completion, tool_calls=_caller_shaped(completion.tool_calls, call))
        priced, price_warnings = model.price_usage(completion.usage)
        cost = completion.cost if completion.cost is not None else priced
        warnings = [*candidate.warnings, *plan_warnings, *completion.warnings, *trace.warnings]
        estimated = None
        if not completion.usage.reported and completion.cost is None:
            estimated = estimate_cost(call, model)
            warnings.append(f"{model.provider} reported no token usage: usage and cost are null"
                            + (f"; budgets are charged an estimate of ${estimated:.6f}." if estimated is not None
                               else "."))
        elif not completion.usage.reported:
            warnings.append(f"{model.provider} reported no token usage: usage is null.")
        elif completion.cost is None:
            warnings.extend(price_warnings)
            if cost is None and model.known:
                warnings.append(f"No price is known for {model.id}; cost is null.")
        thinking_only = model_defaults.thinking_only_warning(model.id, text, finish, completion.usage.reasoning_tokens)
        if thinking_only and not completion.tool_calls:
            warnings.append(thinking_only)
        fallbacks = tuple(c.model.id for c in route.candidates[index + 1:])
        elapsed = self.clock() - start
        return Answer(
            text=text, data=data, model=completion.model or model.name, provider=model.provider,
            finish_reason=finish, usage=completion.usage, cost=cost,
            latency_ms=int(round(elapsed * 1000)),
            routing=Routing(is_auto_routed=route.is_auto, model_chosen=model.id,
                            confidence=route.confidence if index == 0 else 0.0,
                            reason=route.reason if index == 0 else
                            f"{model.id} served the call as fallback {index} after "
                            f"{route.candidates[0].model.id} failed.",
                            fallbacks=fallbacks, attempts=trace.attempts),
            warnings=tuple(dict.fromkeys(warnings)), request_id=call.request_id,
            upstream_ms=trace.upstream_s * 1000, estimated_cost=estimated, tool_calls=completion.tool_calls,
        )
