"""The dashboard's pages through Flask's test client: sign-in and sessions, CSRF, the security
headers, escaping of hostile names and messages, bad parameters, and tenant and agent isolation."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, UTC

import pytest

from dashboard_seed import csrf_of, seed, sign_in
from conftest import make_jwt

PAGES = ("/dashboard", "/dashboard/breakdowns", "/dashboard/breakdowns?by=agent&sort=calls&dir=asc",
         "/dashboard/failures", "/dashboard/calls", "/dashboard/jobs")
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
HOSTILE_MODEL = '<script>alert("m")</script>'
HOSTILE_MESSAGE = '<img src=x onerror="alert(1)">'


@pytest.fixture
def engine(app):
    return app.extensions["flowcall"].store.engine


def _signed_in(client, key):
    response = sign_in(client, key)
    assert response.status_code == 303 and response.headers["Location"] == "/dashboard"
    return response


def test_pages_need_a_session_and_sign_in_makes_a_strict_cookie(client, api_key):
    for path in (*PAGES, "/dashboard/export/calls.csv", "/dashboard/calls/1"):
        response = client.get(path)
        assert response.status_code == 303 and response.headers["Location"] == "/dashboard/signin", path
    response = _signed_in(client, api_key)
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("flowcall_dashboard="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie                              # plain http here: a Secure cookie would be lost
    assert api_key not in cookie and api_key.split("_", 2)[2] not in cookie
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.content_type == "text/html; charset=utf-8"


def test_over_tls_the_cookie_is_secure(app, api_key):
    client = app.test_client()
    response = sign_in(client, api_key, base_url="https://localhost")
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("flowcall_dashboard="))
    assert "Secure" in cookie


def test_every_page_has_a_strict_policy_and_no_script(client, api_key):
    _signed_in(client, api_key)
    client.post("/api/v3/llm/public/call", headers={"X-Api-Key": api_key}, json={"model": "mock.echo", "prompt": "x"})
    for path in (*PAGES, "/dashboard/signin", "/dashboard/nope", "/dashboard?from=bad"):
        response = client.get(path)
        assert response.headers["Content-Security-Policy"] == CSP, path
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
        page = response.get_data(as_text=True)
        assert "<script" not in page.lower() and " style=" not in page.lower() and "http://" not in page.replace(
            'xmlns="http://www.w3.org/2000/svg"', ""), path


def test_sign_in_refuses_a_form_without_its_token_and_a_bad_key(client, api_key):
    assert client.post("/dashboard/signin", data={"api_key": api_key}).status_code == 400      # no double-submit
    client.get("/dashboard/signin")
    forged = client.post("/dashboard/signin", data={"csrf": "forged", "api_key": api_key})
    assert forged.status_code == 400                                  # and a fresh form comes back
    refused = client.post("/dashboard/signin", data={"csrf": csrf_of(forged.get_data(as_text=True)),
                                                     "api_key": api_key[:-2] + "xx"})
    assert refused.status_code == 401 and "Invalid or revoked API key" in refused.get_data(as_text=True)
    assert not any(c.startswith("flowcall_dashboard=") and "Max-Age=0" not in c
                   for c in refused.headers.getlist("Set-Cookie"))
    assert client.get("/dashboard").status_code == 303


def test_sign_out_needs_its_token_and_ends_the_session(client, api_key):
    _signed_in(client, api_key)
    page = client.get("/dashboard").get_data(as_text=True)
    assert client.post("/dashboard/signout", data={"csrf": "forged"}).status_code == 400
    assert client.get("/dashboard").status_code == 200
    cookie = client.get_cookie("flowcall_dashboard", path="/dashboard").value
    response = client.post("/dashboard/signout", data={"csrf": csrf_of(page)})
    assert response.status_code == 303 and response.headers["Location"] == "/dashboard/signin"
    client.set_cookie("flowcall_dashboard", cookie, path="/dashboard")     # a copied cookie is dead too
    assert client.get("/dashboard").status_code == 303


def test_revoking_the_key_ends_its_sessions(app, client, api_key):
    _signed_in(client, api_key)
    assert client.get("/dashboard").status_code == 200
    store = app.extensions["flowcall"].store
    store.revoke_key(api_key.split("_")[1])
    assert client.get("/dashboard").status_code == 303


def test_an_expired_session_signs_in_again(app, client, api_key):
    _signed_in(client, api_key)
    sessions = app.extensions["flowcall"].sessions
    sessions.clock = lambda: datetime.now(UTC).timestamp() + 8 * 3600 + 1
    assert client.get("/dashboard").status_code == 303


def test_operators_sign_in_with_a_jwt_for_its_tenant_only(client, tenant_id):
    page = client.get("/dashboard/signin").get_data(as_text=True)
    token = make_jwt(tenant_id)
    other = client.post("/dashboard/signin", data={"csrf": csrf_of(page), "token": token,
                                                   "tenant_id": str(uuid.uuid4())})
    assert other.status_code == 401
    page = client.get("/dashboard/signin").get_data(as_text=True)
    ok = client.post("/dashboard/signin", data={"csrf": csrf_of(page), "token": token, "tenant_id": tenant_id})
    assert ok.status_code == 303
    assert tenant_id in client.get("/dashboard").get_data(as_text=True)


def test_hostile_names_and_messages_are_text(app, client, api_key, tenant_id, engine):
    seed(engine, datetime.now(UTC), tenant_id=tenant_id, request_id="r-hostile", model_served=HOSTILE_MODEL,
         status=502, error_code="provider_error", error_message=HOSTILE_MESSAGE, routing_reason="<b>why</b>")
    seed(engine, datetime.now(UTC), tenant_id=tenant_id, request_id="r-formula", model_served="=HYPERLINK(\"x\")")
    _signed_in(client, api_key)
    for path in ("/dashboard/breakdowns", "/dashboard/failures", "/dashboard/calls"):
        page = client.get(path).get_data(as_text=True)
        assert "<script>alert" not in page and "<img src=x" not in page and "<b>why" not in page, path
    breakdowns = client.get("/dashboard/breakdowns").get_data(as_text=True)
    assert "&lt;script&gt;alert(&#34;m&#34;)&lt;/script&gt;" in breakdowns
    detail = client.get("/dashboard/failures").get_data(as_text=True)
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in detail
    csv_text = client.get("/dashboard/export/breakdown.csv").get_data(as_text=True)
    assert "'=HYPERLINK" in csv_text and "\n=HYPERLINK" not in csv_text


@pytest.mark.parametrize("query", ["from=2026-13-01", "from=yesterday", "to=2026-01-01&from=2026-02-01",
                                   "from=2020-01-01&to=2026-01-01", "from=1999-01-01&to=1999-01-02", "by=tenant",
                                   "sort=secret", "dir=up", "page=0", "page=99999999999999999999", "page=-1",
                                   "agent=%3Cx%3E", "agent=" + "a" * 65, "to=2999-01-01"])
def test_bad_parameters_are_a_400_page(client, api_key, query):
    _signed_in(client, api_key)
    for path in ("/dashboard", "/dashboard/breakdowns", "/dashboard/export/daily.csv"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400, (path, query)
        assert response.content_type.startswith("text/html")


def test_unknown_pages_and_exports_are_a_404_page(client, api_key):
    assert client.get("/dashboard/nothing/here").status_code == 404
    _signed_in(client, api_key)
    assert client.get("/dashboard/export/secrets.csv").status_code == 404
    assert client.get(f"/dashboard/calls/{2**70}").status_code == 404


def test_another_tenants_data_and_calls_are_not_there(app, client, api_key, tenant_id, engine):
    other = str(uuid.uuid4())
    seed(engine, datetime.now(UTC), tenant_id=other, request_id="r-other-tenant", model_served="other.secret-model",
         agent_id="agent-of-other")
    seed(engine, datetime.now(UTC), tenant_id=tenant_id, request_id="r-mine", model_served="mine.model")
    _signed_in(client, api_key)
    calls = client.get("/dashboard/calls").get_data(as_text=True)
    assert "r-mine" in calls and "r-other-tenant" not in calls
    ids = [int(i) for i in re.findall(r'/dashboard/calls/(\d+)"', calls)]
    assert client.get(f"/dashboard/calls/{ids[0]}").status_code == 200
    assert client.get(f"/dashboard/calls/{ids[0] - 1}").status_code == 404       # the other tenant's row
    for path in (*PAGES, "/dashboard/export/calls.csv", "/dashboard/breakdowns?by=agent"):
        page = client.get(path).get_data(as_text=True)
        assert "other.secret-model" not in page and "agent-of-other" not in page and "r-other-tenant" not in page, path
    naming = client.get("/dashboard?agent=agent-of-other").get_data(as_text=True)   # naming its agent finds nothing
    assert 'id="total-calls">0<' in naming and "other.secret-model" not in naming


def test_an_agent_scoped_key_sees_its_agent_only(app, client, tenant_id, engine):
    store = app.extensions["flowcall"].store
    _, scoped = store.create_key(tenant_id, agent_id="agent-1", name="scoped")
    seed(engine, datetime.now(UTC), tenant_id=tenant_id, agent_id="agent-1", request_id="r-a1", model_served="m.one")
    seed(engine, datetime.now(UTC), tenant_id=tenant_id, agent_id="agent-2", request_id="r-a2", model_served="m.two")
    _signed_in(client, scoped)
    for path in ("/dashboard/calls", "/dashboard/calls?agent=agent-2", "/dashboard/breakdowns?agent=agent-2",
                 "/dashboard/export/calls.csv?agent=agent-2"):
        page = client.get(path).get_data(as_text=True)
        assert "m.one" in page and "m.two" not in page and "r-a2" not in page, path
    overview = client.get("/dashboard").get_data(as_text=True)
    assert '<th scope="row">tenant</th>' not in overview and '<th scope="row">key</th>' in overview


def test_the_filter_form_keeps_the_grouping_and_the_sort(client, api_key):
    _signed_in(client, api_key)
    page = client.get("/dashboard/breakdowns?by=agent&sort=calls&dir=asc").get_data(as_text=True)
    hidden = dict(re.findall(r'<input type="hidden" name="(by|sort|dir)" value="([^"]*)">', page))
    assert hidden == {"by": "agent", "sort": "calls", "dir": "asc"}
    assert 'aria-sort="ascending"' in page


def test_a_trailing_slash_redirects_to_the_page_and_nowhere_else(client, api_key):
    for path, target in (("/dashboard/", "/dashboard"), ("/dashboard/calls/", "/dashboard/calls"),
                         ("/dashboard/signin/", "/dashboard/signin"), ("/dashboard/calls//", "/dashboard/calls"),
                         ("/dashboard/breakdowns/?by=agent&sort=calls", "/dashboard/breakdowns?by=agent&sort=calls")):
        response = client.get(path)
        assert response.status_code == 308 and response.headers["Location"] == target, path
    for path in ("/dashboard/nope/", "/dashboard/calls/x/", "/dashboard/x/evil.example/"):
        assert client.get(path).status_code == 404, path         # not one of our pages: no redirect
    _signed_in(client, api_key)
    response = client.get("/dashboard/", follow_redirects=True)
    assert response.status_code == 200 and response.request.path == "/dashboard"
    assert client.post("/dashboard/signout/").status_code == 404           # a form is never re-sent elsewhere
