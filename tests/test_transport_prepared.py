"""The provider adapter's shortcuts (app/transport/provider.py) give what requests' own way gives:
the prepared request a `requests.Request` prepares, the pool the pool manager hands out, the response
HTTPAdapter.build_response builds (but for cookies, which nothing keeps)."""
from __future__ import annotations

import io
import math

import pytest
import requests
from urllib3 import HTTPResponse

from app.http import HttpRequest
from app.transport.provider import ProviderAdapter, origin_of, prepared

CASES = [
    HttpRequest("POST", "https://api.example.test/v1/chat/completions",
                {"Authorization": "Bearer sk-1", "X-Extra": "é"}, {"model": "m", "messages": [{"content": "héllo ☃"}]}),
    HttpRequest("POST", "https://api.example.test:8443/v1/x?api-version=1", {"Content-Type": "application/json; v=2",
                                                                            "User-Agent": None}, {"a": [1, 2.5, None]}),
    HttpRequest("POST", "http://user:pa%20ss@127.0.0.1:9/path", {}, None),
    HttpRequest("GET", "http://127.0.0.1:9/models", {"Accept": "text/plain"}, None),
    HttpRequest("POST", "http://127.0.0.1:9/", {}, {}),
]


@pytest.mark.parametrize("request_", CASES)
def test_a_prepared_request_is_what_requests_prepares(request_):
    headers = dict(requests.utils.default_headers())
    for name, value in request_.headers.items():
        headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
        if value is not None:
            headers[name] = value
    reference = requests.Request(request_.method, request_.url, headers=headers, json=request_.json).prepare()
    ours = prepared(request_)
    assert (ours.method, ours.url, ours.body) == (reference.method, reference.url, reference.body)
    assert sorted(ours.headers.items()) == sorted(reference.headers.items())


def test_a_body_with_nan_fails_as_requests_fails():
    with pytest.raises(requests.exceptions.InvalidJSONError):
        prepared(HttpRequest("POST", "http://127.0.0.1:9/", {}, {"x": math.nan}))


def test_origin_is_scheme_and_authority():
    assert origin_of("https://a.test:8443/v1/x?q=1") == "https://a.test:8443"
    assert origin_of("http://u:p@127.0.0.1:9/") == "http://u:p@127.0.0.1:9"
    assert origin_of("http://127.0.0.1:9") == "http://127.0.0.1:9"


def test_the_pool_is_the_pool_managers_until_it_is_closed():
    adapter = ProviderAdapter(pool_connections=4, pool_maxsize=2, max_retries=0)
    request = prepared(HttpRequest("POST", "https://api.example.test/v1/a", {}, {}))
    other_path = prepared(HttpRequest("POST", "https://api.example.test/v1/b", {}, {}))
    first = adapter.get_connection_with_tls_context(request, True, {})
    assert adapter.get_connection_with_tls_context(other_path, True, {}) is first
    assert first is requests.adapters.HTTPAdapter.get_connection_with_tls_context(adapter, request, True, {})
    other_host = prepared(HttpRequest("POST", "https://other.example.test/v1/a", {}, {}))
    assert adapter.get_connection_with_tls_context(other_host, True, {}) is not first
    adapter.close()                                     # the pool manager closes its pools
    again = adapter.get_connection_with_tls_context(request, True, {})
    assert again is not first and again.pool is not None
    unverified = adapter.get_connection_with_tls_context(request, False, {})
    assert unverified is not again                      # another TLS setting: requests' own way, another pool


def test_a_built_response_is_requests_but_for_cookies():
    adapter = ProviderAdapter(max_retries=0)
    request = prepared(HttpRequest("POST", "http://127.0.0.1:9/v1/a", {}, {}))

    def raw():
        return HTTPResponse(body=io.BytesIO(b"{}"), headers={"Content-Type": "application/json; charset=latin-1",
                                                 "Set-Cookie": "a=b"}, status=201, reason="Created",
                            preload_content=False)
    ours = adapter.build_response(request, raw())
    theirs = requests.adapters.HTTPAdapter.build_response(adapter, request, raw())
    for name in ("status_code", "encoding", "reason", "url", "request", "connection"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert dict(ours.headers) == dict(theirs.headers) and ours.content == theirs.content == b"{}"
    assert len(ours.cookies) == 0 and len(theirs.cookies) == 0      # a raw response without a request jar
