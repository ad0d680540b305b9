"""Budget reservations (app/tenancy/budgets.py) on every backend: concurrent calls cannot overspend, a call's
hold is settled with its ledger row, a crashed call's hold lapses, and the 402 names the budget exactly."""
from __future__ import annotations

import threading
import uuid

import pytest

from app.tenancy.auth import Principal
from app.tenancy.budgets import BudgetHolds, Scope, estimate_cost, estimate_tokens, usd
from app.calls import Call, ImagePart, Message, Options, TextPart
from app.catalog import Catalog
from app.errors import BudgetExceeded
from app.tenancy.ledger import Ledger, Row
from app.tenancy.quotas import Quotas, SqlStorage
from app.tenancy.store import Limits, Store
from backends import DATABASES, fresh_database_url

CATALOG = Catalog.load()


@pytest.fixture(params=DATABASES)
def store(request, tmp_path):
    s = Store(fresh_database_url(request.param, tmp_path))
    yield s
    s.close()


NO_LIMITS = Limits()


def principal(tenant_id=None, key_id="k1", limits=NO_LIMITS):
    return Principal(tenant_id=tenant_id or str(uuid.uuid4()), agent_id=None, method="api_key", key_id=key_id,
                     limits=limits)


def race(n, fn):
    """Run fn n times at once; the outcomes (a value, or the exception raised)."""
    results, lock, start = [], threading.Lock(), threading.Barrier(n)

    def run():
        start.wait()
        try:
            outcome = fn()
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcome = exc
        with lock:
            results.append(outcome)
    threads = [threading.Thread(target=run) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results


def committed(store, holds, scope):
    """(spent this month, held by calls in flight) for one scope."""
    with store.engine.connect() as conn:
        return holds._committed(conn, scope, holds.clock())


# -- the estimate ---------------------------------------------------------------------------------
def test_the_estimate_is_the_prompts_bytes_plus_images_and_max_tokens_at_catalog_prices():
    model = CATALOG.resolve("openai.gpt-4o").model
    call = Call(messages=(Message("user", (TextPart("héllo"), ImagePart("https://example.com/a.png"))),),
                model="openai.gpt-4o", options=Options(max_tokens=100))
    usage = estimate_tokens(call, max_output_tokens=model.max_output_tokens)
    assert (usage.input_tokens, usage.output_tokens) == (6 + 2_000, 100)
    assert estimate_cost(call, model) == pytest.approx((2_006 * model.price_input + 100 * model.price_output) / 1e6)


def test_tools_tool_parts_and_schemas_count_as_input():
    from app.calls import ResponseFormat, Tool, ToolCall, ToolCallPart, ToolResultPart
    plain = Call(messages=(Message("user", (TextPart("hi"),)),), model="x")
    rich = Call(messages=(Message("user", (TextPart("hi"),)),
                          Message("assistant", (ToolCallPart(ToolCall("c1", "lookup", {"q": "x" * 300})),)),
                          Message("tool", (ToolResultPart("c1", "y" * 400),))),
                model="x", tools=(Tool("lookup", "Looks up.", {"type": "object"}),),
                response_format=ResponseFormat("json_schema", schema={"type": "object", "description": "z" * 200}))
    assert estimate_tokens(rich).input_tokens > estimate_tokens(plain).input_tokens + 900


def test_output_is_capped_by_the_models_maximum():
    call = Call(messages=(Message("user", (TextPart("hi"),)),), model="x", options=Options(max_tokens=1_000_000))
    assert estimate_tokens(call, 16_384).output_tokens == 16_384


def test_budgets_are_shown_exactly():
    assert [usd(0.0001), usd(10.0), usd(0.5), usd(12.345), usd(0)] == ["$0.0001", "$10.00", "$0.50", "$12.345",
                                                                       "$0.00"]


# -- reservations -----------------------------------------------------------------------------------
def test_concurrent_reservations_never_pass_the_budget_by_more_than_one_hold(store):
    holds = BudgetHolds(store.engine)
    t = str(uuid.uuid4())
    scope = [Scope("tenant", t, 0.001)]
    results = race(40, lambda: holds.reserve(scope, tenant_id=t, key_id=None, amount=0.0003, seconds=60))
    admitted = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(admitted) == 4 and len(refused) == 36          # held 0, .0003, .0006, .0009 < .001: four
    assert {r.code for r in refused} == {"budget_exceeded_tenant"}


def test_a_settled_call_counts_its_real_cost_once(store):
    ledger, holds = Ledger(store.engine), BudgetHolds(store.engine)
    t = str(uuid.uuid4())
    scope = [Scope("key", "k9", 0.001)]
    hold = holds.reserve(scope, tenant_id=t, key_id="k9", amount=0.001, seconds=60)
    with pytest.raises(BudgetExceeded):                        # the whole budget is held
        holds.reserve(scope, tenant_id=t, key_id="k9", amount=0.0009, seconds=60)
    ledger.write(Row(tenant_id=t, key_id="k9", endpoint="call", status=200, cost=0.0002),
                 then=lambda conn: BudgetHolds.release_in(conn, hold))
    assert committed(store, holds, scope[0]) == pytest.approx((0.0002, 0.0))
    holds.reserve(scope, tenant_id=t, key_id="k9", amount=0.0009, seconds=60)    # .0002 spent: admitted


def test_a_crashed_calls_hold_lapses_at_its_expiry(store):
    now = [1_000_000.0]
    holds = BudgetHolds(store.engine, clock=lambda: now[0])
    t = str(uuid.uuid4())
    scope = [Scope("tenant", t, 0.001)]
    holds.reserve(scope, tenant_id=t, key_id=None, amount=0.005, seconds=90)        # never settled
    with pytest.raises(BudgetExceeded) as info:
        holds.reserve(scope, tenant_id=t, key_id=None, amount=0.0001, seconds=90)
    assert "$0.005 reserved by calls in flight" in info.value.message
    now[0] += 90
    holds.reserve(scope, tenant_id=t, key_id=None, amount=0.0001, seconds=90)


def test_tenant_and_key_budgets_are_both_held(store):
    holds = BudgetHolds(store.engine)
    t = str(uuid.uuid4())
    holds.reserve([Scope("key", "ka", 1.0), Scope("tenant", t, 0.001)], tenant_id=t, key_id="ka",
                  amount=0.002, seconds=60)
    with pytest.raises(BudgetExceeded) as info:                # another key of the same tenant
        holds.reserve([Scope("tenant", t, 0.001)], tenant_id=t, key_id="kb", amount=0.0001, seconds=60)
    assert info.value.code == "budget_exceeded_tenant"
    holds.reserve([Scope("key", "kc", 0.001)], tenant_id=str(uuid.uuid4()), key_id="kc", amount=0.0001,
                  seconds=60)                                  # another tenant is untouched


def test_the_402_names_the_budget_exactly(store):
    ledger = Ledger(store.engine)
    quotas = Quotas(SqlStorage(store.engine), ledger)
    p = principal(limits=Limits(budget_usd=0.0001))
    ledger.write(Row(tenant_id=p.tenant_id, key_id=p.key_id, endpoint="call", status=200, cost=0.00035))
    with pytest.raises(BudgetExceeded) as info:
        quotas.admit(p, p.limits, Limits(), reserve_usd=0.0001)
    assert info.value.status == 402 and info.value.code == "budget_exceeded_key"
    assert "budget of $0.0001 is spent ($0.00035 this month)" in info.value.message


def test_a_rate_limit_refusal_keeps_no_hold(store):
    quotas = Quotas(SqlStorage(store.engine), Ledger(store.engine))
    p = principal(limits=Limits(budget_usd=0.001, rpm=1))
    quotas.admit(p, p.limits, Limits(), reserve_usd=0.0004)
    with pytest.raises(Exception) as info:
        quotas.admit(p, p.limits, Limits(), reserve_usd=0.0004)
    assert info.value.code == "rpm_exceeded_key"
    _, held = committed(store, quotas.holds, Scope("key", p.key_id, 0.001))
    assert held == pytest.approx(0.0004)                       # only the admitted call's


# -- through the app: every way a call ends settles its hold -----------------------------------------
def test_whole_streamed_and_failed_calls_settle_their_holds(client, app):
    store = app.extensions["flowcall"].store
    _, key = store.create_key(str(uuid.uuid4()), limits=Limits(budget_usd=5.0))
    headers = {"Authorization": f"Bearer {key}"}
    whole = client.post("/v1/chat/completions", headers=headers,
                        json={"model": "mock.echo", "messages": [{"role": "user", "content": "hi"}]})
    streamed = client.post("/v1/chat/completions", headers=headers, json={
        "model": "mock.echo", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    body = streamed.get_data(as_text=True)
    failed = client.post("/v1/chat/completions", headers=headers,
                         json={"model": "openai.gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert whole.status_code == 200 and streamed.status_code == 200 and "[DONE]" in body
    assert failed.status_code >= 400
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM budget_holds").scalar_one() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM ledger").scalar_one() == 3
