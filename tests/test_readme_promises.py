"""What the README says about reads, test-connection and the OpenAPI example is what the service does."""
from __future__ import annotations

import pytest
import requests

from conftest import make_jwt, migrated_db_url
from service import e2e_service

READS = ("/api/v3/llm/me", "/api/v3/llm/models", "/api/v3/llm/usage")


@pytest.mark.parametrize("path", READS)
def test_reads_with_a_jwt_need_no_agent_header(client, tenant_id, path):
    resp = client.get(path, headers={"Authorization": f"Bearer {make_jwt(tenant_id)}", "x-tenant-id": tenant_id})
    assert resp.status_code == 200, resp.get_json()


def test_me_reports_the_agent_when_one_is_sent(client, tenant_id, agent_id):
    headers = {"Authorization": f"Bearer {make_jwt(tenant_id)}", "x-tenant-id": tenant_id}
    assert client.get("/api/v3/llm/me", headers=headers).get_json()["agent_id"] is None
    sent = client.get("/api/v3/llm/me", headers={**headers, "x-agent-id": agent_id}).get_json()
    assert sent["agent_id"] == agent_id
    bad = client.get("/api/v3/llm/me", headers={**headers, "x-agent-id": "nope"})
    assert bad.status_code == 400 and "x-agent-id" in bad.get_json()["error"]["fields"]


def test_calls_with_a_jwt_still_need_the_agent_header(client, tenant_id):
    resp = client.post("/api/v3/llm/call", json={"model": "mock.echo", "prompt": "hi"},
                       headers={"Authorization": f"Bearer {make_jwt(tenant_id)}", "x-tenant-id": tenant_id})
    assert resp.status_code == 400 and resp.get_json()["error"]["fields"] == {"x-agent-id": "required"}


def test_an_unknown_provider_is_reported_on_the_provider_field(client, api_key):
    resp = client.get("/api/v3/llm/models?provider=nosuch", headers={"X-Api-Key": api_key})
    assert resp.status_code == 400
    assert list(resp.get_json()["error"]["fields"]) == ["provider"]
    tested = client.post("/api/v3/llm/test-connection", json={"provider": "nosuch"}, headers={"X-Api-Key": api_key})
    assert tested.status_code == 400 and list(tested.get_json()["error"]["fields"]) == ["provider"]


def test_the_public_call_example_answers_on_a_fresh_install(client, api_key):
    spec = client.get("/openapi.json").get_json()
    example = spec["paths"]["/api/v3/llm/public/call"]["post"]["requestBody"]["content"]["application/json"]["example"]
    resp = client.post("/api/v3/llm/public/call", json=example, headers={"X-Api-Key": api_key})
    assert resp.status_code == 200, resp.get_json()


def test_test_connection_accepts_an_api_key(client, api_key):
    resp = client.post("/api/v3/llm/test-connection", json={"provider": "mock"}, headers={"X-Api-Key": api_key})
    assert resp.status_code == 200 and resp.get_json()["status"] == "connected"
    bad = client.post("/api/v3/llm/test-connection", json={"provider": "mock"}, headers={"X-Api-Key": "fc_x_y"})
    assert bad.status_code == 401


@pytest.mark.e2e
def test_test_connection_with_an_api_key_through_gunicorn(fake, tmp_path):
    with e2e_service(tmp_path, fake, workers=1, database_url=migrated_db_url(tmp_path)) as svc:
        resp = requests.post(f"{svc['url']}/api/v3/llm/test-connection", timeout=30,
                             json={"provider": "openai", "model": "gpt-4o"}, headers={"X-Api-Key": svc["key"]})
        assert resp.status_code == 200 and resp.json()["status"] == "connected", resp.text
