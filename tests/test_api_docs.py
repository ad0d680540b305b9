"""The ecosystem surface: the OpenAPI document, the model list, "who am I", metrics and logs."""
from __future__ import annotations

import json
import logging

import pytest
import responses
from openapi_spec_validator import validate

from conftest import make_jwt

UNDOCUMENTED_OK = {"static", "swagger_ui.show"}      # and the dashboard's web pages (dashboard.*): not API routes


def test_openapi_document_is_valid_and_covers_every_route(app, client):
    spec = client.get("/openapi.json").get_json()
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED_OK or rule.endpoint.startswith(("swagger_ui", "dashboard.")):
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, f"{method} {rule.rule} has no @doc"


def test_openapi_security_errors_and_examples(client):
    spec = client.get("/openapi.json").get_json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
    assert schemes["Jwt"]["scheme"] == "bearer" and schemes["BearerApiKey"]["scheme"] == "bearer"
    call = spec["paths"]["/api/v3/llm/call"]["post"]
    assert call["security"] == [{"Jwt": []}]
    assert {p["name"] for p in call["parameters"]} >= {"x-tenant-id", "x-agent-id", "Idempotency-Key"}
    for status in ("400", "401", "402", "403", "413", "429", "502", "504"):
        assert call["responses"][status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert call["requestBody"]["content"]["application/json"]["example"]["context"] == {"task": "chat_general"}
    public = spec["paths"]["/api/v3/llm/public/call"]["post"]
    assert public["requestBody"]["content"]["application/json"]["example"] == {"query": "Summarize this contract",
                                                                                "model": "mock.echo"}
    assert spec["paths"]["/v1/action/invoke_llm"]["post"]["security"] == [{"BearerApiKey": []}]


def test_docs_page_is_served_from_the_package(client):
    import re
    page = client.get("/docs/").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/docs/swagger-ui-bundle.js" in assets
    for asset in assets:                     # no CDN: every asset comes from this server
        assert asset.startswith("/docs/"), asset
        with client.get(asset) as resp:
            assert resp.status_code == 200


# -- models and me ----------------------------------------------------------------------------------
@pytest.fixture
def config(config):
    return {**config, "OPENAI_API_KEY": "sk-test-openai-0123456789"}


def test_models_list_filters_and_flags(client, api_key):
    headers = {"X-Api-Key": api_key}
    body = client.get("/api/v3/llm/models", headers=headers).get_json()
    by_id = {m["id"]: m for m in body["models"]}
    assert body["count"] == len(body["models"]) > 20
    assert by_id["openai.gpt-4o"]["configured"] is True and by_id["anthropic.claude-sonnet-4-6"]["configured"] is False
    assert by_id["openai.gpt-4o"]["deprecated"] is True and by_id["openai.gpt-4o"]["successor"] == "openai.gpt-6-luna"
    assert by_id["openai.gpt-4o"]["price_input_per_1m"] == 2.5 and "gpt4o" in by_id["openai.gpt-4o"]["aliases"]
    assert "openai.o1" not in by_id                                 # retired: hidden unless asked
    assert "openai.o1" in {m["id"] for m in client.get("/api/v3/llm/models?include_retired=true",
                                                         headers=headers).get_json()["models"]}
    google = client.get("/api/v3/llm/models?provider=gemini", headers=headers).get_json()["models"]
    assert google and {m["provider"] for m in google} == {"google"}
    vision = client.get("/api/v3/llm/models?capability=vision", headers=headers).get_json()["models"]
    assert vision and all(m["capabilities"]["vision"] for m in vision)
    assert "groq.openai/gpt-oss-120b" not in {m["id"] for m in vision}
    assert client.get("/api/v3/llm/models?capability=telepathy", headers=headers).status_code == 400
    assert client.get("/api/v3/llm/models?provider=acme", headers=headers).status_code == 400
    assert client.get("/api/v3/llm/models").status_code in (401, 503)


def test_me_with_key_bearer_and_jwt(app, client, tenant_id, agent_id):
    store = app.extensions["flowcall"].store
    from app.tenancy.store import Limits
    _, key = store.create_key(tenant_id, agent_id, "zapier", Limits(rpm=60))
    me = client.get("/api/v3/llm/me", headers={"X-Api-Key": key}).get_json()
    assert me == {"success": True, "tenant_id": tenant_id, "agent_id": agent_id, "auth": "api_key",
                  "key_id": key.split("_")[1], "key_name": "zapier",
                  "limits": {"rpm": 60, "tpm": None, "budget_usd": None},
                  "tenant_limits": {"rpm": None, "tpm": None, "budget_usd": None}}
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).get_json() == me
    assert client.get("/v1/me", headers={"Authorization": "Bearer fc_wrong"}).status_code == 401
    jwt_me = client.get("/api/v3/llm/me", headers={"Authorization": f"Bearer {make_jwt(tenant_id)}",
                                                   "x-tenant-id": tenant_id, "x-agent-id": agent_id}).get_json()
    assert jwt_me["auth"] == "jwt" and jwt_me["tenant_id"] == tenant_id and jwt_me["key_id"] is None


# -- metrics and logs -------------------------------------------------------------------------------
def _sample(text: str, name: str, **labels) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name}{{{wanted}}}")


@responses.activate
def test_metrics_count_requests_provider_calls_tokens_and_cost(client, api_key):
    responses.post("https://api.openai.com/v1/chat/completions", status=503,
                   json={"error": {"message": "overloaded", "type": "server_error"}})
    responses.post("https://api.openai.com/v1/chat/completions", json={
        "id": "c", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}})
    before = client.get("/metrics").get_data(as_text=True)
    assert client.post("/api/v3/llm/public/call", json={"model": "openai.gpt-4o", "prompt": "hi"},
                       headers={"X-Api-Key": api_key}).status_code == 200
    after = client.get("/metrics").get_data(as_text=True)

    def delta(name, **labels):
        try:
            old = _sample(before, name, **labels)
        except AssertionError:
            old = 0.0
        return _sample(after, name, **labels) - old
    assert delta("flowcall_requests_total", endpoint="/api/v3/llm/public/call", status="200") == 1
    assert delta("flowcall_provider_calls_total", provider="openai", model="openai.gpt-4o", outcome="ok") == 1
    assert delta("flowcall_provider_calls_total", provider="openai", model="openai.gpt-4o",
                 outcome="provider_overloaded") == 1
    assert delta("flowcall_retries_total", provider="openai") == 1
    assert delta("flowcall_tokens_total", provider="openai", direction="input") == 1000
    assert delta("flowcall_cost_usd_total", provider="openai") == pytest.approx((1000 * 2.5 + 100 * 10) / 1e6)
    assert api_key.split("_")[1] not in after                      # no key, tenant or content in labels


def test_one_json_log_line_per_request_without_content_or_secrets(client, api_key, caplog, capsys):
    caplog.set_level(logging.INFO, logger="flowcall.access")
    client.post("/api/v3/llm/public/call", json={"model": "mock.echo", "prompt": "top secret plan"},
                headers={"X-Api-Key": api_key, "X-Request-Id": "n8n-exec-7"})
    [record] = [r for r in caplog.records if r.name == "flowcall.access"]
    assert record.request_id == "n8n-exec-7" and record.status == 200 and record.model == "mock.echo"
    assert record.key_id == api_key.split("_")[1] and record.cost == 0.0 and record.attempts == 1
    from app.telemetry.logs import JsonFormatter
    line = JsonFormatter().format(record)
    parsed = json.loads(line)
    assert parsed["msg"] == "request" and parsed["tenant_id"] and parsed["path"] == "/api/v3/llm/public/call"
    assert "top secret plan" not in line and api_key not in line and api_key.split("_", 2)[2] not in line   # the whole secret (it may hold "_")


def test_error_requests_are_logged_with_their_code(client, caplog):
    caplog.set_level(logging.INFO, logger="flowcall.access")
    client.post("/api/v3/llm/public/call", json={"model": "mock.echo", "prompt": "x"}, headers={"X-Api-Key": "bad"})
    [record] = [r for r in caplog.records if r.name == "flowcall.access"]
    assert record.status == 401 and record.error_code == "invalid_api_key"
