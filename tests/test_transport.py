"""The transport's body read (app/transport/capped_read.py) on its own, and a provider call's whole
answer against a threaded server on 127.0.0.1: decoded, capped after decoding, and its connection
kept for the next call."""
from __future__ import annotations

import gzip
import http.server
import threading
import time

import pytest

from app.errors import InvalidProviderResponse
from app.http import HttpRequest
from app.transport import Transport
from app.transport.capped_read import CappedRead
from app.transport.provider import MAX_RESPONSE_BYTES


class TooLarge(Exception):
    pass


class Late(Exception):
    pass


def capped(chunks, *, max_bytes=10, deadline_in=60.0, then_raise=None) -> CappedRead:
    """A CappedRead of scripted reads: `chunks`, then `then_raise` (if given) or the end."""
    pieces = list(chunks)

    def read(size):
        if then_raise is not None and not pieces:
            raise then_raise
        return pieces.pop(0) if pieces else b""
    return CappedRead(read, max_bytes=max_bytes, deadline=time.monotonic() + deadline_in,
                      too_large=TooLarge, late=Late)


def test_a_body_within_the_cap_is_read_whole():
    assert capped([b"abc", b"defghij"]).whole() == b"abcdefghij"


def test_a_body_over_the_cap_is_refused_as_soon_as_it_passes_it():
    with pytest.raises(TooLarge):
        capped([b"abcdef", b"ghijk", b"never read"]).whole()


def test_a_declared_length_over_the_cap_is_refused_before_reading():
    def read(size):
        raise AssertionError("read although the declared length is over the cap")
    with pytest.raises(TooLarge):
        CappedRead(read, max_bytes=10, deadline=float("inf"), too_large=TooLarge, late=Late,
                   declared_length="11").whole()


def test_nothing_is_read_after_the_deadline():
    with pytest.raises(Late):
        capped([b"abc"], deadline_in=-1).whole()


def test_a_read_failing_at_the_deadline_is_late_not_the_failure():
    body = capped([b"abc"], then_raise=OSError("shut down"))
    chunks = iter(body)
    assert next(chunks) == b"abc"
    body.deadline = 0.0            # the deadline passed while the next read was blocked
    with pytest.raises(Late):
        next(chunks)


# -- a provider call's whole answer ----------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.clients.append(self.client_address)
        body = {"/gzip": gzip.compress(b'{"ok": true}'),
                "/bomb": self.server.bomb}[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def provider():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.clients = []
    server.bomb = gzip.compress(b"0" * (MAX_RESPONSE_BYTES + 1))     # ~16 kB on the wire
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def send(transport: Transport, server, path: str):
    url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    return transport.send(HttpRequest("POST", url, json={}), provider="fake", connect_timeout=5.0, read_timeout=10.0)


def test_a_compressed_answer_is_decoded_and_its_connection_kept(provider):
    transport = Transport(pool_size=2)
    try:
        provider.clients.clear()
        assert send(transport, provider, "/gzip").json() == {"ok": True}
        assert send(transport, provider, "/gzip").json() == {"ok": True}
        assert len(set(provider.clients)) == 1          # the second call reused the first's connection
    finally:
        transport.close()


def test_the_cap_counts_decoded_bytes(provider):
    transport = Transport(pool_size=2)
    try:
        with pytest.raises(InvalidProviderResponse, match="larger than"):
            send(transport, provider, "/bomb")
    finally:
        transport.close()
