"""Dispatch: retries, fallbacks, the deadline and the circuit breaker, on a fake clock (no sleeping)."""
from __future__ import annotations

import json

import pytest
import requests
import responses

from app.breaker import CircuitBreaker
from app.calls import Call, Message, Options, TextPart
from app.catalog import Catalog
from app.config import Settings
from app.dispatch import ATTEMPTS_PER_MODEL, Dispatcher, backoff_delay
from app.errors import (DeadlineExceeded, ProviderOverloaded, ProviderRejected, ProviderTimeout,
                        ServiceUnavailable)
from conftest import FakeClock

CATALOG = Catalog.load()
ENV = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "XAI_API_KEY": "xai-test-0123456789abcdef"}
OPENAI = "https://api.openai.com/v1/chat/completions"
XAI = "https://api.x.ai/v1/chat/completions"


def make(env=ENV, **kw):
    clock = FakeClock()
    breaker = kw.pop("breaker", None) or CircuitBreaker(clock=clock)
    d = Dispatcher(Settings.from_env(env), CATALOG, sleep=clock.sleep, clock=clock, breaker=breaker, **kw)
    return d, clock


def call(**kw) -> Call:
    return Call(messages=(Message("user", (TextPart("hi"),)),), model=kw.pop("model", "openai.gpt-4o"), **kw)


def ok(model="gpt-4o", text="fine"):
    return {"id": "c", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


OVERLOADED = {"error": {"message": "The server is overloaded", "type": "server_error"}}


@responses.activate
def test_503_twice_then_success():
    responses.post(OPENAI, status=503, json=OVERLOADED)
    responses.post(OPENAI, status=503, json=OVERLOADED)
    responses.post(OPENAI, json=ok())
    d, clock = make()
    answer = d.execute(call())
    assert answer.routing.attempts == 3 and len(clock.slept) == 2
    assert answer.routing.model_chosen == "openai.gpt-4o"


@responses.activate
def test_exhausted_retries_fall_back_with_a_warning():
    for _ in range(ATTEMPTS_PER_MODEL):
        responses.post(OPENAI, status=500, json=OVERLOADED)
    responses.post(XAI, json=ok("grok-4.3", "from grok"))
    d, _ = make()
    answer = d.execute(call(fallbacks=("xai.grok-4.3",)))
    assert answer.text == "from grok" and answer.provider == "xai"
    assert answer.routing.attempts == ATTEMPTS_PER_MODEL + 1
    assert answer.routing.model_chosen == "xai.grok-4.3" and answer.routing.fallbacks == ()
    assert any("Fell back from openai.gpt-4o to xai.grok-4.3" in w for w in answer.warnings)


@responses.activate
def test_timeout_falls_back_within_the_deadline():
    responses.post(OPENAI, body=requests.exceptions.ReadTimeout("slow"))
    responses.post(XAI, json=ok("grok-4.3"))
    d, clock = make()
    answer = d.execute(call(fallbacks=("xai.grok-4.3",), options=Options(timeout_ms=25_000)))
    assert answer.provider == "xai" and clock.slept == []          # no retry of the slow model
    assert [c.request.url for c in responses.calls] == [OPENAI, XAI]


def test_attempt_budget_is_shared_with_the_fallbacks():
    seen = []

    class Transport:
        def send(self, request, *, provider, connect_timeout, read_timeout):
            seen.append((provider, read_timeout))
            clock.now += read_timeout
            raise ProviderTimeout("timed out", provider=provider)

    d, clock = make(transport=Transport())
    with pytest.raises((ProviderTimeout, DeadlineExceeded)):
        d.execute(call(fallbacks=("xai.grok-4.3", "openai.gpt-4.1"), options=Options(timeout_ms=16_000)))
    assert seen == [("openai", 8.0), ("xai", 4.0), ("openai", 4.0)]


@responses.activate
def test_non_retryable_error_fails_at_once():
    responses.post(OPENAI, status=400, json={"error": {"message": "bad request", "type": "invalid_request_error"}})
    d, clock = make()
    with pytest.raises(ProviderRejected):
        d.execute(call(fallbacks=("xai.grok-4.3",)))
    assert len(responses.calls) == 1 and clock.slept == []


@responses.activate
def test_model_not_found_falls_back():
    responses.post(OPENAI, status=404, json={"error": {"message": "no such model", "code": "model_not_found"}})
    responses.post(XAI, json=ok("grok-4.3"))
    d, _ = make()
    assert d.execute(call(fallbacks=("xai.grok-4.3",))).provider == "xai"


@responses.activate
def test_retry_after_beyond_the_deadline_is_not_waited_for():
    responses.post(OPENAI, status=429, headers={"retry-after": "30"},
                   json={"error": {"message": "slow down", "code": "rate_limit_exceeded"}})
    d, clock = make()
    with pytest.raises(Exception) as info:
        d.execute(call(options=Options(timeout_ms=5_000)))
    assert clock.slept == [] and info.value.code == "provider_rate_limited"


def test_backoff_honours_retry_after_and_caps():
    assert backoff_delay(0, 3.0, rng=lambda: 0.0) == 3.0
    assert backoff_delay(10, None, rng=lambda: 1.0) == 8.0
    assert backoff_delay(1, None, rng=lambda: 0.5) == 0.5


def test_deadline_passes_the_remaining_time_as_read_timeout():
    seen = []

    class Transport:
        def send(self, request, *, provider, connect_timeout, read_timeout):
            seen.append((connect_timeout, read_timeout))
            clock.now += read_timeout           # the provider hangs until our timeout fires
            raise ProviderTimeout("timed out", provider=provider)

    d, clock = make(transport=Transport())
    started = clock.now
    with pytest.raises((ProviderTimeout, DeadlineExceeded)):
        d.execute(call(options=Options(timeout_ms=4_000)))
    assert seen == [(4.0, 4.0)]
    assert clock.now - started == pytest.approx(4.0, abs=0.01)   # honoured to the millisecond


def test_timeout_is_capped_by_the_server_maximum():
    d, _ = make(env={**ENV, "FLOWCALL_MAX_TIMEOUT_MS": "10000"})
    assert d.timeout_s(call(options=Options(timeout_ms=3_600_000))) == 10.0
    assert d.timeout_s(call()) == 10.0
    d, _ = make()
    assert d.timeout_s(call()) == 60.0


@responses.activate
def test_circuit_opens_after_repeated_failures_and_closes_after_cooldown():
    d, clock = make(breaker=None)
    d.breaker = CircuitBreaker(threshold=3, cooldown_s=30, clock=clock)
    for _ in range(3):
        responses.post(OPENAI, status=503, json=OVERLOADED)
    with pytest.raises(ProviderOverloaded):
        d.execute(call())
    assert d.breaker.state("openai") == "open"
    calls_so_far = len(responses.calls)
    responses.post(XAI, json=ok("grok-4.3"))
    answer = d.execute(call(fallbacks=("xai.grok-4.3",)))      # skipped at once: no new OpenAI request
    assert answer.provider == "xai" and len(responses.calls) == calls_so_far + 1
    assert any("circuit_open" in w for w in answer.warnings)
    clock.now += 31
    assert d.breaker.state("openai") == "half_open"
    responses.post(OPENAI, json=ok())
    assert d.execute(call()).provider == "openai"             # the probe succeeds and closes it
    assert d.breaker.state("openai") == "closed"


def test_half_open_lets_one_probe_through():
    clock = FakeClock()
    b = CircuitBreaker(threshold=1, cooldown_s=10, clock=clock)
    b.record_failure("p")
    assert b.allow("p") is False
    clock.now += 10
    assert b.allow("p") is True and b.allow("p") is False
    b.record_failure("p")                                    # the probe failed: open again
    assert b.state("p") == "open"


def test_unconfigured_provider_is_a_clear_503():
    d, _ = make(env={})
    with pytest.raises(ServiceUnavailable) as info:
        d.execute(call())
    assert "OPENAI_API_KEY" in info.value.message and info.value.code == "provider_not_configured"


@responses.activate
def test_fallback_to_an_unconfigured_provider_is_skipped():
    responses.post(OPENAI, status=500, json=OVERLOADED)
    responses.post(OPENAI, status=500, json=OVERLOADED)
    responses.post(OPENAI, status=500, json=OVERLOADED)
    d, _ = make(env={"OPENAI_API_KEY": "sk-test-openai-0123456789"})
    with pytest.raises(ProviderOverloaded):               # the primary's own error, not "xai not configured"
        d.execute(call(fallbacks=("xai.grok-4.3",)))


@responses.activate
def test_retired_alias_is_served_by_its_successor_with_a_warning():
    responses.post(OPENAI, json=ok("gpt-5.6-sol"))
    d, _ = make()
    answer = d.execute(call(model="o1"))
    assert json.loads(responses.calls[0].request.body)["model"] == "gpt-5.6-sol"
    assert answer.routing.model_chosen == "openai.gpt-5.6-sol"
    assert any("retired" in w and "gpt-5.6-sol" in w for w in answer.warnings)


@responses.activate
def test_unknown_model_of_known_provider_is_forwarded_without_price():
    responses.post(OPENAI, json=ok("gpt-7-preview"))
    d, _ = make()
    answer = d.execute(call(model="openai.gpt-7-preview"))
    assert json.loads(responses.calls[0].request.body)["model"] == "gpt-7-preview"
    assert answer.cost is None and any("not in the catalog" in w for w in answer.warnings)


@responses.activate
def test_connection_refused_is_retryable_unreachable():
    responses.post(OPENAI, body=requests.exceptions.ConnectionError("refused"))
    responses.post(OPENAI, body=requests.exceptions.ConnectionError("refused"))
    responses.post(OPENAI, body=requests.exceptions.ConnectionError("refused"))
    d, _ = make()
    with pytest.raises(Exception) as info:
        d.execute(call())
    assert info.value.code == "provider_unreachable" and info.value.retryable is True
    assert "sk-test" not in info.value.message
