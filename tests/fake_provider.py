"""A local fake of the providers' HTTP APIs, for end-to-end tests (and `python tests/fake_provider.py`).

It answers the OpenAI Chat Completions, Anthropic Messages, Gemini generateContent and Perplexity
Agent formats, shaped like the real recorded answers in ../shared/specs/fixtures. The answer text
echoes the last user message ("Echo: ..."), honours native stop sequences the way providers do,
and returns schema-conforming JSON when structured output is asked for. Faults are scripted:
POST /_fake/script with a list of {"status", "body" (JSON or string), "headers", "delay_ms"}
consumed one per provider request; GET /_fake/requests lists what was received.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from app.providers.mock import example_for

PNG_BYTES = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f"
             b"\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND"
             b"\xaeB`\x82")


def _last_user_text(items, text_of) -> str:
    for item in reversed(items or []):
        if item.get("role") == "user":
            return text_of(item)
    return ""


def _openai_text(msg) -> str:
    c = msg.get("content")
    if isinstance(c, str):
        return c
    return " ".join(p.get("text", "") for p in c or [] if p.get("type") in ("text", "input_text"))


def _cut(text: str, stops) -> tuple[str, bool]:
    idx = [text.find(s) for s in stops or [] if s and text.find(s) >= 0]
    return (text[:min(idx)], True) if idx else (text, False)


def _answer_text(prompt: str, schema, json_mode: bool) -> str:
    if schema is not None:
        return json.dumps(example_for(schema))
    if json_mode:
        return json.dumps({"echo": prompt})
    return "Echo: " + prompt


def openai_answer(body: dict) -> dict:
    rf = body.get("response_format") or {}
    schema = (rf.get("json_schema") or {}).get("schema") if rf.get("type") == "json_schema" else None
    text = _answer_text(_last_user_text(body.get("messages"), _openai_text), schema, rf.get("type") == "json_object")
    text, stopped = _cut(text, body.get("stop"))
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"), "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                 "annotations": []},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0,
                                                    "rejected_prediction_tokens": 0}},
            "service_tier": "default"}


def anthropic_answer(body: dict) -> dict:
    def text_of(m):
        c = m.get("content")
        return c if isinstance(c, str) else " ".join(b.get("text", "") for b in c if b.get("type") == "text")
    prompt = _last_user_text(body.get("messages"), text_of)
    usage = {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
             "output_tokens": 7, "service_tier": "standard"}
    base = {"id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model"),
            "stop_sequence": None, "usage": usage}
    tools = body.get("tools") or []
    if tools:
        tool = tools[0]
        return {**base, "stop_reason": "tool_use", "content": [
            {"type": "tool_use", "id": "toolu_fake", "name": tool["name"],
             "input": example_for(tool.get("input_schema"))}]}
    fmt = ((body.get("output_config") or {}).get("format") or {})
    text = _answer_text(prompt, fmt.get("schema"), False)
    text, stopped = _cut(text, body.get("stop_sequences"))
    return {**base, "stop_reason": "stop_sequence" if stopped else "end_turn",
            "content": [{"type": "text", "text": text}]}


def gemini_answer(body: dict, model: str) -> dict:
    def text_of(c):
        return " ".join(p.get("text", "") for p in c.get("parts", []) if "text" in p)
    prompt = _last_user_text(body.get("contents"), text_of)
    cfg = body.get("generationConfig") or {}
    schema = cfg.get("responseJsonSchema") or cfg.get("responseSchema")
    text = _answer_text(prompt, _lower_types(schema) if schema else None,
                        cfg.get("responseMimeType") == "application/json")
    text, _ = _cut(text, cfg.get("stopSequences"))
    return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19,
                              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}]},
            "modelVersion": model, "responseId": "fake-response-id"}


def _lower_types(schema):
    """Gemini's OpenAPI-style schemas spell types in capitals; example_for wants JSON Schema's."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_lower_types(x) for x in schema]
    return schema


def perplexity_answer(body: dict) -> dict:
    inp = body.get("input")
    if isinstance(inp, str):
        prompt = inp
    else:
        prompt = _last_user_text(inp, lambda m: m["content"] if isinstance(m.get("content"), str) else
                                 " ".join(p.get("text", "") for p in m.get("content", []) if "text" in p))
    rf = body.get("response_format") or {}
    schema = (rf.get("json_schema") or {}).get("schema") if rf.get("type") == "json_schema" else None
    text = _answer_text(prompt, schema, rf.get("type") == "json_object")
    return {"id": "resp_fake", "object": "response", "created_at": int(time.time()), "status": "completed",
            "model": body.get("model") or "perplexity/sonar",
            "output": [{"type": "message", "id": "msg_fake", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19,
                      "cost": {"currency": "USD", "input_cost": 0.000003, "output_cost": 0.0000175,
                               "tool_calls_cost": 0.005, "total_cost": 0.0050205}}}


def serve_control(fake, handler, raw: bytes = b"") -> bool:
    """The test-control routes every fake shares (request log, fault script, reset); True if served."""
    route = (handler.command, handler.path)
    if route == ("GET", "/_fake/requests"):
        with fake.lock:
            handler._send(200, fake.requests)
    elif route == ("POST", "/_fake/script"):
        with fake.lock:
            fake.script = json.loads(raw)
        handler._send(200, {"ok": True})
    elif route == ("POST", "/_fake/reset"):
        with fake.lock:
            fake.script, fake.requests = [], []
        handler._send(200, {"ok": True})
    else:
        return False
    return True


class FakeProvider:
    """The server plus its script and request log; usable in-process (tests) or as a command."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency_ms: int = 0):
        self.latency_ms = latency_ms
        self.script: list[dict] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.release = threading.Event()      # set to let "hang" faults finish
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, body, headers=None):
                raw = body if isinstance(body, bytes) else (
                    body.encode() if isinstance(body, str) else json.dumps(body).encode())
                self.send_response(status)
                hdrs = {"Content-Type": "application/json", **(headers or {})}
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                try:
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass            # the client gave up (a timeout under test): nothing to tell it

            def do_GET(self):
                if self.path == "/img.png":           # an image for URL-download tests
                    return self._send(200, PNG_BYTES, {"Content-Type": "image/png"})
                if not serve_control(fake, self):
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if serve_control(fake, self, raw):
                    return
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = None
                with fake.lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                    step = fake.script.pop(0) if fake.script else None
                if fake.latency_ms:
                    time.sleep(fake.latency_ms / 1000)
                if step is not None:
                    if step.get("hang"):
                        fake.release.wait(step.get("hang"))
                    return self._send(step.get("status", 200), step.get("body", {}), step.get("headers"))
                return self._send(200, fake.answer(self.path, body or {}))

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @staticmethod
    def answer(path: str, body: dict) -> dict:
        if path.endswith("/chat/completions"):
            return openai_answer(body)
        if path.endswith("/v1/messages"):
            return anthropic_answer(body)
        if ":generateContent" in path:
            return gemini_answer(body, path.rsplit("/", 1)[-1].split(":")[0])
        if path.endswith("/v1/agent"):
            return perplexity_answer(body)
        return {"error": {"message": f"fake provider: unknown path {path}"}}

    def start(self) -> "FakeProvider":
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=8900)
    ap.add_argument("--latency-ms", type=int, default=0)
    args = ap.parse_args()
    fp = FakeProvider(port=args.port, latency_ms=args.latency_ms)
    print(f"fake provider on {fp.url}", flush=True)
    fp.server.serve_forever()
