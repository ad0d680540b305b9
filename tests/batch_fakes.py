"""Fakes for the batch and job tests: an OpenAI-compatible provider that fails on cue and measures
how many requests it holds at once, and a callback receiver that records what it is POSTed.

Provider faults are chosen by markers in the last user message, so they stay with their row however
the concurrent requests interleave: `[429]` rate-limited, `[500]` server error, `[malformed]` a 200
whose body is not JSON. `hold(prompt)` (a predicate) keeps matching requests waiting until
`release` is set; `barrier` makes every request wait until that many are in flight together.
"""
from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fake_answers import openai_answer

# shapes as in tests/providers/test_openai_chat.py (OpenAI's documented error envelope)
RATE_LIMITED = {"error": {"message": "Rate limit reached for gpt-4o", "type": "requests", "param": None,
                          "code": "rate_limit_exceeded"}}
SERVER_ERROR = {"error": {"message": "The server had an error", "type": "server_error"}}
HOLD_LIMIT_S = 60


def _last_user_text(body: dict) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else " ".join(
                p.get("text", "") for p in content or [] if isinstance(p, dict))
    return ""


class _Server:
    def __init__(self, handler_cls):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _reply(handler, status: int, body, headers: dict | None = None) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    with contextlib.suppress(OSError):       # the caller is gone (a killed worker): nothing to tell
        handler.wfile.write(raw)


class FakeLLM(_Server):
    """OpenAI Chat Completions at `<url>/v1/chat/completions`."""

    def __init__(self, barrier: int | None = None):
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.held = 0
        self.prompts: Counter = Counter()
        self.bodies: list[dict] = []
        self.release = threading.Event()
        self.hold = None
        self.barrier = threading.Barrier(barrier, timeout=30) if barrier else None
        self.barrier_broken = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw or b"{}")
                prompt = _last_user_text(body)
                with fake.lock:
                    fake.prompts[prompt] += 1
                    fake.bodies.append(body)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    fake._wait(prompt)
                    status, answer, headers = fake.answer(body, prompt)
                finally:
                    with fake.lock:          # counted out before the answer leaves: the client's next
                        fake.in_flight -= 1  # request can never overlap this one in our count
                _reply(self, status, answer, headers)

        super().__init__(Handler)

    def _wait(self, prompt: str) -> None:
        if self.barrier is not None:
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                self.barrier_broken = True
        if self.hold is not None and self.hold(prompt):
            with self.lock:
                self.held += 1
            self.release.wait(HOLD_LIMIT_S)

    @staticmethod
    def answer(body: dict, prompt: str):
        if "[429]" in prompt:
            return 429, RATE_LIMITED, {"retry-after": "0"}
        if "[500]" in prompt:
            return 500, SERVER_ERROR, {}
        if "[malformed]" in prompt:
            return 200, b"<html>upstream proxy error</html>", {"Content-Type": "text/html"}
        return 200, openai_answer(body), {}

    def env(self) -> dict:
        return {"OPENAI_API_KEY": "sk-batch-test-0123456789", "OPENAI_BASE_URL": f"{self.url}/v1"}


class Receiver(_Server):
    """Records every POST (headers and raw body); answers with the next scripted status, else 200."""

    def __init__(self, statuses: list[int] | None = None):
        self.posts: list[dict] = []
        self.statuses = list(statuses or [])
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.posts.append({"path": self.path, "headers": dict(self.headers.items()), "body": raw})
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                _reply(self, status, {"ok": status < 300})

        super().__init__(Handler)
