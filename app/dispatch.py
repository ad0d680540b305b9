"""One call, end to end: route, then per candidate one attempt after another, with retries,
fallbacks, a circuit breaker and one deadline over all of it; then the shared post-processing.

The loop is the same for every mode of a call; a `Mode` says what one attempt is and what the
caller gets once a candidate has answered. `WHOLE` (here) sends, parses and returns the `Answer`;
the streamed mode (app/streaming.py) opens the stream and returns it open. Either way the answer is
finished by `Dispatcher.finish`, which reports it to the observer, and every attempt's time with
the provider is kept and reported by `Exchange`: both modes report alike by construction.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from app import model_defaults, postprocess
from app.routing import resolve as routing
from app.breaker import CircuitBreaker, is_provider_failure
from app.calls import Answer, Call, Completion, ImagePart, Message, Routing
from app.tenancy.budgets import estimate_cost
from app.catalog import Catalog, Resolved
from app.config import Settings
from app.errors import (DeadlineExceeded, FlowcallError, ProviderError, ProviderOverloaded, ProviderRateLimited,
                     ProviderTimeout, ProviderUnreachable, ServiceUnavailable, redact)
from app.http import HttpRequest, HttpResponse
from app.telemetry.observe import Observer
from app.providers import Adapter, Target, adapter_for
from app.routing.resolve import Route
from app.transport import Transport

log = logging.getLogger(__name__)

TRANSIENT = (ProviderTimeout, ProviderUnreachable, ProviderRateLimited, ProviderOverloaded)
ATTEMPTS_PER_MODEL = 3
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0


@dataclass
class Trace:
    """What happened during one call, for the answer, the logs and the ledger."""
    attempts: int = 0
    upstream_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    last_error: FlowcallError | None = None


@dataclass(frozen=True)
class Served:
    """The candidate that answered a call, and what its answer needs of the call's history."""
    call: Call
    route: Route
    index: int                  # the candidate's place in the route: 0 unless a fallback served
    candidate: Resolved
    target: Target
    plan_warnings: tuple[str, ...]
    trace: Trace
    start: float


Result = TypeVar("Result")      # what one successful attempt gives the mode
Out = TypeVar("Out")            # what the caller gets


class Mode(Protocol[Result, Out]):
    def attempt(self, dispatcher: Dispatcher, adapter: Adapter, call: Call, target: Target, seconds: float,
                trace: Trace) -> tuple[Result, tuple[str, ...]]:
        """One try at the candidate within `seconds` -> the result and the plan's warnings."""

    def served(self, dispatcher: Dispatcher, served: Served, result: Result) -> Out:
        """What the caller gets once a candidate has answered."""


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

    # -- the public entry points -----------------------------------------------------------------
    def execute(self, call: Call) -> Answer:
        return self.run(call, WHOLE)

    def run(self, call: Call, mode: Mode[Result, Out]) -> Out:
        """The call in `mode`: route, then each candidate in turn until one answers."""
        start = self.clock()
        deadline = start + self.timeout_s(call)
        route = routing.route(call, self.catalog, self.settings)
        trace = Trace()
        for index, candidate in enumerate(route.candidates):
            if index > 0:
                previous = route.candidates[index - 1].model.id
                why = trace.last_error.code if trace.last_error else "error"
                trace.warnings.append(f"Fell back from {previous} to {candidate.model.id} after {why}.")
                self.observer.fallback(metric_model(route.candidates[index - 1].model), metric_model(candidate.model))
            try:
                remaining_candidates = len(route.candidates) - index
                result, target, plan_warnings = self._try_model(mode, call, candidate, deadline, trace,
                                                                remaining_candidates)
            except ProviderError as err:
                trace.last_error = err
                if not self._may_fall_back(err) or self.clock() >= deadline:
                    break
                continue
            served = Served(call, route, index, candidate, target, tuple(plan_warnings), trace, start)
            return mode.served(self, served, result)
        err = self._final_error(trace, deadline)
        err.attempts = trace.attempts
        err.model_id = route.candidates[-1].model.id if trace.attempts else route.candidates[0].model.id
        raise err

    def probe(self, call: Call, mode: Mode, timeout_s: float = 15.0) -> float:
        """One attempt of `call` in `mode` at its model, no retries, fallbacks or breaker: for credential
        checks (nodes/connection_check.py). Seconds."""
        target = self.target(self.catalog.resolve(call.model).model)
        started = self.clock()
        mode.attempt(self, adapter_for(target.provider.format), call, target, timeout_s, Trace())
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
    def _try_model(self, mode: Mode[Result, Out], call: Call, candidate: Resolved, deadline: float, trace: Trace,
                   remaining_candidates: int = 1) -> tuple[Result, Target, tuple[str, ...]]:
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
                result, warnings = mode.attempt(self, adapter, prepared, target, budget, trace)
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
            return result, target, warnings

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

    def _inline_images(self, call: Call, target: Target, deadline: float) -> Call:
        """Providers that cannot fetch URLs get the bytes: we download (SSRF-guarded) and inline,
        within the call's deadline."""
        needs_download = any(isinstance(p, ImagePart) and not p.is_data_uri for m in call.messages for p in m.parts)
        if target.provider.image_urls or not needs_download:
            return call
        if self.fetch_image is None:
            raise ServiceUnavailable("Image download is not available in this process.")
        from app.images import to_data_uri
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

    def _final_error(self, trace: Trace, deadline: float) -> FlowcallError:
        err = trace.last_error or ServiceUnavailable("No model could serve the call.")
        if self.clock() >= deadline and not isinstance(err, (ProviderTimeout, DeadlineExceeded)):
            return DeadlineExceeded(f"The call's deadline passed; last error: {err.message}",
                                    provider=err.provider)
        return err

    # -- the answer ---------------------------------------------------------------------------------
    def finish(self, served: Served, completion: Completion) -> Answer:
        """The answer the caller gets from the candidate's completion, reported to the observer."""
        answer = self._answer(served, completion)
        self.observer.completed(answer)
        return answer

    def _answer(self, served: Served, completion: Completion) -> Answer:
        call, candidate = served.call, served.candidate
        trace, model = served.trace, candidate.model
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
        warnings = [*candidate.warnings, *served.plan_warnings, *completion.warnings, *trace.warnings]
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
        elapsed = self.clock() - served.start
        return Answer(
            text=text, data=data, model=completion.model or model.name, provider=model.provider,
            finish_reason=finish, usage=completion.usage, cost=cost,
            latency_ms=int(round(elapsed * 1000)), routing=routing_of(served),
            warnings=tuple(dict.fromkeys(warnings)), request_id=call.request_id,
            upstream_ms=trace.upstream_s * 1000, estimated_cost=estimated, tool_calls=completion.tool_calls,
        )


def routing_of(served: Served) -> Routing:
    """How the call was routed, as its answer says: the candidate that served it, and why."""
    route, index, model = served.route, served.index, served.candidate.model
    return Routing(is_auto_routed=route.is_auto, model_chosen=model.id,
                   confidence=route.confidence if index == 0 else 0.0,
                   reason=route.reason if index == 0 else
                   f"{model.id} served the call as fallback {index} after {route.candidates[0].model.id} failed.",
                   fallbacks=tuple(c.model.id for c in route.candidates[index + 1:]), attempts=served.trace.attempts)


class Exchange:
    """One attempt's time with the provider, kept alike in every mode: from `start` (the request
    going out) to `stop` (the provider's part done: parsing after it is our time). On leaving the
    `with` block the time is added to the trace and the attempt reported to the observer once,
    with its error's code and the error's message scrubbed of the key (every adapter redacts, but a
    provider, or a proxy before it, can echo our key anywhere). Nothing sent, nothing reported."""

    def __init__(self, dispatcher: Dispatcher, target: Target, trace: Trace, seconds: float):
        self.dispatcher, self.target, self.trace = dispatcher, target, trace
        self.connect_timeout = min(dispatcher.settings.connect_timeout_s, seconds)
        self.read_timeout = seconds
        self._sent: float | None = None
        self._waited: float | None = None

    def start(self) -> None:
        self._sent = self.dispatcher.clock()

    def stop(self) -> None:
        if self._sent is not None and self._waited is None:
            self._waited = self.dispatcher.clock() - self._sent

    def send(self, request: HttpRequest) -> HttpResponse:
        """The whole-answer exchange, over the dispatcher's transport."""
        self.start()
        try:
            return self.dispatcher.transport.send(request, provider=self.target.provider.name,
                                                  connect_timeout=self.connect_timeout,
                                                  read_timeout=self.read_timeout)
        finally:
            self.stop()

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._sent is None:
            return
        self.stop()
        self.trace.upstream_s += self._waited
        if exc is None:
            outcome = "ok"
        elif isinstance(exc, ProviderError):
            exc.message = redact(exc.message, self.target.secrets)
            exc.args = (exc.message,)
            outcome = exc.code
        else:
            return
        self.dispatcher.observer.attempt(self.target.provider.name, metric_model(self.target.model), outcome,
                                         self._waited)


class Whole:
    """The whole-answer mode: an attempt sends the request and parses the answer."""

    def attempt(self, dispatcher: Dispatcher, adapter: Adapter, call: Call, target: Target, seconds: float,
                trace: Trace) -> tuple[Completion, tuple[str, ...]]:
        with Exchange(dispatcher, target, trace, seconds) as exchange:
            return adapter.answer(call, target, exchange.send)

    def served(self, dispatcher: Dispatcher, served: Served, result: Completion) -> Answer:
        return dispatcher.finish(served, result)


WHOLE = Whole()
