"""JWT `exp` must be a real NumericDate, and numeric strings in calls are plain decimals only."""
from __future__ import annotations

import time

import jwt
import pytest

from app.schemas import Number
from conftest import JWT_SECRET


def _call(client, tenant_id, agent_id, exp):
    token = jwt.encode({"tenant_id": tenant_id, "exp": exp}, JWT_SECRET, algorithm="HS256")
    return client.post("/api/v3/llm/call", json={"model": "mock.echo", "prompt": "hi"},
                       headers={"Authorization": f"Bearer {token}", "x-tenant-id": tenant_id, "x-agent-id": agent_id})


@pytest.mark.parametrize("exp", [lambda now: str(now + 300), lambda now: 1e308, lambda now: 253402300800])
def test_exp_that_is_a_string_or_never_expires_is_rejected(client, tenant_id, agent_id, exp):
    resp = _call(client, tenant_id, agent_id, exp(int(time.time())))
    assert resp.status_code == 401 and resp.get_json()["error"]["code"] == "invalid_token"
    assert "exp" in resp.get_json()["error"]["message"]


@pytest.mark.parametrize("exp", [lambda now: now + 300, lambda now: float(now + 300.5)])
def test_exp_as_a_json_number_is_accepted(client, tenant_id, agent_id, exp):
    assert _call(client, tenant_id, agent_id, exp(int(time.time()))).status_code == 200


@pytest.mark.parametrize("value", ["١", "1_000", "1e3", "inf", "nan", "0x10", "1.2.3", "+", ".", "", "１"])
def test_numeric_strings_other_than_plain_decimals_are_refused(client, jwt_headers, value):
    resp = client.post("/api/v3/llm/call", headers=jwt_headers,
                       json={"model": "mock.echo", "prompt": "hi", "options": {"maxTokens": value}})
    assert resp.status_code == 400
    assert "options.maxTokens" in resp.get_json()["error"]["fields"]


@pytest.mark.parametrize("value,expected", [("0.5", 0.5), (" 1 ", 1.0), ("+0.25", 0.25), (".5", 0.5), ("1.", 1.0),
                                            ("-0", 0.0)])
def test_plain_decimal_strings_are_numbers(client, jwt_headers, value, expected):
    resp = client.post("/api/v3/llm/call", headers=jwt_headers,
                       json={"model": "mock.echo", "prompt": "hi", "options": {"temperature": value}})
    assert resp.status_code == 200, resp.get_json()
    assert Number().deserialize(value) == expected
