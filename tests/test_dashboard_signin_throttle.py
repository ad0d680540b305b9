"""Failed dashboard sign-ins are throttled per (client address, the key id or tenant named): the
guesser waits (429, Retry-After), the key's owner signing in from elsewhere and every other key do
not. The clock is a fake that the tests move."""
from __future__ import annotations

import pytest

from app.dashboard.signin_throttle import LIMIT, WINDOW_S, FailedSignIns
from dashboard_seed import csrf_of


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app) -> Clock:
    clock = Clock()
    app.extensions["flowcall"].signin_failures = FailedSignIns(clock=clock)
    return clock


def _sign_in(client, form: dict, address: str = "203.0.113.7"):
    environ = {"REMOTE_ADDR": address}
    page = client.get("/dashboard/signin", environ_base=environ).get_data(as_text=True)
    return client.post("/dashboard/signin", data={"csrf": csrf_of(page), **form}, environ_base=environ)


def _guess(api_key: str) -> str:
    key_id = api_key.split("_")[1]
    return f"fc_{key_id}_{'x' * 43}"                  # the key's id with a wrong secret


def test_a_guesser_waits_after_the_limit_and_nobody_else_does(client, api_key, clock):
    for _ in range(LIMIT):
        assert _sign_in(client, {"api_key": _guess(api_key)}).status_code == 401
    refused = _sign_in(client, {"api_key": _guess(api_key)})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == str(int(WINDOW_S))
    assert "Too many failed sign-ins" in refused.get_data(as_text=True)
    assert refused.content_type == "text/html; charset=utf-8"
    assert _sign_in(client, {"api_key": api_key}).status_code == 429          # the right secret waits too, here
    assert _sign_in(client, {"api_key": api_key}, address="198.51.100.9").status_code == 303   # elsewhere: in
    other = "fc_0123456789abcdef_" + "y" * 43                                   # another key from the same address
    assert _sign_in(client, {"api_key": other}).status_code == 401
    clock.now += WINDOW_S - 10
    assert _sign_in(client, {"api_key": _guess(api_key)}).headers["Retry-After"] == "10"
    clock.now += 10                                                              # the window is over
    assert _sign_in(client, {"api_key": api_key}).status_code == 303


def test_a_refused_jwt_counts_against_the_tenant_it_names(client, clock, tenant_id):
    form = {"token": "not.a.jwt", "tenant_id": tenant_id}
    for _ in range(LIMIT):
        assert _sign_in(client, form).status_code == 401
    assert _sign_in(client, form).status_code == 429
    assert _sign_in(client, {**form, "tenant_id": "another-tenant"}).status_code == 401


def test_a_forged_or_empty_form_is_not_counted(client, api_key, clock):
    for _ in range(LIMIT + 1):
        assert _sign_in(client, {"api_key": ""}).status_code == 400
        response = client.post("/dashboard/signin", data={"csrf": "forged", "api_key": _guess(api_key)},
                               environ_base={"REMOTE_ADDR": "203.0.113.7"})
        assert response.status_code == 400
    assert _sign_in(client, {"api_key": api_key}).status_code == 303


def test_memory_is_bounded_and_the_oldest_failures_go_first():
    clock = Clock()
    failures = FailedSignIns(limit=1, window_s=60, max_entries=3, clock=clock)
    for name in ("a", "b", "c", "d"):
        failures.failed(("addr", name))
    assert len(failures) == 3
    assert failures.retry_after(("addr", "a")) is None                  # forgotten: the least recent
    assert failures.retry_after(("addr", "d")) == 60
