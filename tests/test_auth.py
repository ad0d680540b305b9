"""Authentication: the JWT matrix, API keys, and the store's key handling."""
from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nodes import create_app
from conftest import migrated_db_url, JWT_SECRET, make_jwt

BODY = {"model": "mock.echo", "prompt": "hi"}


def call(client, headers, path="/api/v3/llm/call"):
    return client.post(path, json=BODY, headers=headers)


def code(resp):
    return resp.status_code, resp.get_json()["error"]["code"] if resp.status_code >= 400 else None


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_valid_jwt_with_tenant_claim(client, jwt_headers):
    assert call(client, jwt_headers).status_code == 200


def test_tenants_list_claim(client, tenant_id, agent_id):
    token = make_jwt(None, tenants=[str(uuid.uuid4()), tenant_id])
    headers = {"Authorization": f"Bearer {token}", "x-tenant-id": tenant_id, "x-agent-id": agent_id}
    assert call(client, headers).status_code == 200


@pytest.mark.parametrize("make_token, expected", [
    (lambda t: None, (401, "missing_token")),
    (lambda t: "garbage", (401, "invalid_token")),
    (lambda t: "a.b.c", (401, "invalid_token")),
    (lambda t: make_jwt(t, secret="wrong-secret-0123456789-abcdefghijkl"), (401, "invalid_token")),
    (lambda t: make_jwt(t, exp_in=-60), (401, "token_expired")),
    (lambda t: make_jwt(t, nbf=int(time.time()) + 3600), (401, "invalid_token")),
    (lambda t: jwt.encode({"tenant_id": t}, JWT_SECRET, algorithm="HS256"), (401, "invalid_token")),  # no exp
    (lambda t: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'tenant_id': t, 'exp': int(time.time()) + 60})}.",
     (401, "invalid_token")),
    (lambda t: jwt.encode({"tenant_id": t, "exp": int(time.time()) + 60}, JWT_SECRET * 2, algorithm="HS512"),
     (401, "invalid_token")),
    (lambda t: "x" * 9000, (401, "invalid_token")),
    (lambda t: make_jwt(None), (403, "tenant_forbidden")),
    (lambda t: make_jwt(str(uuid.uuid4())), (403, "tenant_forbidden")),
])
def test_jwt_matrix(client, tenant_id, agent_id, make_token, expected):
    token = make_token(tenant_id)
    headers = {"x-tenant-id": tenant_id, "x-agent-id": agent_id}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    assert code(call(client, headers)) == expected


@pytest.mark.parametrize("drop, value, expected_code", [
    ("x-tenant-id", None, "missing_header"), ("x-agent-id", None, "missing_header"),
    ("x-tenant-id", "not-a-uuid", "invalid_header"), ("x-agent-id", "42", "invalid_header"),
])
def test_tenant_headers_required(client, jwt_headers, drop, value, expected_code):
    headers = dict(jwt_headers)
    if value is None:
        headers.pop(drop)
    else:
        headers[drop] = value
    assert code(call(client, headers)) == (400, expected_code)


def _rsa_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pub.decode()


@pytest.fixture
def rs_app(tmp_path):
    private, public = _rsa_pair()
    app = create_app({"FLOWCALL_DATABASE_URL": migrated_db_url(tmp_path), "FLOWCALL_JWT_PUBLIC_KEY": public,
                      "FLOWCALL_JWT_ISSUER": "https://auth.example", "FLOWCALL_JWT_AUDIENCE": "flowcall"})
    yield app, private, public
    app.extensions["flowcall"].store.close()


def _claims(tenant, **extra):
    return {"tenant_id": tenant, "exp": int(time.time()) + 60, "iss": "https://auth.example", "aud": "flowcall", **extra}


def test_rs256_issuer_audience(rs_app, tenant_id, agent_id):
    app, private, public = rs_app
    client = app.test_client()
    headers = {"x-tenant-id": tenant_id, "x-agent-id": agent_id}
    good = jwt.encode(_claims(tenant_id), private, algorithm="RS256")
    assert call(client, {**headers, "Authorization": f"Bearer {good}"}).status_code == 200
    for bad in (jwt.encode(_claims(tenant_id, iss="https://evil.example"), private, algorithm="RS256"),
                jwt.encode(_claims(tenant_id, aud="someone-else"), private, algorithm="RS256"),
                jwt.encode({k: v for k, v in _claims(tenant_id).items() if k != "aud"}, private, algorithm="RS256")):
        assert code(call(client, {**headers, "Authorization": f"Bearer {bad}"})) == (401, "invalid_token")


def test_hs_token_signed_with_public_key_is_rejected(rs_app, tenant_id, agent_id):
    """Key confusion: an attacker signs HS256 with the (public) RSA key as the HMAC secret."""
    import hashlib
    import hmac
    app, _, public = rs_app
    header, payload = _b64({"alg": "HS256", "typ": "JWT"}), _b64(_claims(tenant_id))
    sig = hmac.new(public.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
    headers = {"Authorization": f"Bearer {token}", "x-tenant-id": tenant_id, "x-agent-id": agent_id}
    assert code(call(app.test_client(), headers)) == (401, "invalid_token")


def test_es256_accepted(tmp_path, tenant_id, agent_id):
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    app = create_app({"FLOWCALL_DATABASE_URL": migrated_db_url(tmp_path), "FLOWCALL_JWT_PUBLIC_KEY": public})
    token = jwt.encode({"tenant_id": tenant_id, "exp": int(time.time()) + 60}, private, algorithm="ES256")
    headers = {"Authorization": f"Bearer {token}", "x-tenant-id": tenant_id, "x-agent-id": agent_id}
    assert call(app.test_client(), headers).status_code == 200
    app.extensions["flowcall"].store.close()


def test_jwt_endpoint_without_jwt_config_is_503(tmp_path, tenant_id, agent_id):
    app = create_app({"FLOWCALL_DATABASE_URL": migrated_db_url(tmp_path)})
    headers = {"Authorization": f"Bearer {make_jwt(tenant_id)}", "x-tenant-id": tenant_id, "x-agent-id": agent_id}
    assert code(call(app.test_client(), headers)) == (503, "auth_not_configured")
    app.extensions["flowcall"].store.close()


# -- API keys ---------------------------------------------------------------------------------------
def test_api_key_paths(app, client, api_key, tenant_id):
    assert call(client, {"X-Api-Key": api_key}, "/api/v3/llm/public/call").status_code == 200
    assert code(call(client, {}, "/api/v3/llm/public/call")) == (401, "missing_api_key")
    for bad in ("nope", api_key[:-1] + ("A" if api_key[-1] != "A" else "B"), "fc_0000000000000000_" + "x" * 43):
        resp = call(client, {"X-Api-Key": bad}, "/api/v3/llm/public/call")
        assert code(resp) == (401, "invalid_api_key")
        assert bad not in resp.get_data(as_text=True)
    # the JWT endpoint does not accept an API key, and the API-key endpoint ignores a JWT
    assert call(client, {"Authorization": f"Bearer {api_key}"}).status_code in (400, 401)


def test_revoked_key_is_refused(app, client, api_key):
    store = app.extensions["flowcall"].store
    key_id = api_key.split("_")[1]
    assert store.revoke_key(key_id) is True
    assert code(call(client, {"X-Api-Key": api_key}, "/api/v3/llm/public/call")) == (401, "invalid_api_key")
    assert store.revoke_key("0" * 16) is False


def test_keys_are_stored_only_as_hashes(app, api_key):
    store = app.extensions["flowcall"].store
    secret = api_key.split("_", 2)[2]
    with store.engine.connect() as conn:
        dump = " ".join(str(v) for row in conn.exec_driver_sql("SELECT * FROM api_keys") for v in row)
    assert secret not in dump and api_key not in dump


def test_agent_ai_endpoint_uses_bearer_api_key(client, api_key):
    ok = client.post("/v1/action/invoke_llm", json={"instructions": "hi", "llm_engine": "mock.echo"},
                     headers={"Authorization": f"Bearer {api_key}"})
    assert ok.get_json() == {"status": 200, "response": "hi"}
    assert code(client.post("/v1/action/invoke_llm", json={"instructions": "hi"},
                            headers={"Authorization": "Bearer fc_nope"})) == (401, "invalid_api_key")
    assert code(client.post("/v1/action/invoke_llm", json={"instructions": "hi"},
                            headers={"X-Api-Key": api_key})) == (401, "missing_api_key")
