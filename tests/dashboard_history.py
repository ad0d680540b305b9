"""A month of a realistic tenant's ledger rows for the dashboard's browser test and screenshots:
priced calls over several models, endpoints, agents and keys, weekday-heavy traffic and a few
failures. Written with the ledger table's own insert (the call path's columns), as history that the
test's real calls through the service then join."""
from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, UTC

from app.tenancy.db import ledger, make_engine

# model, provider, USD per million input tokens, per million output tokens (list prices, rounded),
# the log of its typical latency in ms
MODELS = (("openai.gpt-4o-mini", "openai", 0.15, 0.60, 6.0), ("openai.gpt-4o", "openai", 2.50, 10.00, 7.0),
          ("anthropic.claude-sonnet-4-6", "anthropic", 3.00, 15.00, 7.4),
          ("google.gemini-2.5-flash", "google", 0.30, 2.50, 5.7))
WEIGHTS = (5, 2, 2, 3)
ENDPOINTS = ("public_call", "chat_completions", "call")
FAILURES = ((502, "provider_error", "The provider failed."), (504, "timeout", "The provider did not answer in time."),
            (429, "rate_limited", "The provider's rate limit was reached."))


def rows(tenant: str, owners: list[tuple[str | None, str]], days: int = 29, now: datetime | None = None) -> list[dict]:
    """The ledger rows of the `days` whole UTC days before today; `owners` are the (agent, key id)
    pairs the calls are spread over. Deterministic (a fixed seed)."""
    rng = random.Random(17)
    today = (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    for back in range(days, 0, -1):
        day = today - timedelta(days=back)
        busy = 14 if day.weekday() >= 5 else 40 + (days - back)        # quieter weekends, growing use
        for _ in range(busy):
            model, provider, price_in, price_out, typical = rng.choices(MODELS, WEIGHTS)[0]
            agent, key = owners[rng.randrange(len(owners))]
            failed = rng.random() < 0.04
            tokens_in, tokens_out = rng.randint(200, 3000), rng.randint(20, 700)
            latency = int(rng.lognormvariate(typical, 0.45))
            status, code, message = rng.choice(FAILURES) if failed else (200, None, None)
            if failed:
                tokens_in = tokens_out = 0
            out.append({
                "created_at": day + timedelta(seconds=rng.randrange(7 * 3600, 20 * 3600)), "tenant_id": tenant,
                "agent_id": agent, "key_id": key, "request_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                "endpoint": rng.choice(ENDPOINTS), "model_requested": model, "model_served": model,
                "provider": provider, "input_tokens": tokens_in, "output_tokens": tokens_out,
                "cost": round((tokens_in * price_in + tokens_out * price_out) / 1e6, 8),
                "latency_ms": latency, "upstream_ms": max(0, latency - rng.randint(2, 12)), "status": status,
                "error_code": code, "error_message": message, "attempts": 1,
                "routing_reason": f"{model} was requested.", "fallbacks": None, "prompt": None, "answer": None})
    return out


def write(database_url: str, history: list[dict]) -> None:
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(ledger.insert(), history)
    finally:
        engine.dispose()
