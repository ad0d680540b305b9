"""Prometheus metrics, correct across gunicorn workers.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it before any worker imports
prometheus_client) every worker writes its samples to files there and GET /metrics aggregates all
of them; without it (the development server, tests in one process) the default registry is used.
Labels never carry tenants, keys or content: only endpoints, statuses, providers and models.
"""
from __future__ import annotations

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest,
                               multiprocess)

from app.telemetry.observe import Observer

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter("flowcall_requests_total", "HTTP requests answered", ["endpoint", "status"])
OVERHEAD = Histogram("flowcall_overhead_seconds", "Time spent in flowcall itself per request (total minus "
                     "waiting on providers)", ["endpoint"], buckets=_BUCKETS)
PROVIDER_CALLS = Counter("flowcall_provider_calls_total", "Provider attempts by outcome",
                         ["provider", "model", "outcome"])
PROVIDER_LATENCY = Histogram("flowcall_provider_seconds", "Time waiting on a provider per attempt", ["provider"],
                             buckets=_BUCKETS)
TOKENS = Counter("flowcall_tokens_total", "Tokens by provider and direction", ["provider", "direction"])
COST = Counter("flowcall_cost_usd_total", "Cost in USD by provider", ["provider"])
RETRIES = Counter("flowcall_retries_total", "Retries of the same model", ["provider"])
FALLBACKS = Counter("flowcall_fallbacks_total", "Fallbacks taken to another model", ["from_model", "to_model"])
LEDGER_WRITE_FAILURES = Counter("flowcall_ledger_write_failures_total", "Calls whose usage-ledger row could not "
                                "be written (each one is also logged as an error)", ["endpoint"])
CIRCUIT = Gauge("flowcall_circuit_open", "1 when a provider's circuit is open or half-open in some worker",
                ["provider"], multiprocess_mode="max")


_CHILDREN_CAP = 10_000
_children: dict = {}


def child(metric, *labels):
    """`metric.labels(*labels)`, looked up here once per label tuple: prometheus_client's labels()
    validates the values and takes a lock on every call, several times per request. The same child
    object either way (prometheus_client keeps it for the process too). Label values are bounded
    already (routes, statuses, catalog names: see the module docstring); the cap keeps this dict so
    whatever happens, past it lookups simply go through labels() again."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = metric.labels(*labels)
        if len(_children) < _CHILDREN_CAP:
            _children[key] = found
    return found


class PrometheusObserver(Observer):
    def attempt(self, provider, model, outcome, seconds):
        child(PROVIDER_CALLS, provider, model, outcome).inc()
        child(PROVIDER_LATENCY, provider).observe(seconds)

    def retry(self, provider):
        child(RETRIES, provider).inc()

    def fallback(self, from_model, to_model):
        child(FALLBACKS, from_model, to_model).inc()

    def circuit(self, provider, state):
        child(CIRCUIT, provider).set(0 if state == "closed" else 1)

    def completed(self, answer):
        child(TOKENS, answer.provider, "input").inc(answer.usage.input_tokens)
        child(TOKENS, answer.provider, "output").inc(answer.usage.output_tokens)
        if answer.cost:
            child(COST, answer.provider).inc(answer.cost)


def record_request(endpoint: str, status: int, overhead_s: float) -> None:
    child(REQUESTS, endpoint, str(status)).inc()
    child(OVERHEAD, endpoint).observe(overhead_s)


def exposition(multiproc_dir: str | None) -> tuple[bytes, str]:
    """Every worker's samples from `multiproc_dir` (Settings.prometheus_multiproc_dir), else this process's."""
    if multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiproc_dir)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
