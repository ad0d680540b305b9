"""The one local fake of the providers' HTTP APIs, for end-to-end tests (and `python tests/fake_provider.py`).

Every request gets, in this order:
- the next scripted step, when a test scripted one (POST /_fake/script with a list, or `script`):
  {"status", "body" (JSON or string), "headers", "hang" (seconds to hold it first)} answers with that;
  {"sse_raw": "<text>"} streams that event-stream text as it is (a recorded provider stream);
  {"fail_after": n} streams n text events, then the provider's own mid-stream error event (or
  `"error": [event name, body]` instead); {"hang_after": n} streams n events, then stays silent until
  the fake stops;
- else a fault mode (tests/fake_faults.py), named by a `fault:<mode>` marker at the start of the last
  user message (so concurrent tests never share state) or by the fake's own `mode` when not "ok";
- else the provider's answer (tests/fake_answers.py: OpenAI, Anthropic, Gemini, Perplexity, and the
  OpenAI and Gemini embeddings, chosen by path; tests/fake_tool_loop.py with `tool_loop=True`), as
  server-sent events (tests/fake_streams.py) when the request asks for a stream.
Every request is recorded with its number, path, headers, body, mode and `outcome` ("completed", or
"client_left" when the client hung up mid-answer): GET /_fake/requests, or `received`, `count`,
`outcome` in-process. POST /_fake/reset (or `reset`, which tests/conftest.py calls before each test
that uses the `fake` fixture) forgets the script and the requests and restores the mode and latency.
The batch and job suites use tests/batch_fakes.py, which also counts the calls in flight and holds
them on cue; the benchmark has its own fast fake (bench/fake_provider.py), which starts without
importing the app.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fake_answers
import fake_faults
import fake_tool_loop
from fake_streams import MID_STREAM_ERRORS, event, stream_for

PNG_BYTES = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f"
             b"\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND"
             b"\xaeB`\x82")
_MARKER = re.compile(r"^\s*fault:(?P<mode>[a-z0-9_]+)")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256          # the kill suite's bursts must queue, not be refused


def closed_port_url() -> str:
    """http://127.0.0.1:<port> where nothing listens (bound, then closed: connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _last_user_text(body) -> str:
    for message in reversed((body or {}).get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return ""


def _encoded(body) -> bytes:
    return body if isinstance(body, bytes) else (body.encode() if isinstance(body, str) else json.dumps(body).encode())


class FakeProvider:
    """The server plus its script, mode and request log; a context manager that runs it in a thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, latency_ms: int = 0, mode: str = "ok",
                 tool_loop: bool = False, drip_interval_s: float = 0.2, drip_limit_s: float = 4.5,
                 enormous_bytes: int = 80 * 1024 * 1024):
        self.made_with = {"latency_ms": latency_ms, "mode": mode}     # what `reset` returns to
        self.latency_ms = latency_ms              # before every answer, whatever it is
        self.mode = mode
        self.tool_loop = tool_loop
        self.drip_interval_s = drip_interval_s
        self.drip_limit_s = drip_limit_s          # a slow drip sends the rest at once after this long
        self.enormous_bytes = enormous_bytes
        self.script: list[dict] = []
        self.requests: list[dict] = []
        self.counter = 0
        self.lock = threading.Lock()
        self.settled = threading.Condition(self.lock)     # notified when a request's outcome is known
        self.release = threading.Event()      # set to let "hang" steps finish; set at stop
        self.stopping = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def finish(self):
                with contextlib.suppress(OSError):      # the socket was reset on purpose, or the client left
                    super().finish()

            def head(self, status: int, content_type: str, length: int, extra: dict | None = None) -> None:
                """The status line and headers; `extra` adds headers and may replace the Content-Type."""
                self.send_response(status)
                for k, v in {"Content-Type": content_type, **(extra or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.flush()

            def send(self, status: int, body, content_type: str = "application/json", extra=None) -> None:
                raw = _encoded(body)
                self.head(status, content_type, len(raw), extra)
                self.wfile.write(raw)
                self.wfile.flush()

            def reset(self) -> None:
                """Abort the connection with an RST instead of a FIN."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def stream(self, fmt: str, events: list[bytes], closing: list[bytes], step: dict) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if "hang_after" in step:
                    for data in events[:step["hang_after"]]:
                        self.chunk(data)
                    fake.release.wait()
                elif "fail_after" in step:
                    for data in events[:step["fail_after"]]:
                        self.chunk(data)
                    name, body = step.get("error") or MID_STREAM_ERRORS[fmt]
                    self.chunk(event(body, name))
                else:
                    for data in [*events, *closing]:
                        self.chunk(data)
                self.wfile.write(b"0\r\n\r\n")

            def control(self, raw: bytes = b"") -> bool:
                """The test-control routes (request log, script, reset); True if served."""
                route = (self.command, self.path)
                if route == ("GET", "/_fake/requests"):
                    self.send(200, fake.received())
                elif route == ("POST", "/_fake/script"):
                    with fake.lock:
                        fake.script = json.loads(raw)
                    self.send(200, {"ok": True})
                elif route == ("POST", "/_fake/reset"):
                    fake.reset()
                    self.send(200, {"ok": True})
                else:
                    return False
                return True

            def do_GET(self):
                if self.path == "/img.png":           # an image for URL-download tests
                    return self.send(200, PNG_BYTES, "image/png")
                if not self.control():
                    self.send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.control(raw):
                    return
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = None
                marker = _MARKER.match(_last_user_text(body))
                with fake.lock:
                    fake.counter += 1
                    n = fake.counter
                    mode = marker.group("mode") if marker else fake.mode
                    record = {"n": n, "path": self.path, "headers": dict(self.headers.items()), "body": body,
                              "mode": mode, "outcome": "running"}
                    fake.requests.append(record)
                    step = fake.script.pop(0) if fake.script else None
                if fake.latency_ms:
                    fake.stopping.wait(fake.latency_ms / 1000)
                try:
                    self.answer(step, mode, body or {}, n)
                    outcome = "completed"
                except (BrokenPipeError, ConnectionResetError):
                    outcome = "client_left"    # the client hung up (its deadline) mid-answer
                with fake.settled:
                    record["outcome"] = outcome
                    fake.settled.notify_all()

            def answer(self, step: dict | None, mode: str, body: dict, n: int) -> None:
                if step and "sse_raw" in step:
                    text = step["sse_raw"].replace("\r\n", "\n")
                    return self.stream("raw", [e.encode() + b"\n\n" for e in text.split("\n\n") if e.strip()], [], {})
                if step and not {"fail_after", "hang_after"} & step.keys():
                    if step.get("hang"):
                        fake.release.wait(step["hang"])
                    return self.send(step.get("status", 200), step.get("body", {}), extra=step.get("headers"))
                if mode != "ok":
                    return fake_faults.MODES.get(mode, fake_faults.unknown_mode)(self, fake, body, n)
                if fake.tool_loop:
                    return self.send(*fake_tool_loop.answer(self.path, body))
                streamed = stream_for(self.path, body)
                if streamed is None:
                    return self.send(200, fake_answers.answer(self.path, body))
                return self.stream(*streamed, step or {})

        self.server = _Server((host, port), Handler)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeProvider:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def set_mode(self, mode: str) -> None:
        assert mode in fake_faults.MODES, mode
        with self.lock:
            self.mode = mode

    def reset(self) -> None:
        """Forget the script, the requests and their count; the mode and latency it was made with again."""
        with self.lock:
            self.script, self.requests, self.counter = [], [], 0
            self.latency_ms, self.mode = self.made_with["latency_ms"], self.made_with["mode"]

    def received(self, mode: str | None = None) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.requests if mode is None or r["mode"] == mode]

    def seen(self, prefix: str) -> list[dict]:
        """The requests whose path starts with `prefix`."""
        with self.lock:
            return [dict(r) for r in self.requests if r["path"].startswith(prefix)]

    def count(self, mode: str | None = None, path_contains: str = "") -> int:
        with self.lock:
            return sum(1 for r in self.requests
                       if (mode is None or r["mode"] == mode) and path_contains in r["path"])

    def outcome(self, mode: str, timeout: float = 30) -> str:
        """The outcome of the first request in `mode`, once its handler has finished."""
        with self.settled:
            self.settled.wait_for(lambda: any(r["mode"] == mode and r["outcome"] != "running"
                                              for r in self.requests), timeout)
            return next((r["outcome"] for r in self.requests if r["mode"] == mode), "never received")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=8900)
    ap.add_argument("--latency-ms", type=int, default=0)
    args = ap.parse_args()
    fp = FakeProvider(port=args.port, latency_ms=args.latency_ms)
    print(f"fake provider on {fp.url}", flush=True)
    fp.server.serve_forever()
