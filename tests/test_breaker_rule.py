"""The circuit breaker counts only failures that say something about the provider (app/breaker.py):
never a deadline the caller chose, never a 4xx its input caused, never a 429. Fake clock, no sleeping."""
from __future__ import annotations

import pytest
import requests
import responses

from app.breaker import CircuitBreaker, is_provider_failure
from app.calls import Call, Message, Options, TextPart
from app.catalog import Catalog
from app.config import Settings
from app.dispatch import Dispatcher
from app.errors import (ProviderError, ProviderOverloaded, ProviderRateLimited, ProviderRejected, ProviderTimeout,
                        ProviderUnreachable)
from conftest import FakeClock

CATALOG = Catalog.load()
ENV = {"OPENAI_API_KEY": "sk-test-openai-0123456789"}
OPENAI = "https://api.openai.com/v1/chat/completions"
OVERLOADED = {"error": {"message": "The server is overloaded", "type": "server_error"}}
BAD_REQUEST = {"error": {"message": "Invalid 'messages'.", "type": "invalid_request_error", "param": "messages",
                         "code": None}}
OK = {"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def make():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=30, clock=clock)
    return Dispatcher(Settings.from_env(ENV), CATALOG, sleep=clock.sleep, clock=clock, breaker=breaker), clock


def call(timeout_ms=None) -> Call:
    return Call(messages=(Message("user", (TextPart("hi"),)),), model="openai.gpt-4o-mini",
                options=Options(timeout_ms=timeout_ms))


@pytest.mark.parametrize("err, caller_deadline, counts", [
    (ProviderOverloaded("503", upstream_status=503), False, True),
    (ProviderOverloaded("529", upstream_status=529), True, True),
    (ProviderUnreachable("connection refused"), True, True),
    (ProviderTimeout("their 504", upstream_status=504), True, True),
    (ProviderTimeout("ours, at the service's deadline"), False, True),
    (ProviderTimeout("ours, at the caller's short deadline"), True, False),
    (ProviderRejected("their 400", upstream_status=400), False, False),
    (ProviderRateLimited("their 429", upstream_status=429), False, False),
    (ProviderError("their 422", upstream_status=422), False, False),
])
def test_the_rule(err, caller_deadline, counts):
    assert is_provider_failure(err, caller_deadline) is counts


@responses.activate
@pytest.mark.parametrize("timeout_ms", [100, 59_999])
def test_our_timeout_at_a_deadline_the_caller_shortened_does_not_count(timeout_ms):
    d, _ = make()
    for _ in range(3):
        responses.post(OPENAI, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(ProviderTimeout):
        d.execute(call(timeout_ms))
    assert d.breaker.state("openai") == "closed"


@responses.activate
@pytest.mark.parametrize("timeout_ms", [None, 60_000, 120_000])
def test_our_timeout_at_the_services_deadline_or_longer_counts(timeout_ms):
    d, _ = make()
    for _ in range(3):
        responses.post(OPENAI, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(ProviderError):          # the timeout, or circuit_open on the retry
        d.execute(call(timeout_ms))
    assert d.breaker.state("openai") == "open"


@responses.activate
def test_the_providers_own_timeout_counts_even_under_a_short_deadline():
    d, _ = make()
    responses.post(OPENAI, status=504, json={"error": {"message": "Gateway timeout", "type": "server_error"}})
    with pytest.raises(ProviderError):          # the 504, or circuit_open when the backoff left time to retry
        d.execute(call(100))
    assert d.breaker.state("openai") == "open"


@responses.activate
def test_a_probe_that_says_nothing_about_the_provider_frees_the_probe_slot():
    d, clock = make()
    responses.post(OPENAI, status=503, json=OVERLOADED)
    with pytest.raises(ProviderOverloaded):
        d.execute(call())
    clock.now += 30                                          # half-open: the next call is the probe
    responses.post(OPENAI, status=400, json=BAD_REQUEST)
    with pytest.raises(ProviderRejected):
        d.execute(call())
    responses.post(OPENAI, json=OK)
    assert d.execute(call()).text == "4"                     # not circuit_open: the slot was freed
    assert d.breaker.state("openai") == "closed"


@responses.activate
def test_our_timeout_of_an_attempt_halved_by_the_callers_fallbacks_does_not_count():
    d, _ = make()
    responses.post(OPENAI, body=requests.exceptions.ReadTimeout("read timed out"))
    responses.post("https://api.x.ai/v1/chat/completions", json={**OK, "model": "grok-4.3"})
    d.settings = Settings.from_env({**ENV, "XAI_API_KEY": "xai-test-0123456789abcdef"})
    answer = d.execute(Call(messages=(Message("user", (TextPart("hi"),)),), model="openai.gpt-4o-mini",
                            fallbacks=("xai.grok-4.3",)))
    assert answer.provider == "xai" and d.breaker.state("openai") == "closed"
