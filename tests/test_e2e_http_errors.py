"""Requests gunicorn answers itself, before flowcall runs, through a real gunicorn (gevent, the
default, and sync): every answer is JSON in our error envelope, never gunicorn's HTML page."""
from __future__ import annotations

import json
import socket

import pytest
import requests
from service import e2e_service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["gevent", "sync"])
def service(request, tmp_path_factory):
    with e2e_service(tmp_path_factory.mktemp(f"http-errors-{request.param}"), workers=1,
                     extra_env={"FLOWCALL_WORKER_CLASS": request.param}) as svc:
        yield svc


def raw_exchange(url: str, request: bytes) -> tuple[int, dict, bytes]:
    """Send bytes as they are (requests would fix the framing) -> (status, headers, body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def assert_envelope(status: int, headers: dict, body: bytes, expected_status: int, code: str) -> dict:
    assert status == expected_status, body[:300]
    assert headers["content-type"] == "application/json"
    payload = json.loads(body)
    assert payload["success"] is False and payload["request_id"] is None
    assert payload["error"]["code"] == code and payload["error"]["retryable"] is False
    assert payload["error"]["type"] == "invalid_request_error"            # OpenAI SDKs read it too
    return payload


CALL = b"POST /api/v3/llm/public/call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
FRAMING = [
    ("content_length_and_chunked",
     CALL + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("two_content_lengths", CALL + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}"),
    ("garbage_request_line", b"HELLO\r\n\r\n"),
]


@pytest.mark.parametrize("name, request_bytes", FRAMING, ids=[f[0] for f in FRAMING])
def test_bad_framing_is_a_json_400(service, name, request_bytes):
    assert_envelope(*raw_exchange(service["url"], request_bytes), 400, "invalid_http_request")


def test_a_header_over_the_limit_is_a_json_431(service):
    request_bytes = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 17_000 + b"\r\n\r\n")
    payload = assert_envelope(*raw_exchange(service["url"], request_bytes), 431, "headers_too_large")
    assert "aaaa" not in payload["error"]["message"]                        # nothing the client sent is echoed


def test_a_uri_over_the_limit_is_a_json_414(service):
    request_bytes = b"GET /healthz?q=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert_envelope(*raw_exchange(service["url"], request_bytes), 414, "uri_too_long")


def test_an_oversized_key_reaches_flowcalls_own_check(service):
    """A 9 kB credential header is over gunicorn's default 8,190-byte line limit: it must reach
    flowcall and get flowcall's 401, not gunicorn's 431."""
    resp = requests.post(f"{service['url']}/api/v3/llm/public/call", json={"model": "mock.echo", "prompt": "hi"},
                         headers={"X-Api-Key": "fc_" + "a" * 9000}, timeout=10)
    assert resp.status_code == 401 and resp.json()["success"] is False, resp.text[:300]
    assert resp.json()["error"]["code"] == "invalid_api_key"
