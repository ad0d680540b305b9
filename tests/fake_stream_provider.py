"""A local fake of the providers that also streams, for end-to-end tests of /v1/chat/completions.

Whole answers come from tests/fake_provider.py's answer builders (echo, native stop sequences,
schema-conforming JSON). When a request asks for a stream (`stream: true` for OpenAI-compatible and
Anthropic, `:streamGenerateContent?alt=sse` for Gemini) the same answer is sent as server-sent events,
a few characters per event so stop sequences land across event boundaries, in each provider's real
event shapes:
OpenAI chunks from ../shared/specs/fixtures/test_openai/test_openai_moderation_stream.yaml,
Anthropic events from fixtures/test_anthropic/test_anthropic_model_thinking_part_stream.yaml,
Gemini chunks from fixtures/test_google/test_google_model_stream.yaml (pydantic-ai, MIT).

Scripted faults, one per provider request (POST /_fake/script with a list): {"status", "body",
"headers"} answers with that instead; {"sse_raw": "<text>"} streams that event-stream text as it is
(a recorded provider stream), a few events per chunk; {"fail_after": n} streams n text events and then the
provider's own mid-stream error event (or `"error": [event name, body]` instead); {"hang_after": n} streams n events and then stays silent
until the fake stops. GET /_fake/requests lists what was received.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fake_provider import FakeProvider, anthropic_answer, gemini_answer, openai_answer, serve_control

PIECE = 4       # characters of answer text per event

MID_STREAM_ERRORS = {
    "openai": ("", {"error": {"message": "The server had an error while processing your request.",
                              "type": "server_error", "param": None, "code": None}}),
    "anthropic": ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    "gemini": ("", {"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                              "status": "UNAVAILABLE"}}),
}


def pieces(text: str) -> list[str]:
    return [text[i:i + PIECE] for i in range(0, len(text), PIECE)] or [""]


def _event(data, event: str = "") -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return ((f"event: {event}\n" if event else "") + f"data: {payload}\n\n").encode()


def openai_events(body: dict) -> tuple[list[bytes], list[bytes]]:
    """(text events, closing events) of a chat.completion.chunk stream."""
    answer = openai_answer(body)
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": answer["created"],
            "model": answer["model"], "service_tier": "default", "system_fingerprint": None}
    usage = (body.get("stream_options") or {}).get("include_usage")
    extra = {"usage": None} if usage else {}

    def chunk(delta, finish=None):
        return _event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})
    text = answer["choices"][0]["message"]["content"]
    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": p}) for p in pieces(text)]
    closing = [chunk({}, "stop")]
    if usage:
        closing.append(_event({**base, "choices": [], "usage": answer["usage"]}))
    return events, [*closing, _event("[DONE]")]


def anthropic_events(body: dict) -> tuple[list[bytes], list[bytes]]:
    answer = anthropic_answer(body)
    start = {**answer, "content": [], "stop_reason": None, "usage": {**answer["usage"], "output_tokens": 1}}
    events = [_event({"type": "message_start", "message": start}, "message_start")]
    block = answer["content"][0]
    if block["type"] == "tool_use":
        events.append(_event({"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}, "content_block_start"))
        events += [_event({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "input_json_delta", "partial_json": p}}, "content_block_delta")
                   for p in pieces(json.dumps(block["input"]))]
    else:
        events.append(_event({"type": "content_block_start", "index": 0,
                              "content_block": {"type": "text", "text": ""}}, "content_block_start"))
        events.append(_event({"type": "ping"}, "ping"))
        events += [_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
                          "content_block_delta") for p in pieces(block["text"])]
    closing = [_event({"type": "content_block_stop", "index": 0}, "content_block_stop"),
               _event({"type": "message_delta", "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": None},
                       "usage": answer["usage"]}, "message_delta"),
               _event({"type": "message_stop"}, "message_stop")]
    return events, closing


def gemini_events(body: dict, model: str) -> tuple[list[bytes], list[bytes]]:
    answer = gemini_answer(body, model)
    text = answer["candidates"][0]["content"]["parts"][0]["text"]
    running = {"promptTokenCount": 12, "totalTokenCount": 12}

    def chunk(piece, finish=None):
        candidate = {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        usage = answer["usageMetadata"] if finish else running
        return _event({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
                       "responseId": "fake-response-id"})
    parts = pieces(text)
    return [chunk(p) for p in parts[:-1]], [chunk(parts[-1], "STOP")]


def stream_for(path: str, body: dict):
    """(format, text events, closing events), or None when the request is not a streaming one."""
    if path.endswith("/chat/completions") and body.get("stream"):
        return ("openai", *openai_events(body))
    if path.endswith("/v1/messages") and body.get("stream"):
        return ("anthropic", *anthropic_events(body))
    if ":streamGenerateContent" in path:
        model = path.split("?", 1)[0].rsplit("/", 1)[-1].split(":")[0]
        return ("gemini", *gemini_events(body, model))
    return None


class FakeStreamProvider:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.script: list[dict] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.release = threading.Event()      # set at stop: "hang_after" streams end
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, body, headers=None):
                raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _stream(self, fmt: str, events: list[bytes], closing: list[bytes], step: dict):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    if "hang_after" in step:
                        for data in events[:step["hang_after"]]:
                            self._chunk(data)
                        fake.release.wait()
                    elif "fail_after" in step:
                        for data in events[:step["fail_after"]]:
                            self._chunk(data)
                        event, body = step.get("error") or MID_STREAM_ERRORS[fmt]
                        self._chunk(_event(body, event))
                    else:
                        for data in [*events, *closing]:
                            self._chunk(data)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass            # the client went away: nothing left to tell it

            def do_GET(self):
                if not serve_control(fake, self):
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if serve_control(fake, self, raw):
                    return
                body = json.loads(raw) if raw else {}
                with fake.lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                    step = fake.script.pop(0) if fake.script else {}
                if "status" in step:
                    return self._send(step["status"], step.get("body", {}), step.get("headers"))
                if "sse_raw" in step:
                    events = [e + "\n\n" for e in step["sse_raw"].replace("\r\n", "\n").split("\n\n") if e.strip()]
                    return self._stream("raw", [e.encode() for e in events], [], {})
                streamed = stream_for(self.path, body)
                if streamed is None:
                    return self._send(200, FakeProvider.answer(self.path, body))
                return self._stream(*streamed, step)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeStreamProvider":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
