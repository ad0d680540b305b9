"""A misbehaving OpenAI-format provider, for the adversarial fault and kill suites.

Where tests/fake_provider.py is a well-behaved provider with scripted status codes, this one breaks
HTTP itself: it resets connections mid-body, drips its answer a byte at a time, truncates JSON,
answers HTML, streams 80 MB, storms 429s, echoes the caller's API key back in its errors.

The mode of each request is, in order: a `fault:<mode>` marker at the start of the last user
message (so concurrent tests never share state), else the server's default mode (`set_mode`).
Every request is recorded (`received`, `count`) with the mode it got and its `outcome`
("completed", or "client_left" when the client hung up mid-answer), so tests can count retries and
fallbacks exactly and see whether a client gave up on a slow answer. Answers are shaped like the
real recorded Chat Completions answers (shape from ../shared/specs/fixtures/test_openai/ via
tests/fake_provider.py, pydantic-ai, MIT).

`closed_port_url()` gives a URL nothing listens on, for "connection refused".
"""
from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fake_provider import openai_answer

MODES = (
    "ok",                 # a normal answer
    "reset_mid_body",     # headers + part of the body, then a TCP RST (SO_LINGER 0)
    "slow_drip",          # headers at once, then the body 1 byte per `drip_interval_s`, bounded
    "drip_head",          # the status line and headers 1 byte per `drip_interval_s`, bounded, then the body
    "truncated_json",     # a complete HTTP message whose JSON body is cut in half
    "error_body_200",     # 200 with {"error": {...}} instead of choices
    "html_json_200",      # 200 text/html whose text is the normal JSON answer
    "html_200",           # 200 text/html with an HTML page
    "enormous",           # 200 with an `enormous_bytes` JSON body, streamed
    "rate_limit_storm",   # every request 429, Retry-After: 0
    "status_500",         # every request 500 (OpenAI server_error shape)
    "quarter_500",        # every 4th request (by the server's counter) 500, the rest normal
    "echo_key_401",       # 401 whose message echoes the Authorization key, as OpenAI's does
    "echo_key_500_text",  # 500 text/plain that dumps the request headers, key included
    "echo_key_html_200",  # 200 text/html (a proxy's page) that shows the Authorization header
    "nan_json",           # 200 whose content is the JSON-looking text {"score": NaN}
)
_MARKER = re.compile(r"^\s*fault:(?P<mode>[a-z0-9_]+)")
OVERLOADED = {"error": {"message": "The server had an error while processing your request. Sorry about that!",
                        "type": "server_error", "param": None, "code": None}}
RATE_LIMITED = {"error": {"message": "Rate limit reached for gpt-4o in organization org-fake on requests per "
                                     "min (RPM): Limit 500, Used 500, Requested 1.",
                          "type": "requests", "param": None, "code": "rate_limit_exceeded"}}


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


def _bearer(headers) -> str:
    value = headers.get("Authorization") or ""
    return value.partition(" ")[2]


class FaultProvider:
    def __init__(self, mode: str = "ok", *, drip_interval_s: float = 0.2, drip_limit_s: float = 4.5,
                 enormous_bytes: int = 80 * 1024 * 1024, latency_s: float = 0.0):
        self.mode = mode
        self.latency_s = latency_s                # before every answer, whatever the mode
        self.drip_interval_s = drip_interval_s
        self.drip_limit_s = drip_limit_s          # a slow drip sends the rest at once after this long
        self.enormous_bytes = enormous_bytes
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.settled = threading.Condition(self.lock)     # notified when a request's outcome is known
        self.stopping = threading.Event()
        self.counter = 0
        fault = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def finish(self):
                try:
                    super().finish()
                except OSError:
                    pass                  # the socket was reset on purpose, or the client left

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = None
                marker = _MARKER.match(_last_user_text(body))
                with fault.lock:
                    fault.counter += 1
                    n = fault.counter
                    mode = marker.group("mode") if marker else fault.mode
                    record = {"n": n, "path": self.path, "mode": mode, "body": body,
                              "headers": dict(self.headers.items()), "outcome": "running"}
                    fault.requests.append(record)
                if fault.latency_s:
                    fault.stopping.wait(fault.latency_s)
                try:
                    getattr(self, f"_{mode}", self._unknown_mode)(body or {}, n)
                    outcome = "completed"
                except (BrokenPipeError, ConnectionResetError):
                    outcome = "client_left"    # the client hung up (its deadline) mid-answer
                with fault.settled:
                    record["outcome"] = outcome
                    fault.settled.notify_all()

            # -- plumbing --------------------------------------------------------------------------
            def _head(self, status: int, content_type: str, length: int, extra: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(length))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.flush()

            def _send(self, status: int, body, content_type: str = "application/json", extra=None):
                raw = body if isinstance(body, bytes) else (
                    body.encode() if isinstance(body, str) else json.dumps(body).encode())
                self._head(status, content_type, len(raw), extra)
                self.wfile.write(raw)
                self.wfile.flush()

            def _reset(self):
                """Abort the connection with an RST instead of a FIN."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            # -- modes -----------------------------------------------------------------------------
            def _unknown_mode(self, body, n):
                self._send(400, {"error": {"message": f"fault provider: no such mode; modes: {', '.join(MODES)}",
                                           "type": "invalid_request_error"}})

            def _ok(self, body, n):
                self._send(200, openai_answer(body))

            def _quarter_500(self, body, n):
                if n % 4 == 0:
                    return self._send(500, OVERLOADED)
                self._send(200, openai_answer(body))

            def _reset_mid_body(self, body, n):
                raw = json.dumps(openai_answer(body)).encode()
                self._head(200, "application/json", len(raw) + 1000)
                self.wfile.write(raw[: len(raw) // 2])
                self.wfile.flush()
                time.sleep(0.05)          # let the client start reading the body
                self._reset()

            def _slow_drip(self, body, n):
                raw = json.dumps(openai_answer(body)).encode()
                self._head(200, "application/json", len(raw))
                started = time.monotonic()
                for i in range(len(raw)):
                    if fault.stopping.is_set() or time.monotonic() - started > fault.drip_limit_s:
                        self.wfile.write(raw[i:])        # bounded: the rest at once
                        break
                    self.wfile.write(raw[i:i + 1])
                    self.wfile.flush()
                    time.sleep(fault.drip_interval_s)
                self.wfile.flush()

            def _drip_head(self, body, n):
                raw = json.dumps(openai_answer(body)).encode()
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
                        f"X-Padding: {'p' * 40}\r\n\r\n").encode()
                started = time.monotonic()
                for i in range(len(head)):
                    if fault.stopping.is_set() or time.monotonic() - started > fault.drip_limit_s:
                        self.wfile.write(head[i:])       # bounded: the rest at once
                        break
                    self.wfile.write(head[i:i + 1])
                    self.wfile.flush()
                    time.sleep(fault.drip_interval_s)
                self.wfile.write(raw)
                self.wfile.flush()

            def _truncated_json(self, body, n):
                raw = json.dumps(openai_answer(body)).encode()
                self._send(200, raw[: len(raw) // 2])

            def _error_body_200(self, body, n):
                self._send(200, OVERLOADED)

            def _html_json_200(self, body, n):
                self._send(200, json.dumps(openai_answer(body)), "text/html; charset=utf-8")

            def _html_200(self, body, n):
                self._send(200, "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
                                "<body><h1>Bad Gateway</h1></body></html>", "text/html")

            def _enormous(self, body, n):
                head = b'{"id":"chatcmpl-huge","object":"chat.completion","model":"gpt-4o","choices":' \
                       b'[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"'
                tail = b'"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
                self._head(200, "application/json", fault.enormous_bytes)
                self.wfile.write(head)
                chunk = b"a" * (1024 * 1024)
                left = fault.enormous_bytes - len(head) - len(tail)
                while left > 0 and not fault.stopping.is_set():
                    piece = chunk[:left]
                    self.wfile.write(piece)
                    left -= len(piece)
                self.wfile.write(tail)
                self.wfile.flush()

            def _rate_limit_storm(self, body, n):
                self._send(429, RATE_LIMITED, extra={"Retry-After": "0", "x-ratelimit-remaining-requests": "0"})

            def _status_500(self, body, n):
                self._send(500, OVERLOADED)

            def _echo_key_401(self, body, n):
                key = _bearer(self.headers)
                self._send(401, {"error": {
                    "message": f"Incorrect API key provided: {key}. You can find your API key at "
                               "https://platform.openai.com/account/api-keys.",
                    "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})

            def _echo_key_500_text(self, body, n):
                dump = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
                self._send(500, f"upstream exploded; request was:\n{dump}", "text/plain")

            def _echo_key_html_200(self, body, n):
                self._send(200, f"<html><body><pre>Authorization: {self.headers.get('Authorization')}</pre>"
                                "<p>Session expired, please log in.</p></body></html>", "text/html")

            def _nan_json(self, body, n):
                answer = openai_answer(body)
                answer["choices"][0]["message"]["content"] = '{"score": NaN, "rank": Infinity}'
                self._send(200, answer)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def set_mode(self, mode: str) -> None:
        assert mode in MODES, mode
        with self.lock:
            self.mode = mode

    def reset(self) -> None:
        with self.lock:
            self.requests = []
            self.counter = 0

    def received(self, mode: str | None = None) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.requests if mode is None or r["mode"] == mode]

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

    def start(self) -> FaultProvider:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
