"""Bad input on every endpoint: each yields our JSON error envelope with the right status, never a 500."""
from __future__ import annotations

import json

import pytest

from app.images import to_data_uri
from conftest import migrated_db_url

PNG = b"\x89PNG\r\n\x1a\n" + bytes(32)
ERROR_KEYS = {"code", "message", "fields", "provider", "retryable"}


def post(client, path, body=None, *, raw=None, headers=None, content_type="application/json"):
    data = raw if raw is not None else json.dumps(body)
    return client.post(path, data=data, headers=headers or {}, content_type=content_type)


def assert_error(resp, status, code=None, field=None):
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["success"] is False and set(body["error"]) == ERROR_KEYS
    assert body["request_id"] == resp.headers["X-Request-Id"]
    if code:
        assert body["error"]["code"] == code
    if field:
        assert field in body["error"]["fields"], body["error"]["fields"]
    return body["error"]


@pytest.fixture
def key_headers(api_key):
    return {"X-Api-Key": api_key}


@pytest.mark.parametrize("body, field, hint", [
    ({"model": "mock.echo", "prompt": "hi", "max_tokens": 5}, "max_tokens", "use options.maxTokens"),
    ({"model": "mock.echo", "prompt": "hi", "temperature": 0.5}, "temperature", "use options.temperature"),
    ({"model": "mock.echo", "prompt": "hi", "options": {"max_tokens": 5}}, "options.max_tokens", "use options.maxTokens"),
    ({"model": "mock.echo", "prompt": "hi", "context": {"task_type": "x"}}, "context.task_type", "use context.task"),
    ({"model": "mock.echo", "prompt": "hi", "surprise": 1}, "surprise", "Unknown field"),
])
def test_seed_mistakes_get_pointers(client, key_headers, body, field, hint):
    err = assert_error(post(client, "/api/v3/llm/public/call", body, headers=key_headers), 400, "validation_error", field)
    assert hint in err["fields"][field]


@pytest.mark.parametrize("body, field", [
    ({"prompt": "hi"}, "model"),
    ({"model": "mock.echo"}, "prompt"),
    ({"model": 5, "prompt": "hi"}, "model"),
    ({"model": "mock.echo", "prompt": 42}, "prompt"),
    ({"model": "mock.echo", "prompt": ""}, "prompt"),
    ({"model": "mock.echo", "prompt": "a", "query": "b"}, "query"),
    ({"model": "mock.echo", "prompt": "hi", "options": {"temperature": 1.5}}, "options.temperature"),
    ({"model": "mock.echo", "prompt": "hi", "options": {"temperature": True}}, "options.temperature"),
    ({"model": "mock.echo", "prompt": "hi", "options": {"temperature": "warm"}}, "options.temperature"),
    ({"model": "mock.echo", "prompt": "hi", "options": {"maxTokens": 0}}, "options.maxTokens"),
    ({"model": "mock.echo", "prompt": "hi", "options": {"maxTokens": 1.5}}, "options.maxTokens"),
    ({"model": "mock.echo", "prompt": "hi", "options": {"stop": "END"}}, "options.stop"),
    ({"model": "mock.echo", "prompt": "hi", "options": {"stop": [""]}}, "options.stop.0"),
    ({"model": "mock.echo", "prompt": "hi", "options": {"stop": [1]}}, "options.stop.0"),
    ({"model": "mock.echo", "prompt": "hi", "options": "fast"}, "options"),
    ({"model": "mock.echo", "messages": []}, "messages"),
    ({"model": "mock.echo", "messages": "hi"}, "messages"),
    ({"model": "mock.echo", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"model": "mock.echo", "messages": [{"role": "user"}]}, "messages.0.content"),
    ({"model": "mock.echo", "messages": [{"role": "user", "content": 7}]}, "messages.0.content"),
    ({"model": "mock.echo", "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages.0.content.0.type"),
    ({"model": "mock.echo", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text"),
    ({"model": "mock.echo", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages.0.content.0.image_url.url"),
    ({"model": "mock.echo", "messages": [{"role": "system", "content": "be nice"}]}, "messages"),
    ({"model": "mock.echo", "prompt": "hi", "response_format": {"type": "xml"}}, "response_format.type"),
    ({"model": "mock.echo", "prompt": "hi", "response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"model": "mock.echo", "prompt": "hi", "response_format": {"type": "json_schema", "json_schema": {
        "name": "bad name!", "schema": {"type": "object"}}}}, "response_format.json_schema.name"),
    ({"model": "mock.echo", "prompt": "hi", "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "nonsense"}}}}, "response_format.json_schema.schema"),
    ({"model": "mock.echo", "prompt": "hi", "fallbacks": "openai.gpt-4o"}, "fallbacks"),
    ({"model": "nosuchprovider.model", "prompt": "hi"}, "model"),
    ({"model": "definitely-not-a-model", "prompt": "hi"}, "model"),
])
def test_validation_errors_name_the_field(client, key_headers, body, field):
    assert_error(post(client, "/api/v3/llm/public/call", body, headers=key_headers), 400, field=field)


def test_unknown_provider_lists_known_ones(client, key_headers):
    err = assert_error(post(client, "/api/v3/llm/public/call", {"model": "acme.gpt", "prompt": "hi"},
                            headers=key_headers), 400, "unknown_provider")
    assert "openai" in err["message"] and "anthropic" in err["message"]


@pytest.mark.parametrize("raw, content_type", [
    (b"", "application/json"),
    (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"),
    (b'"just a string"', "application/json"),
    (b'{"model": "mock.echo", "prompt": "a", "prompt": "b"}', "application/json"),
    (b'{"model": "mock.echo", "prompt": "hi", "options": {"temperature": NaN}}', "application/json"),
    (b'{"model": "mock.echo", "prompt": "hi", "options": {"temperature": Infinity}}', "application/json"),
    (b"\xff\xfe\x00garbage", "application/json"),
    (b"model=mock.echo&prompt=hi", "application/x-www-form-urlencoded"),
    (b"[" * 100_000 + b"]" * 100_000, "application/json"),
])
def test_malformed_bodies(client, key_headers, raw, content_type):
    assert_error(post(client, "/api/v3/llm/public/call", raw=raw, headers=key_headers, content_type=content_type),
                 400)


def test_deep_nesting_inside_valid_json_is_a_400(client, key_headers):
    raw = '{"model": "mock.echo", "prompt": "hi", "context": ' + '{"task": ' * 5000 + '"x"' + "}" * 5001
    assert_error(post(client, "/api/v3/llm/public/call", raw=raw.encode(), headers=key_headers), 400)


def test_oversize_body_is_413(tmp_path, tenant_id):
    from nodes import create_app
    app = create_app({"FLOWCALL_DATABASE_URL": migrated_db_url(tmp_path), "FLOWCALL_MAX_BODY_BYTES": "2048"})
    _, key = app.extensions["flowcall"].store.create_key(tenant_id)
    resp = post(app.test_client(), "/api/v3/llm/public/call", {"model": "mock.echo", "prompt": "x" * 5000},
                headers={"X-Api-Key": key})
    err = assert_error(resp, 413, "payload_too_large")
    assert "2048" in err["message"]
    app.extensions["flowcall"].store.close()


@pytest.mark.parametrize("url, field_message", [
    ("ftp://example.com/a.png", "not an http(s) or data URI"),
    ("data:image/png;base64,!!!notbase64", "invalid base64"),
    ("data:image/png," + "abc", "not a base64 data URI"),
    (to_data_uri("image/png", b"%PDF-1.7 not an image at all"), "not a JPEG, PNG, GIF or WebP image"),
])
def test_bad_images_are_400(client, key_headers, url, field_message):
    body = {"model": "mock.echo", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    err = assert_error(post(client, "/api/v3/llm/public/call", body, headers=key_headers), 400, "image_rejected")
    assert err["fields"]["messages.0.content.1.image_url.url"] == field_message


def test_image_declared_type_is_replaced_by_sniffed_type(app, client, key_headers):
    """A PNG labelled as JPEG reaches providers labelled as PNG."""
    seen = {}
    dispatcher = app.extensions["flowcall"].dispatcher
    original = dispatcher.execute

    def spy(call):
        seen["url"] = call.messages[0].parts[1].url
        return original(call)
    dispatcher.execute = spy
    body = {"model": "mock.echo", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": to_data_uri("image/jpeg", PNG)}}]}]}
    assert post(client, "/api/v3/llm/public/call", body, headers=key_headers).status_code == 200
    assert seen["url"].startswith("data:image/png;base64,")


def test_non_vision_model_with_image_names_alternatives(client, key_headers):
    body = {"model": "groq.openai/gpt-oss-120b", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}
    err = assert_error(post(client, "/api/v3/llm/public/call", body, headers=key_headers), 400, "capability_missing")
    assert "openai.gpt-4o" in err["message"]


@pytest.mark.parametrize("path, method", [("/api/v3/llm/call", "get"), ("/api/v3/llm/public/call", "put"),
                                          ("/v1/action/invoke_llm", "delete"), ("/healthz", "post")])
def test_wrong_method_is_405(client, path, method):
    resp = getattr(client, method)(path)
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"]                  # RFC 9110 requires it (found by schemathesis)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_wrong_method_on_the_openai_routes_is_their_405_with_allow(client, path):
    resp = client.put(path)
    assert resp.status_code == 405 and resp.get_json()["error"]["code"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]      # the OpenAI-shaped answer keeps it too


def test_unknown_route_is_json_404(client):
    assert_error(client.get("/api/v3/llm/nothing"), 404, "not_found")


def test_success_body_shape_is_stable(client, key_headers):
    resp = post(client, "/api/v3/llm/public/call", {"model": "mock.echo", "prompt": "hello"}, headers=key_headers)
    body = resp.get_json()
    assert resp.status_code == 200 and "error" not in body
    assert body["data"] is None and body["finish_reason"] == "stop" and isinstance(body["warnings"], list)
    assert set(body["routing"]) == {"is_auto_routed", "model_chosen", "confidence", "reason", "fallbacks", "attempts"}
    assert set(body["usage"]) == {"input_tokens", "output_tokens", "total_tokens", "cached_input_tokens",
                                  "cache_write_tokens", "reasoning_tokens"}


def test_request_id_is_echoed_when_valid_and_replaced_when_not(client, key_headers):
    ok = post(client, "/api/v3/llm/public/call", {"model": "mock.echo", "prompt": "hi"},
              headers={**key_headers, "X-Request-Id": "zap-123.abc"})
    assert ok.headers["X-Request-Id"] == "zap-123.abc" and ok.get_json()["request_id"] == "zap-123.abc"
    bad = post(client, "/api/v3/llm/public/call", {"model": "mock.echo", "prompt": "hi"},
               headers={**key_headers, "X-Request-Id": "<script>"})
    assert bad.headers["X-Request-Id"] != "<script>" and len(bad.headers["X-Request-Id"]) == 32


def test_agent_ai_body_validation(client, api_key):
    headers = {"Authorization": f"Bearer {api_key}"}
    assert_error(post(client, "/v1/action/invoke_llm", {"llm_engine": "gpt4o"}, headers=headers), 400, field="instructions")
    assert_error(post(client, "/v1/action/invoke_llm", {"instructions": "x", "extra": 1}, headers=headers), 400, field="extra")
    assert_error(post(client, "/v1/action/invoke_llm", {"instructions": "x", "llm_engine": "nope"}, headers=headers), 400,
                 field="model")


def test_every_seed_llm_engine_is_known(app):
    """Every llm_engine in the agent.ai seed resolves to a model that is served today."""
    import re
    from pathlib import Path
    seed = (Path(__file__).resolve().parents[2] / "shared" / "seeds" / "000_c2cba42270a4ff30.txt")
    if not seed.exists():
        pytest.skip("../shared/seeds is not beside this checkout")
    block = seed.read_text().split("enum:")[1].split("default:")[0]
    engines = re.findall(r"^\s+- (\S+)$", block, re.M)
    assert len(engines) == 37
    catalog = app.extensions["flowcall"].catalog
    for engine in engines:
        if engine == "auto":
            continue
        resolved = catalog.resolve(engine)
        assert resolved.model.known and resolved.model.status != "retired", engine
