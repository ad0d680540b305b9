"""Hostile callers: the rest of the JWT matrix, tenant isolation, constant-time key checks, secrets
that must never leave the process, and what gunicorn does with oversized headers and slow bodies.

tests/test_auth.py has the basic JWT matrix (none, wrong secret, expiry, nbf, HS512, oversize,
key confusion HS-with-the-public-key) and tests/test_tenancy.py the basic tenant isolation; this
file adds only what they lack.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec

import jwt
import pytest
import requests
import responses
from conftest import JWT_SECRET, make_jwt, migrated_db_url
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from service import e2e_service

from nodes import create_app
from app.tenancy.idempotency import Idempotency, body_hash
from app.telemetry.logs import JsonFormatter

CALL = "/api/v3/llm/call"
PUBLIC = "/api/v3/llm/public/call"
BODY = {"model": "mock.echo", "prompt": "hi"}
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
OPENAI_KEY = "sk-proj-adversarialLeakCheck0123456789abcdefXYZ"
ATTACKER_SECRET = "attacker-controlled-secret-0123456789-abcdef"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(obj) -> str:
    return b64url(json.dumps(obj).encode())


def hs_token(header: dict, claims: dict, secret: str = JWT_SECRET) -> str:
    """A token with exactly this header, HMAC-SHA256 signed (whatever the header says)."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def claims_for(tenant: str, **extra) -> dict:
    return {"sub": "user-1", "tenant_id": tenant, "exp": int(time.time()) + 300, **extra}


def outcome(resp):
    return resp.status_code, (resp.get_json() or {}).get("error", {}).get("code") if resp.status_code >= 400 else None


def jwt_call(client, token, tenant, agent, path=CALL, tenant_header=None):
    headers = {"Authorization": f"Bearer {token}", "x-tenant-id": tenant_header or tenant, "x-agent-id": agent}
    if path in (CALL,):
        return client.post(path, json=BODY, headers=headers)
    return client.get(path, headers=headers)


class _CountingServer:
    """Stands in for an attacker's jku / x5u host: the test asserts nobody ever asked it anything."""

    def __init__(self):
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.hits.append(self.path)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def key_host():
    server = _CountingServer()
    yield server
    server.close()


def _rsa():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


# -- JWT: header tricks (HS256 configured) ----------------------------------------------------------
@pytest.mark.parametrize("make", [
    pytest.param(lambda t: f"{segment({'alg': 'None', 'typ': 'JWT'})}.{segment(claims_for(t))}.", id="alg-None"),
    pytest.param(lambda t: f"{segment({'alg': 'NONE', 'typ': 'JWT'})}.{segment(claims_for(t))}.", id="alg-NONE"),
    pytest.param(lambda t: f"{segment({'alg': 'nOnE'})}.{segment(claims_for(t))}.", id="alg-nOnE"),
    pytest.param(lambda t: hs_token({"alg": "none"}, claims_for(t)), id="alg-none-with-a-valid-hmac"),
    pytest.param(lambda t: hs_token({"alg": "hs256"}, claims_for(t)), id="alg-lowercase-hs256"),
    pytest.param(lambda t: hs_token({"alg": "HS256 "}, claims_for(t)), id="alg-trailing-space"),
    pytest.param(lambda t: hs_token({"typ": "JWT"}, claims_for(t)), id="alg-missing"),
    pytest.param(lambda t: hs_token({"alg": ["HS256"]}, claims_for(t)), id="alg-as-list"),
    pytest.param(lambda t: hs_token({"alg": {"HS256": True}}, claims_for(t)), id="alg-as-object"),
    pytest.param(lambda t: hs_token({"alg": "HS256", "kid": 5}, claims_for(t)), id="kid-not-a-string"),
    pytest.param(lambda t: hs_token({"alg": "HS256", "crit": ["exp"]}, claims_for(t)), id="crit-unsupported"),
    pytest.param(lambda t: hs_token({"alg": "HS256", "crit": ["https://evil.example/ext"],
                                     "https://evil.example/ext": True}, claims_for(t)), id="crit-unknown-extension"),
    pytest.param(lambda t: hs_token({"alg": "HS256", "crit": "b64"}, claims_for(t)), id="crit-not-a-list"),
    pytest.param(lambda t: hs_token({"alg": "HS256", "b64": False, "crit": ["b64"]}, claims_for(t)),
                 id="crit-b64-false-detached"),
    pytest.param(lambda t: jwt.encode(claims_for(t), _rsa()[0], algorithm="RS256"), id="rs256-while-only-hs"),
    pytest.param(lambda t: jwt.encode(claims_for(t), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"),
                 id="es256-while-only-hs"),
    pytest.param(lambda t: jwt.encode(claims_for(t), JWT_SECRET + "x" * 30, algorithm="HS384"), id="hs384"),
    pytest.param(lambda t: "Bearer." + hs_token({"alg": "HS256"}, claims_for(t)), id="garbage-prefix"),
    pytest.param(lambda t: hs_token({"alg": "HS256"}, claims_for(t)) + ".extra", id="four-segments"),
])
def test_jwt_header_tricks_are_refused(client, tenant_id, agent_id, make):
    assert outcome(jwt_call(client, make(tenant_id), tenant_id, agent_id)) == (401, "invalid_token")


@pytest.mark.parametrize("field, value", [
    ("kid", "../../../../../../dev/null"), ("kid", "' UNION SELECT 'attacker-secret"),
    ("jku", "{host}/.well-known/jwks.json"), ("x5u", "{host}/cert.pem"),
    ("jwk", {"kty": "oct", "k": b64url(ATTACKER_SECRET.encode())}),
    ("x5c", ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
])
def test_key_pointing_headers_are_ignored(client, tenant_id, agent_id, key_host, field, value):
    """kid/jku/x5u/jwk/x5c cannot choose the key: the attacker's own signature fails, ours still passes,
    and nothing is fetched from the URLs they name."""
    value = value.replace("{host}", key_host.url) if isinstance(value, str) else value
    forged = hs_token({"alg": "HS256", field: value}, claims_for(tenant_id), secret=ATTACKER_SECRET)
    assert outcome(jwt_call(client, forged, tenant_id, agent_id)) == (401, "invalid_token")
    genuine = hs_token({"alg": "HS256", field: value}, claims_for(tenant_id))
    assert jwt_call(client, genuine, tenant_id, agent_id).status_code == 200
    assert key_host.hits == []


# -- JWT: claims ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("exp, expected", [
    ("soon", (401, "invalid_token")), ("", (401, "invalid_token")), (None, (401, "invalid_token")),
    ([int(time.time()) + 300], (401, "invalid_token")), ({"at": 1}, (401, "invalid_token")),
    (1e309, (401, "invalid_token")),                    # json.dumps -> Infinity: PyJWT refuses it
    (True, (401, "token_expired")),                     # int(True) == 1: 1970
    (str(int(time.time()) - 60), (401, "token_expired")),
    # PyJWT coerces a numeric string; RFC 7519 wants a number, and so do we (app/tenancy/auth.py _check_exp).
    (str(int(time.time()) + 300), (401, "invalid_token")),
])
def test_exp_of_the_wrong_type(client, tenant_id, agent_id, exp, expected):
    token = hs_token({"alg": "HS256", "typ": "JWT"}, {**claims_for(tenant_id), "exp": exp})
    assert outcome(jwt_call(client, token, tenant_id, agent_id)) == expected


@pytest.mark.parametrize("claim, value", [("nbf", "later"), ("iat", "then"), ("iat", None), ("nbf", [1])])
def test_time_claims_of_the_wrong_type(client, tenant_id, agent_id, claim, value):
    token = hs_token({"alg": "HS256"}, claims_for(tenant_id, **{claim: value}))
    assert jwt_call(client, token, tenant_id, agent_id).status_code == 401


def test_huge_claims_under_and_over_the_token_cap(client, tenant_id, agent_id):
    under = hs_token({"alg": "HS256"}, claims_for(tenant_id, blob="x" * 5500))
    assert 7000 < len(under) <= 8192
    assert jwt_call(client, under, tenant_id, agent_id).status_code == 200
    over = hs_token({"alg": "HS256"}, claims_for(tenant_id, blob="x" * 7000))
    assert outcome(jwt_call(client, over, tenant_id, agent_id)) == (401, "invalid_token")
    others = [str(uuid.uuid4()) for _ in range(119)]
    many = hs_token({"alg": "HS256"}, {"exp": int(time.time()) + 300, "tenants": others})
    assert outcome(jwt_call(client, many, tenant_id, agent_id)) == (403, "tenant_forbidden")
    many = hs_token({"alg": "HS256"}, {"exp": int(time.time()) + 300, "tenants": [*others, tenant_id]})
    assert jwt_call(client, many, tenant_id, agent_id).status_code == 200


@pytest.mark.parametrize("claims", [
    {"tenant_id": 5}, {"tenant_id": {"id": "{t}"}}, {"tenant_id": ["{t}"]}, {"tenant_id": True},
    {"tenant_id": None}, {"tenant_id": ""}, {"tenant_id": "*"}, {"tenant_id": " {t} "},
    {"tenant_id": "urn:uuid:{t}"}, {"tenants": "{t}"}, {"tenants": [1, 2, 3]}, {"tenants": [{"id": "{t}"}]},
    {"tenants": {"{t}": True}}, {"tenants": [["{t}"]]}, {"tenant": "{t}"}, {"tenantId": "{t}"},
])
def test_tenant_claims_of_the_wrong_type_grant_nothing(client, tenant_id, agent_id, claims):
    filled = json.loads(json.dumps(claims).replace("{t}", tenant_id))
    token = hs_token({"alg": "HS256"}, {"sub": "u", "exp": int(time.time()) + 300, **filled})
    assert outcome(jwt_call(client, token, tenant_id, agent_id)) == (403, "tenant_forbidden")


@pytest.mark.parametrize("claim_case, header_case", [("upper", "lower"), ("lower", "upper"), ("upper", "braces")])
def test_tenant_ids_differing_only_in_case_are_one_tenant(client, tenant_id, agent_id, claim_case, header_case):
    """A UUID is case-insensitive: both spellings reach the one canonical (lowercase) tenant."""
    spell = {"upper": tenant_id.upper(), "lower": tenant_id, "braces": "{" + tenant_id.upper() + "}"}
    token = hs_token({"alg": "HS256"}, claims_for(spell[claim_case]))
    headers = {"Authorization": f"Bearer {token}", "x-tenant-id": spell[header_case], "x-agent-id": agent_id}
    assert client.post(CALL, json=BODY, headers=headers).status_code == 200
    me = client.get("/api/v3/llm/me", headers=headers).get_json()
    assert me["tenant_id"] == tenant_id
    usage = client.get("/api/v3/llm/usage", headers=headers).get_json()
    assert usage["tenant_id"] == tenant_id and usage["totals"]["calls"] == 1


@pytest.mark.parametrize("scheme", ["Basic", "Token", "JWT", "Bearer:", "bearer\t"])
def test_other_authorization_schemes_are_not_a_bearer_token(client, tenant_id, agent_id, scheme):
    token = make_jwt(tenant_id)
    headers = {"Authorization": f"{scheme} {token}", "x-tenant-id": tenant_id, "x-agent-id": agent_id}
    assert outcome(client.post(CALL, json=BODY, headers=headers))[0] == 401


# -- JWT: public-key configuration -------------------------------------------------------------------
@pytest.fixture
def rs_app(tmp_path):
    private, public = _rsa()
    app = create_app({"FLOWCALL_DATABASE_URL": migrated_db_url(tmp_path), "FLOWCALL_JWT_PUBLIC_KEY": public,
                      "FLOWCALL_JWT_AUDIENCE": "flowcall"})
    yield app, private, public
    app.extensions["flowcall"].store.close()


def _rs_claims(tenant, **extra):
    return {"tenant_id": tenant, "exp": int(time.time()) + 300, "aud": "flowcall", **extra}


def test_public_key_configuration_refuses_what_it_cannot_verify(rs_app, tenant_id, agent_id):
    app, private, public = rs_app
    client = app.test_client()
    attacker, _ = _rsa()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
    cases = {
        "genuine": (jwt.encode(_rs_claims(tenant_id), private, algorithm="RS256"), 200),
        "hs256 with some secret": (jwt.encode(_rs_claims(tenant_id), ATTACKER_SECRET, algorithm="HS256"), 401),
        "hs256 with the public key as secret": (hs_token({"alg": "HS256"}, _rs_claims(tenant_id), secret=public), 401),
        "embedded jwk of the attacker": (jwt.encode(_rs_claims(tenant_id), attacker, algorithm="RS256",
                                                     headers={"jwk": jwk}), 401),
        "attacker key named by kid": (jwt.encode(_rs_claims(tenant_id), attacker, algorithm="RS256",
                                                 headers={"kid": "primary"}), 401),
        "es256 against an rsa key": (jwt.encode(_rs_claims(tenant_id), ec.generate_private_key(ec.SECP256R1()),
                                                algorithm="ES256"), 401),
        "ps256 not on the allow-list": (jwt.encode(_rs_claims(tenant_id), private, algorithm="PS256"), 401),
        "rs512 not on the allow-list": (jwt.encode(_rs_claims(tenant_id), private, algorithm="RS512"), 401),
        "audience list with ours": (jwt.encode(_rs_claims(tenant_id, aud=["other", "flowcall"]), private,
                                               algorithm="RS256"), 200),
        "audience list without ours": (jwt.encode(_rs_claims(tenant_id, aud=["other", "flowcall2"]), private,
                                                  algorithm="RS256"), 401),
        "audience of the wrong type": (jwt.encode(_rs_claims(tenant_id, aud=7), private, algorithm="RS256"), 401),
        "audience differing in case": (jwt.encode(_rs_claims(tenant_id, aud="FlowCall"), private,
                                                  algorithm="RS256"), 401),
    }
    got = {name: jwt_call(client, token, tenant_id, agent_id).status_code for name, (token, _) in cases.items()}
    assert got == {name: status for name, (_, status) in cases.items()}


# -- tenant isolation: what test_tenancy.py does not cover ----------------------------------------
def _new_key(app, tenant=None):
    tenant = tenant or str(uuid.uuid4())
    _, key = app.extensions["flowcall"].store.create_key(tenant, name="adv")
    return key, tenant


def test_an_api_key_reads_only_its_own_tenant_whatever_the_headers_say(app, client, agent_id):
    key_a, tenant_a = _new_key(app)
    key_b, tenant_b = _new_key(app)
    assert client.post(PUBLIC, json=BODY, headers={"X-Api-Key": key_a}).status_code == 200
    jwt_a = make_jwt(tenant_a)
    for path in ("/api/v3/llm/usage", "/api/v3/llm/me"):
        body = client.get(path, headers={"X-Api-Key": key_b, "x-tenant-id": tenant_a, "x-agent-id": agent_id,
                                         "Authorization": f"Bearer {jwt_a}"}).get_json()
        assert body["tenant_id"] == tenant_b
    usage_b = client.get("/api/v3/llm/usage?group_by=key", headers={"X-Api-Key": key_b}).get_json()
    assert usage_b["totals"]["calls"] == 0 and usage_b["groups"] == []
    usage_a = client.get("/api/v3/llm/usage?group_by=key", headers={"X-Api-Key": key_a}).get_json()
    assert [g["group"] for g in usage_a["groups"]] == [key_a.split("_")[1]]


def test_a_bad_api_key_never_falls_through_to_a_good_jwt(app, client, tenant_id, agent_id):
    headers = {"X-Api-Key": "fc_0123456789abcdef_" + "x" * 43, "Authorization": f"Bearer {make_jwt(tenant_id)}",
               "x-tenant-id": tenant_id, "x-agent-id": agent_id}
    for path in ("/api/v3/llm/usage", "/api/v3/llm/me", "/api/v3/llm/models"):
        assert outcome(client.get(path, headers=headers)) == (401, "invalid_api_key")


def test_a_jwt_cannot_switch_tenant_by_header(client, tenant_id, agent_id):
    other = str(uuid.uuid4())
    headers = {"Authorization": f"Bearer {make_jwt(tenant_id)}", "x-tenant-id": other, "x-agent-id": agent_id}
    for path in ("/api/v3/llm/usage", "/api/v3/llm/me", "/api/v3/llm/models"):
        assert outcome(client.get(path, headers=headers)) == (403, "tenant_forbidden")
    assert outcome(client.post("/api/v3/llm/test-connection", json={"provider": "mock"}, headers=headers)) == \
        (403, "tenant_forbidden")


def test_a_revoked_key_reads_nothing(app, client):
    key, _ = _new_key(app)
    app.extensions["flowcall"].store.revoke_key(key.split("_")[1])
    for path in ("/api/v3/llm/usage", "/api/v3/llm/me"):
        assert outcome(client.get(path, headers={"X-Api-Key": key})) == (401, "invalid_api_key")
    assert outcome(client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})) == (401, "invalid_api_key")


def test_another_tenants_running_idempotency_key_blocks_nobody_else(app, client):
    key_a, tenant_a = _new_key(app)
    key_b, _ = _new_key(app)
    idem = Idempotency(app.extensions["flowcall"].store.engine)
    assert idem.begin(tenant_a, "shared-key", body_hash("public_call", BODY), lock_seconds=60) is None
    a = client.post(PUBLIC, json=BODY, headers={"X-Api-Key": key_a, "Idempotency-Key": "shared-key"})
    assert outcome(a) == (409, "idempotency_in_progress")
    b = client.post(PUBLIC, json=BODY, headers={"X-Api-Key": key_b, "Idempotency-Key": "shared-key"})
    assert b.status_code == 200 and "Idempotent-Replay" not in b.headers


def test_a_stored_answer_is_not_replayed_across_endpoints(app, client, agent_id):
    key, tenant = _new_key(app)
    first = client.post(PUBLIC, json=BODY, headers={"X-Api-Key": key, "Idempotency-Key": "cross"})
    assert first.status_code == 200
    jwt_headers = {"Authorization": f"Bearer {make_jwt(tenant)}", "x-tenant-id": tenant, "x-agent-id": agent_id,
                   "Idempotency-Key": "cross"}
    assert outcome(client.post(CALL, json=BODY, headers=jwt_headers)) == (422, "idempotency_key_reused")
    agent = client.post("/v1/action/invoke_llm", json={"instructions": "hi", "llm_engine": "mock.echo"},
                        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "cross"})
    assert outcome(agent) == (422, "idempotency_key_reused")


# -- the key check is constant-time for found and unknown ids ----------------------------------------
def test_every_key_check_is_one_compare_digest_of_two_sha256_hex_digests(app, client, api_key, monkeypatch):
    import app.tenancy.store as store_module
    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(store_module.hmac, "compare_digest", spy)
    key_id = api_key.split("_")[1]
    presented = {
        "valid": api_key,
        "known id, wrong secret": f"fc_{key_id}_" + "A" * 43,
        "unknown id": "fc_" + "0" * 16 + "_" + "A" * 43,
        "unknown id again (cached)": "fc_" + "0" * 16 + "_" + "B" * 43,
        "malformed": "not-a-key",
        "near miss": api_key[:-1] + ("A" if api_key[-1] != "A" else "B"),
    }
    for name, key in presented.items():
        seen.clear()
        status = client.get("/api/v3/llm/me", headers={"X-Api-Key": key}).status_code
        assert status == (200 if name == "valid" else 401), name
        assert len(seen) == 1, name
        expected, actual = seen[0]
        assert len(expected) == len(actual) == 64, name
        assert all(c in "0123456789abcdef" for c in expected + actual), name


# -- secrets never leave: bodies, headers, logs, metrics -------------------------------------------
def _echo_key(status, template, content_type="application/json"):
    def callback(request):
        key = request.headers.get("Authorization", "").partition(" ")[2]
        return status, {"Content-Type": content_type}, template.replace("{key}", key)
    return callback


OPENAI_OK = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})


class TestSecretsNeverLeave:
    @pytest.fixture
    def config(self, config):
        return {**config, "OPENAI_API_KEY": OPENAI_KEY, "FLOWCALL_LOG_LEVEL": "DEBUG"}

    def test_no_key_in_any_body_header_log_line_or_metric(self, app, client, api_key, tenant_id, agent_id,
                                                          caplog, capsys):
        caplog.set_level(logging.DEBUG)
        secret = api_key.split("_", 2)[2]
        upstream = [
            (200, OPENAI_OK, "application/json"),
            (401, json.dumps({"error": {"message": "Incorrect API key provided: {key}. You can find your API key "
                                                   "at https://platform.openai.com/account/api-keys.",
                                        "type": "invalid_request_error", "code": "invalid_api_key"}}),
             "application/json"),
            (400, json.dumps({"error": {"message": "Invalid API key {key}", "type": "invalid_request_error"}}),
             "application/json"),
            (429, json.dumps({"error": {"message": "Rate limit for key {key} reached", "type": "requests"}}),
             "application/json"),
            (500, "upstream exploded; Authorization: Bearer {key}", "text/plain"),
            (503, "<html><body>key={key}</body></html>", "text/html"),
        ]
        answers = []
        jwt_headers = {"Authorization": f"Bearer {make_jwt(tenant_id)}", "x-tenant-id": tenant_id,
                       "x-agent-id": agent_id}
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:    # no request leaves
            for status, template, content_type in upstream:
                rsps.add_callback(responses.POST, OPENAI_URL, callback=_echo_key(status, template, content_type))
                answers.append(client.post(PUBLIC, json={"model": "openai.gpt-4o", "prompt": "hi",
                                                         "options": {"timeoutMs": 800}},
                                           headers={"X-Api-Key": api_key, "Idempotency-Key": f"k-{status}"}))
                answers.append(client.post("/api/v3/llm/test-connection", json={"provider": "openai"},
                                           headers=jwt_headers))
                rsps.reset()
        assert [a.status_code for a in answers][:3] == [200, 200, 502]
        near_miss = api_key[:-1] + ("Z" if api_key[-1] != "Z" else "Y")
        bad = [("X-Api-Key", near_miss), ("X-Api-Key", api_key + "x"), ("X-Api-Key", api_key.upper())]
        for name, value in bad:
            answers.append(client.get("/api/v3/llm/usage", headers={name: value}))
            answers.append(client.post(PUBLIC, json=BODY, headers={name: value}))
        answers.append(client.post(CALL, json=BODY, headers={**jwt_headers, "Authorization": f"Bearer {api_key}"}))
        answers.append(client.post("/v1/action/invoke_llm", json={"instructions": "hi"},
                                   headers={"Authorization": f"Bearer {api_key[:-2]}"}))
        metrics = client.get("/metrics").get_data(as_text=True)

        exposed = [metrics, caplog.text, *capsys.readouterr()]
        formatter = JsonFormatter()
        exposed += [formatter.format(record) for record in caplog.records]
        for a in answers:
            exposed.append(a.get_data(as_text=True))
            exposed.extend(f"{k}: {v}" for k, v in a.headers.items())
        needles = {"provider key": OPENAI_KEY, "provider key body": OPENAI_KEY[8:], "flowcall key": api_key,
                   "flowcall secret": secret, "flowcall secret prefix": secret[:20]}
        leaks = {name: text[:300] for text in exposed for name, needle in needles.items() if needle in text}
        assert leaks == {}
        assert any(OPENAI_KEY not in t and "[redacted]" in t for t in exposed)   # the 401 was redacted, not lost


class TestKeyEchoedInANonJsonSuccessPage:
    @pytest.fixture
    def config(self, config):
        return {**config, "OPENAI_API_KEY": OPENAI_KEY}

    def test_the_key_is_redacted(self, client, api_key):
        with responses.RequestsMock() as rsps:
            rsps.add_callback(responses.POST, OPENAI_URL, callback=_echo_key(
                200, "<html><pre>Authorization: Bearer {key}</pre>Please sign in.</html>", "text/html"))
            resp = client.post(PUBLIC, json={"model": "openai.gpt-4o", "prompt": "hi"}, headers={"X-Api-Key": api_key})
        assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "invalid_provider_response"
        assert OPENAI_KEY not in resp.get_data(as_text=True)


class TestMetricLabelsStayBounded:
    @pytest.fixture
    def config(self, config):
        return {**config, "OPENAI_API_KEY": OPENAI_KEY}

    def test_caller_chosen_model_names_do_not_create_series(self, client, api_key):
        run = uuid.uuid4().hex[:8]
        with responses.RequestsMock() as rsps:
            rsps.post(OPENAI_URL, status=404, json={"error": {"message": "The model does not exist",
                                                              "type": "invalid_request_error",
                                                              "code": "model_not_found"}})
            for i in range(25):
                resp = client.post(PUBLIC, json={"model": f"openai.probe-{run}-{i}", "prompt": "hi"},
                                   headers={"X-Api-Key": api_key})
                assert resp.status_code == 502
        metrics = client.get("/metrics").get_data(as_text=True)
        series = {line.split("model=")[1].split(",")[0] for line in metrics.splitlines()
                  if line.startswith("flowcall_provider_calls_total{") and f"probe-{run}" in line}
        assert len(series) <= 1


# -- gunicorn: oversized headers and slow bodies -------------------------------------------------------
SYNC_TIMEOUT_S = 5
MAX_BODY = 65536
WORKER_CLASSES = {
    "sync": ("-k", "sync", "--timeout", str(SYNC_TIMEOUT_S)),
    "gthread": ("-k", "gthread", "--threads", "4"),
    "gevent": ("-k", "gevent"),
}


@pytest.fixture(scope="module", params=list(WORKER_CLASSES))
def served(request, tmp_path_factory):
    if request.param == "gevent" and find_spec("gevent") is None:
        pytest.skip("gevent is not installed")
    with e2e_service(tmp_path_factory.mktemp(f"gunicorn-{request.param}"), workers=1,
                     extra_args=WORKER_CLASSES[request.param],
                     extra_env={"FLOWCALL_MAX_BODY_BYTES": str(MAX_BODY)}) as svc:
        yield request.param, svc


def _host_port(url):
    host, port = url.split("//")[1].split(":")
    return host, int(port)


@pytest.mark.e2e
@pytest.mark.parametrize("what", ["header-line", "request-line", "header-count"])
def test_oversized_headers_get_a_4xx_from_gunicorn_not_a_hang(served, what):
    kind, svc = served
    url, headers = f"{svc['url']}/healthz", {}
    if what == "header-line":
        headers = {"X-Big": "a" * 100_000}
    elif what == "request-line":
        url += "?pad=" + "a" * 100_000
    else:
        headers = {f"X-Noise-{i}": "v" for i in range(150)}
    resp = requests.get(url, headers=headers, timeout=10)
    assert 400 <= resp.status_code < 500, (kind, resp.status_code)
    assert requests.get(f"{svc['url']}/healthz", timeout=10).status_code == 200     # the worker survived


@pytest.mark.e2e
def test_a_slow_body_does_not_keep_the_worker_from_the_next_request(served):
    """A client sends its headers, 4 bytes of a 1,000-byte body, then nothing.

    gthread and gevent serve the next request at once. A sync worker is stuck reading that body
    until gunicorn's `timeout` kills it (FINDING: the wait is printed, see -rP); the service then
    recovers, which is what is asserted for it.
    """
    kind, svc = served
    host, port = _host_port(svc["url"])
    slow = socket.create_connection((host, port), timeout=5)
    try:
        slow.sendall((f"POST {PUBLIC} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                      f"X-Api-Key: {svc['key']}\r\nContent-Length: 1000\r\n\r\n" + '{"mo').encode())
        started = time.monotonic()
        resp = requests.post(f"{svc['url']}{PUBLIC}", json=BODY, headers={"X-Api-Key": svc["key"]},
                             timeout=SYNC_TIMEOUT_S + 20 if kind == "sync" else 5)
        blocked = time.monotonic() - started
        print(f"{kind}: the next request waited {blocked:.2f} s behind a stalled body")   # shown with -rP
        assert resp.status_code == 200 and resp.json()["response"] == "hi"
        if kind != "sync":
            assert blocked < 3, blocked
    finally:
        slow.close()


# -- HTTP framing: what reaches the app when the bytes on the wire lie ---------------------------------
def raw_exchange(svc, data: bytes, half_close: bool = False) -> tuple[int, bytes]:
    """Send raw bytes, read until the server closes: (status, body). Status 0: reset, no answer."""
    sock = socket.create_connection(_host_port(svc["url"]), timeout=10)
    received = b""
    try:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    if not received.startswith(b"HTTP/"):
        return 0, received
    return int(received.split(b" ", 2)[1]), received.partition(b"\r\n\r\n")[2]


def _post(svc, headers: str, body: bytes) -> bytes:
    return (f"POST {PUBLIC} HTTP/1.1\r\nHost: flowcall\r\nX-Api-Key: {svc['key']}\r\n"
            f"Content-Type: application/json\r\nConnection: close\r\n{headers}\r\n").encode() + body


def _chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


CALL_JSON = json.dumps(BODY).encode()


@pytest.mark.e2e
@pytest.mark.parametrize("what, make, expected", [
    ("content-length and chunked", lambda s: _post(s, "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                                                   _chunked(CALL_JSON)), 400),
    ("two content-lengths", lambda s: _post(s, f"Content-Length: {len(CALL_JSON)}\r\nContent-Length: 3\r\n",
                                            CALL_JSON), 400),
    ("negative content-length", lambda s: _post(s, "Content-Length: -1\r\n", CALL_JSON), 400),
    ("space in a header name", lambda s: _post(s, "X Evil: 1\r\n", b""), 400),
    ("NUL in a header value", lambda s: _post(s, "X-Evil: a\x00b\r\n", b""), 400),
    ("bare LF line endings", lambda s: b"GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n", 400),
    ("gzip transfer coding", lambda s: _post(s, "Transfer-Encoding: gzip, chunked\r\n",
                                             _chunked(gzip.compress(CALL_JSON))), 400),
    ("declared body over the cap", lambda s: _post(s, f"Content-Length: {MAX_BODY + 1}\r\n", b"{"), 413),
    ("chunked body under the cap", lambda s: _post(s, "Transfer-Encoding: chunked\r\n",
                                                   _chunked(CALL_JSON[:10], CALL_JSON[10:])), 200),
])
def test_http_framing_tricks_get_a_clean_answer(served, what, make, expected):
    kind, svc = served
    status, _ = raw_exchange(svc, make(svc))
    assert status == expected, (kind, what, status)


@pytest.mark.e2e
def test_a_malformed_chunk_is_a_400_not_a_500(served):
    kind, svc = served
    status, _ = raw_exchange(svc, _post(svc, "Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n"))
    assert status == 400, (kind, status)


@pytest.mark.e2e
def test_a_chunked_body_over_the_cap_is_a_413_not_truncated(served):
    kind, svc = served
    padded = CALL_JSON + b" " * (MAX_BODY * 2)          # valid JSON first, then more than the cap of spaces
    status, body = raw_exchange(svc, _post(svc, "Transfer-Encoding: chunked\r\n",
                                           _chunked(*(padded[i:i + 8192] for i in range(0, len(padded), 8192)))))
    assert status == 413, (kind, status, body[:200])


@pytest.mark.e2e
def test_a_body_shorter_than_its_content_length_is_not_executed(served):
    kind, svc = served
    status, _ = raw_exchange(svc, _post(svc, f"Content-Length: {len(CALL_JSON) + 50}\r\n", CALL_JSON),
                             half_close=True)
    assert status == 400, (kind, status)
