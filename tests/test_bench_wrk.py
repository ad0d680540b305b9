"""bench/wrk.py's fresh header per request (a_idem's Idempotency-Key): every request wrk sends
carries a value no other request of the run carried. Needs Debian's wrk; skips without it."""
from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import wrk

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")


def test_wrk_sends_a_fresh_idempotency_key_with_every_request(tmp_path):
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers.get("Idempotency-Key"))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    body = tmp_path / "body.json"
    body.write_text('{"model": "mock.echo", "prompt": "hi"}')
    try:
        out = wrk.run(f"http://127.0.0.1:{server.server_port}/", {"X-Api-Key": "k"}, str(body), connections=4,
                      duration_s=1, timeout_s=2, max_requests=40, unique_header="Idempotency-Key")
    finally:
        server.shutdown()
        server.server_close()
    assert out["ok"] >= 40 and not out["errors"]
    assert None not in seen and len(set(seen)) == len(seen) >= 40
    prefixes = {key.rsplit("-", 2)[0] for key in seen}
    assert len(prefixes) == 1 and prefixes != {"wrk"}           # one run-unique prefix
