"""The embeddings mode of dispatch: one attempt embeds every input of the call with one model, split
into requests the provider takes (app/embeddings.parts) and merged back in order.

Dispatch's loop gives it retries, fallbacks, the breaker and the deadline as for any call. Parts a
model has embedded are kept across that model's retries, so a retry resends only what failed and no
part is paid twice; they are never kept across models: a fallback starts over, so every vector of an
answer comes from the one model the answer names.
"""
from __future__ import annotations

from app.tenancy.budgets import estimate_cost
from app.calls import Answer, Call, Embedded, Usage
from app.dispatch import Dispatcher, Exchange, Served, Trace, routing_of
from app.embeddings import check_inputs, dimensions_of, fitted, parts
from app.errors import CapabilityMissing, ProviderTimeout
from app.providers import Adapter, Target, embedder_for


class Embedding:
    """One call's mode (it keeps the call's embedded parts): make one per call."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, int], Embedded] = {}

    def attempt(self, dispatcher: Dispatcher, adapter: Adapter, call: Call, target: Target, seconds: float,
                trace: Trace) -> tuple[Embedded, tuple[str, ...]]:
        embedder = embedder_for(target.provider.format)
        if embedder is None:
            raise CapabilityMissing(f"{target.provider.label} does not serve embeddings.",
                                    fields={"model": "cannot embed"})
        embed, warnings = fitted(call.embed, target.model)
        check_inputs(embed, target.model)
        ranges = parts(embed, embedder.max_inputs, embedder.max_request_tokens, dimensions_of(embed, target.model))
        started = dispatcher.clock()
        for number, (start, stop) in enumerate(ranges):
            key = (target.model.id, number)
            if key in self._done:
                continue
            left = seconds - (dispatcher.clock() - started)
            if left <= 0:
                raise ProviderTimeout(f"{target.model.id} had embedded {number} of {len(ranges)} parts when this "
                                      "attempt's time ran out.", provider=target.provider.name)
            with Exchange(dispatcher, target, trace, left) as exchange:
                self._done[key] = embedder.embed(embed.part(start, stop), target, exchange.send)
        return merged([self._done[(target.model.id, n)] for n in range(len(ranges))]), warnings

    def served(self, dispatcher: Dispatcher, served: Served, result: Embedded) -> Answer:
        model, trace = served.candidate.model, served.trace
        warnings = [*served.candidate.warnings, *served.plan_warnings, *trace.warnings]
        estimated = cost = None
        if result.usage.reported:
            cost, price_warnings = model.price_usage(result.usage)
            warnings.extend(price_warnings)
            if cost is None and model.known:
                warnings.append(f"No price is known for {model.id}; cost is null.")
        else:
            estimated = estimate_cost(served.call, model)
            warnings.append(f"{model.provider} reports no token usage for embeddings: usage and cost are null"
                            + (f"; budgets are charged an estimate of ${estimated:.6f}." if estimated is not None
                               else "."))
        answer = Answer(text="", data=None, model=result.model, provider=model.provider, finish_reason="stop",
                        usage=result.usage, cost=cost,
                        latency_ms=int(round((dispatcher.clock() - served.start) * 1000)),
                        routing=routing_of(served), warnings=tuple(dict.fromkeys(warnings)),
                        request_id=served.call.request_id, upstream_ms=trace.upstream_s * 1000,
                        estimated_cost=estimated, vectors=result.vectors)
        dispatcher.observer.completed(answer)
        return answer


def merged(results: list[Embedded]) -> Embedded:
    """The parts' vectors in order; usage summed, unless a part had none reported."""
    vectors = tuple(v for r in results for v in r.vectors)
    reported = all(r.usage.reported for r in results)
    usage = Usage(input_tokens=sum(r.usage.input_tokens for r in results)) if reported else Usage(reported=False)
    return Embedded(vectors, usage, results[0].model)
