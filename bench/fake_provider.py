"""A fast fake LLM provider for the benchmark: raw HTTP/1.1 keep-alive on asyncio, one process.

It answers the three wire formats flowcall speaks, and OpenAI's embeddings:
    POST .../chat/completions               OpenAI Chat Completions (and every OpenAI-compatible server);
                                            `stream: true` streams `chat.completion.chunk` events as
                                            OpenAI does, and a request with `tools` whose last message
                                            is not a tool result is answered with a call of the first tool
    POST .../v1/messages                    Anthropic Messages
    POST .../models/<m>:generateContent     Google Gemini
    POST .../embeddings                     OpenAI Embeddings
with well-formed answers ("Echo: <last user text>", or an example object matching the requested
JSON schema, built by the same rules as the mock provider's `example_for`; for embeddings one vector
an input, `dimensions` long (1536 unless asked), a pure function of the input's text). It imports nothing from
the app, so it starts in a blink and stays a separate, cheap process.

Why not tests/fake_provider.py: that one is a ThreadingHTTPServer (a thread and a `time.sleep` per
delayed request), fine for correctness tests but it would be the bottleneck here. This one is an
`asyncio.Protocol` with hand-rolled request parsing; an upstream delay is a timer (`call_at`), so
1,000 requests held for a second cost 1,000 timer entries, not 1,000 threads.

Control routes (not part of any provider's API):
    GET  /_fake/stats    {"requests", "in_flight", "peak_in_flight", "connections", "peak_connections",
                          "bytes_in", "cpu_s", "latency_ms"}
    POST /_fake/config   {"latency_ms": N, "stream_gap_ms": M}   the delay before every provider answer
                         (before a stream's first event) and between a stream's content events, from now on
    POST /_fake/reset    zero the counters (peaks included) and forget the bodies seen
    GET  /_fake/seen     {"bodies": [...]} the distinct JSON request bodies (up to 16) since the last reset,
                         so a run can check that its direct path sends what flowcall sent

Run alone: `python -m bench.fake_provider --port 8900 --latency-ms 0` (prints `READY <port>`).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import resource
import signal
import socket
import sys
import time


def example_for(schema, depth: int = 0):
    """A small value satisfying a JSON schema (the subset structured outputs use). The same rules as
    app.providers.mock.example_for, kept here so the fake starts without importing the app."""
    if not isinstance(schema, dict) or depth > 8:
        return {}
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return example_for(schema[key][0], depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {name: example_for(sub, depth + 1) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example_for(schema.get("items") or {}, depth + 1) for _ in range(max(schema.get("minItems", 1), 1))]
    if kind == "integer":
        return max(int(schema.get("minimum", 0)), 0) if "minimum" in schema else 0
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    return None if kind == "null" else "example"


MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
SMALL_BODY = 256 * 1024          # bodies up to this are parsed to echo the prompt; larger are skimmed
CACHE_BODY = 16 * 1024           # answers are a pure function of (path, body): a benchmark repeats
CACHE_ENTRIES = 1024             # the same few bodies, so small ones are answered from this cache
_cache: dict = {}

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"}


# -- answers ----------------------------------------------------------------------------------------
def _text_of_openai(content) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")


def _last_user(items, text_of) -> str:
    for item in reversed(items or []):
        if isinstance(item, dict) and item.get("role") == "user":
            return text_of(item)
    return ""


def _text(prompt: str, schema, json_mode: bool) -> str:
    if schema is not None:
        return json.dumps(example_for(schema))
    if json_mode:
        return json.dumps({"echo": prompt[:200]})
    return "Echo: " + prompt[:2000]


TOOL_CALL_ID = "call_bench_0"


def wants_tool_call(body: dict) -> bool:
    """As a model would: offered tools and not yet given a result, it calls the first one."""
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    return bool(body.get("tools")) and body.get("tool_choice") != "none" and last.get("role") != "tool"


def _tool_call(body: dict) -> dict:
    fn = (body["tools"][0] or {}).get("function") or {}
    arguments = json.dumps(example_for(fn.get("parameters")), separators=(",", ":"))
    return {"id": TOOL_CALL_ID, "type": "function",
            "function": {"name": fn.get("name", "tool"), "arguments": arguments}}


def openai_answer(body: dict) -> dict:
    if wants_tool_call(body):
        return {"id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model") or "gpt-4o", "system_fingerprint": "fp_bench",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": None,
                                                     "annotations": [], "tool_calls": [_tool_call(body)]},
                             "logprobs": None, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}}
    rf = body.get("response_format") or {}
    schema = (rf.get("json_schema") or {}).get("schema") if rf.get("type") == "json_schema" else None
    prompt = _last_user(body.get("messages"), lambda m: _text_of_openai(m.get("content")))
    return {"id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or "gpt-4o", "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "message": {"role": "assistant", "refusal": None, "annotations": [],
                                                 "content": _text(prompt, schema, rf.get("type") == "json_object")},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}


def anthropic_answer(body: dict) -> dict:
    def text_of(m):
        c = m.get("content")
        return c if isinstance(c, str) else " ".join(b.get("text", "") for b in c or [] if b.get("type") == "text")
    base = {"id": "msg_bench", "type": "message", "role": "assistant", "model": body.get("model"),
            "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 7}}
    tools = body.get("tools") or []
    if tools:
        return {**base, "stop_reason": "tool_use", "content": [
            {"type": "tool_use", "id": "toolu_bench", "name": tools[0].get("name", "tool"),
             "input": example_for(tools[0].get("input_schema"))}]}
    fmt = (body.get("output_config") or {}).get("format") or {}
    text = _text(_last_user(body.get("messages"), text_of), fmt.get("schema"), False)
    return {**base, "stop_reason": "end_turn", "content": [{"type": "text", "text": text}]}


def gemini_answer(body: dict, model: str) -> dict:
    def text_of(c):
        return " ".join(p.get("text", "") for p in c.get("parts", []) if isinstance(p, dict) and "text" in p)
    cfg = body.get("generationConfig") or {}
    schema = cfg.get("responseJsonSchema")
    text = _text(_last_user(body.get("contents"), text_of), schema,
                 cfg.get("responseMimeType") == "application/json")
    return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19},
            "modelVersion": model, "responseId": "bench-response-id"}


def openai_stream_events(body: dict) -> list[list[bytes]]:
    """The `data:` events of a streamed Chat Completion, shaped as OpenAI's (a role chunk with empty
    content, one chunk a word, a finish chunk, the usage chunk when `stream_options.include_usage`,
    `[DONE]`), grouped by when they leave: the first content event with the role chunk, each later
    one `stream_gap_ms` after the one before, the closing events with the last."""
    whole = openai_answer({k: v for k, v in body.items() if k != "stream"})
    model = whole["model"]

    def chunk(delta: dict | None, finish=None, usage=None) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        data = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": whole["created"],
                "model": model, "system_fingerprint": "fp_bench", "choices": choices, "usage": usage}
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    message = whole["choices"][0]["message"]
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        first = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
        groups = [[chunk({"role": "assistant", "content": None, "tool_calls": [{"index": 0, **first}],
                          "refusal": None})],
                  [chunk({"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]})]]
        finish = "tool_calls"
    else:
        words = re.findall(r"\S+\s*", message["content"]) or [""]
        groups = [[chunk({"role": "assistant", "content": "", "refusal": None}), chunk({"content": words[0]})]]
        groups += [[chunk({"content": w})] for w in words[1:]]
        finish = "stop"
    groups[-1].append(chunk({}, finish))
    if (body.get("stream_options") or {}).get("include_usage"):
        groups[-1].append(chunk(None, usage=whole["usage"]))
    groups[-1].append(b"data: [DONE]\n\n")
    return groups


def stream_pieces(groups: list[list[bytes]], keep_alive: bool) -> list[bytes]:
    """The HTTP answer of a stream, one piece per group: chunked transfer coding, as OpenAI's."""
    head = ("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n"
            + ("" if keep_alive else "Connection: close\r\n") + "\r\n").encode("latin-1")
    pieces = [b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in group) for group in groups]
    pieces[0] = head + pieces[0]
    pieces[-1] += b"0\r\n\r\n"
    return pieces


EMBEDDING_DIMENSIONS = 1536       # text-embedding-3-small's


def embeddings_answer(body: dict) -> dict:
    """Vectors seeded by each input's text, rounded as OpenAI's are, so answers have a real size."""
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else inputs if isinstance(inputs, list) else []
    size = body.get("dimensions") or EMBEDDING_DIMENSIONS
    data = []
    for i, item in enumerate(inputs):
        rng = random.Random(json.dumps(item))
        data.append({"object": "embedding", "index": i, "embedding": [round(rng.uniform(-0.1, 0.1), 9)
                                                                         for _ in range(size)]})
    tokens = sum(max(1, len(str(item)) // 4) for item in inputs)
    return {"object": "list", "data": data, "model": body.get("model") or "text-embedding-3-small",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def answer(path: str, raw: bytes) -> tuple[int, dict | list]:
    """(status, JSON body) for a provider request, or (200, event groups) for a streamed Chat
    Completion. Large bodies (images) are not parsed."""
    if len(raw) <= SMALL_BODY:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return 400, {"error": {"message": "fake provider: body is not JSON", "type": "invalid_request_error"}}
        if not isinstance(body, dict):
            body = {}
    else:
        body = {"model": None}
    if path.endswith("/chat/completions"):
        return 200, openai_stream_events(body) if body.get("stream") is True else openai_answer(body)
    if path.endswith("/embeddings"):
        return 200, embeddings_answer(body)
    if path.endswith("/v1/messages"):
        return 200, anthropic_answer(body)
    if ":generateContent" in path:
        return 200, gemini_answer(body, path.rsplit("/", 1)[-1].split(":")[0])
    return 404, {"error": {"message": f"fake provider: unknown path {path}"}}


def _json_or_text(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def response_bytes(status: int, payload, keep_alive: bool) -> bytes:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\n" + ("" if keep_alive else "Connection: close\r\n") + "\r\n")
    return head.encode("latin-1") + raw


# -- the server -------------------------------------------------------------------------------------
class Stats:
    SEEN = 16

    def __init__(self):
        self.latency_ms = 0
        self.stream_gap_ms = 0
        self.reset()

    def reset(self):
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.connections = getattr(self, "connections", 0)
        self.peak_connections = self.connections
        self.bytes_in = 0
        self.seen: dict[bytes, None] = {}      # distinct small bodies, in arrival order

    def see(self, body: bytes) -> None:
        if len(self.seen) < self.SEEN and len(body) <= CACHE_BODY:
            self.seen[body] = None

    def as_dict(self) -> dict:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {"requests": self.requests, "in_flight": self.in_flight, "peak_in_flight": self.peak_in_flight,
                "connections": self.connections, "peak_connections": self.peak_connections,
                "bytes_in": self.bytes_in, "cpu_s": round(ru.ru_utime + ru.ru_stime, 4),
                "latency_ms": self.latency_ms, "stream_gap_ms": self.stream_gap_ms, "pid": os.getpid()}


class Connection(asyncio.Protocol):
    """One keep-alive connection. Answers leave in request order, each no sooner than its due time."""

    def __init__(self, stats: Stats, loop: asyncio.AbstractEventLoop):
        self.stats = stats
        self.loop = loop
        self.buf = bytearray()
        self.head = None            # (method, path, keep_alive, content_length) while reading a body
        self.queue: collections.deque = collections.deque()   # [due, bytes, ends_an_answer, close]
        self.timer = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        s = self.stats
        s.connections += 1
        s.peak_connections = max(s.peak_connections, s.connections)

    def connection_lost(self, exc):
        self.stats.connections -= 1
        if self.timer is not None:
            self.timer.cancel()
        self.stats.in_flight -= sum(1 for item in self.queue if item[2])   # answers not finished
        self.queue.clear()

    def data_received(self, data: bytes):
        self.buf += data
        self.stats.bytes_in += len(data)
        while True:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEAD:
                        self._fail(400)
                    return
                if not self._parse_head(bytes(self.buf[:end])):
                    return
                del self.buf[:end + 4]
            method, path, keep_alive, length = self.head
            if len(self.buf) < length:
                return
            body = bytes(self.buf[:length])
            del self.buf[:length]
            self.head = None
            self._handle(method, path, body, keep_alive)
            if not keep_alive:
                return

    def _parse_head(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        try:
            method, target, version = lines[0].decode("latin-1").split(" ", 2)
        except ValueError:
            self._fail(400)
            return False
        length, keep_alive = 0, version == "HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip() or 0)
            elif name == b"connection":
                v = value.strip().lower()
                keep_alive = v != b"close" if version == "HTTP/1.1" else v == b"keep-alive"
            elif name == b"transfer-encoding":
                self._fail(400)     # no client of ours sends chunked bodies
                return False
        if length > MAX_BODY:
            self._fail(413)
            return False
        self.head = (method, target.split("?", 1)[0], keep_alive, length)
        return True

    def _fail(self, status: int):
        self.transport.write(response_bytes(status, {"error": {"message": _REASONS.get(status, "error")}}, False))
        self.transport.close()

    def _handle(self, method: str, path: str, body: bytes, keep_alive: bool):
        s = self.stats
        if path.startswith("/_fake/"):
            return self._send_now(self._control(method, path, body), keep_alive)
        if method != "POST":
            return self._send_now(response_bytes(405, {"error": {"message": "POST only"}}, keep_alive), keep_alive)
        s.requests += 1
        s.in_flight += 1
        s.peak_in_flight = max(s.peak_in_flight, s.in_flight)
        s.see(body)
        key = (path, body, keep_alive) if len(body) <= CACHE_BODY else None
        pieces = _cache.get(key) if key else None
        if pieces is None:
            status, payload = answer(path, body)
            pieces = (stream_pieces(payload, keep_alive) if isinstance(payload, list)
                      else [response_bytes(status, payload, keep_alive)])
            if key:
                if len(_cache) >= CACHE_ENTRIES:
                    _cache.clear()
                _cache[key] = pieces
        due = self.loop.time() + s.latency_ms / 1000.0
        for i, data in enumerate(pieces):      # a stream's pieces leave stream_gap_ms apart
            last = i == len(pieces) - 1
            self.queue.append([due + i * s.stream_gap_ms / 1000.0, data, last, last and not keep_alive])
        self._pump()

    def _control(self, method: str, path: str, body: bytes) -> bytes:
        s = self.stats
        if path == "/_fake/stats":
            return response_bytes(200, s.as_dict(), True)
        if path == "/_fake/config" and method == "POST":
            cfg = json.loads(body or b"{}")
            s.latency_ms = max(0, int(cfg.get("latency_ms", s.latency_ms)))
            s.stream_gap_ms = max(0, int(cfg.get("stream_gap_ms", s.stream_gap_ms)))
            return response_bytes(200, s.as_dict(), True)
        if path == "/_fake/seen":
            return response_bytes(200, {"bodies": [_json_or_text(b) for b in s.seen]}, True)
        if path == "/_fake/reset" and method == "POST":
            s.reset()
            return response_bytes(200, s.as_dict(), True)
        return response_bytes(404, {"error": {"message": "unknown control route"}}, True)

    def _send_now(self, data: bytes, keep_alive: bool):
        self.queue.append([0.0, data, False, not keep_alive])
        self._pump()

    def _pump(self):
        """Write every answer at the head of the queue whose time has come; re-arm the timer."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, data, counted, close = self.queue.popleft()
            if counted:
                self.stats.in_flight -= 1
            if self.transport.is_closing():
                continue
            self.transport.write(data)
            if close:
                self.transport.close()
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._pump)


async def serve(host: str, port: int, latency_ms: int, ready_fd=None) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    stats.latency_ms = latency_ms
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = await loop.create_server(lambda: Connection(stats, loop), sock=sock, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fake_provider", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8900, help="0 picks a free port (printed as READY <port>)")
    ap.add_argument("--latency-ms", type=int, default=0)
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("the bench fake provider listens on loopback only", file=sys.stderr)
        return 2
    _raise_nofile()
    asyncio.run(serve(args.host, args.port, args.latency_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
