"""What each scenario sends, on each path, and how it loads the server.

Every scenario is measured twice under the same load: `direct` (load generator -> fake provider,
with the body flowcall itself would send upstream) and `gateway` (load generator -> flowcall
POST /api/v3/llm/public/call -> fake provider). The difference is what flowcall adds.

Scenario (e) sends a batch of inputs to POST /v1/embeddings (Bearer key) instead, against the
fake's /embeddings directly on the other path. Scenarios (f) to (i) use the OpenAI-shaped routes the
same way: plain /v1/chat/completions (the baseline the others are compared with), the same streamed
(time to first token), a tool call and its result (two requests a round), and /v1/responses.

Scenario (c), the structured-output batch, is pluggable (`BATCH_DRIVERS`): today `fanout` sends the
batch as 20 concurrent json_schema calls; `endpoint` sends one POST /api/v3/llm/batch with the 20
items once that route exists (`--c-mode auto` probes for it).
"""
from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

CALL_PATH = "/api/v3/llm/public/call"
CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
BATCH_PATH = "/api/v3/llm/batch"
OPENAI_PATH = "/openai/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
OPENAI_EMBEDDINGS_PATH = "/openai/v1/embeddings"
EMBEDDING_MODEL = "text-embedding-3-small"
PROMPT = "What is the capital of France?"
V1_MODEL = "openai.gpt-4o"
V1_MAX_TOKENS = 4096              # what flowcall's /v1 routes send upstream when the caller sets no limit
# The first content a streamed answer carries (OpenAI's chunks, flowcall's and LiteLLM's): its role
# chunk has `"content":""`, so the first non-empty content string is the first token.
CHAT_FIRST_TOKEN = r'"content":\s*"[^"]'
WEATHER_QUESTION = "What is the weather in Paris?"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}
WEATHER_RESULT = '{"temperature_c":18,"sky":"clear"}'
PERSON_SCHEMA = {"type": "object",
                 "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "email": {"type": "string"}},
                 "required": ["name", "age", "email"], "additionalProperties": False}


@dataclass
class Load:
    mode: str                     # closed | open | burst
    connections: int = 1
    rate: float = 0.0             # open mode, requests/s
    burst: int = 0                # burst mode, requests per batch
    max_requests: int = 1000
    duration_s: float = 10.0
    timeout_s: float = 30.0
    expect: str = ""              # a 2xx body must contain this, else it counts as an error
    unique_header: str = ""       # a header sent with a fresh value on every request


@dataclass
class Scenario:
    name: str
    title: str
    upstream_ms: int
    load: Load
    direct_body: dict
    gateway_body: dict
    gateway_path: str = CALL_PATH
    direct_path: str = OPENAI_PATH
    bearer: bool = False              # the gateway takes the key as `Authorization: Bearer` (the /v1 routes)
    direct_load: Load | None = None   # when the direct path is loaded differently (batch endpoint)
    batch_size: int = 0               # c_batch: calls per batch
    warmup: int = 0               # gateway requests sent before measuring (threads, pools, caches)
    targets: dict = field(default_factory=dict)
    note: str = ""
    turns: list = field(default_factory=list)   # more (direct, gateway) bodies each connection sends in turn
    ttft: str = ""                    # a regex over the answer bytes marking its first token (streams)
    stream_gap_ms: int = 0            # the fake's pause between a stream's content events
    peer_na: str = ""                 # why a peer gateway cannot run this scenario ("" when it can)

    def bodies(self) -> tuple[list[dict], list[dict]]:
        """(direct bodies, gateway bodies), in the order a connection sends them."""
        return [self.direct_body, *(d for d, _ in self.turns)], [self.gateway_body, *(g for _, g in self.turns)]


def gateway_call(prompt: str = PROMPT, **extra) -> dict:
    return {"model": "openai.gpt-4o", "prompt": prompt, **extra}


def openai_request(content, **extra) -> dict:
    """The body flowcall sends to OpenAI for gpt-4o (what the direct path sends to the fake)."""
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], "temperature": 0.7,
            "max_completion_tokens": 1000, **extra}


def v1_chat(messages: list[dict], **extra) -> tuple[dict, dict]:
    """(what flowcall sends OpenAI, what a client sends flowcall's /v1/chat/completions)."""
    return (openai_request(None, max_completion_tokens=V1_MAX_TOKENS, **extra) | {"messages": messages},
            {"model": V1_MODEL, "messages": messages, **extra})


def stream_bodies() -> tuple[dict, dict]:
    direct, gateway = v1_chat([{"role": "user", "content": PROMPT}])
    return direct | {"stream": True, "stream_options": {"include_usage": True}}, gateway | {"stream": True}


def tool_turns() -> list[tuple[dict, dict]]:
    """A tool-call round trip: the question with a tool (the fake calls it), then the same with the
    call and its result (the fake answers). The call's arguments are as flowcall hands them on."""
    asked = [{"role": "user", "content": WEATHER_QUESTION}]
    call = {"id": "call_bench_0", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "example"}'}}
    answered = asked + [{"role": "assistant", "content": None, "tool_calls": [call]},
                        {"role": "tool", "tool_call_id": "call_bench_0", "content": WEATHER_RESULT}]
    return [v1_chat(asked, tools=[WEATHER_TOOL]), v1_chat(answered, tools=[WEATHER_TOOL])]


def responses_bodies(store: bool) -> tuple[dict, dict]:
    """/v1/responses with a plain input: flowcall sends the provider the Chat Completion f_chat sends."""
    direct, _ = v1_chat([{"role": "user", "content": PROMPT}])
    return direct, {"model": V1_MODEL, "input": PROMPT, "store": store}


def structured_bodies() -> tuple[dict, dict]:
    prompt = "Extract person data from: John Doe, 30 years old, john@email.com"
    fmt = {"type": "json_schema", "json_schema": {"name": "person_data", "strict": True, "schema": PERSON_SCHEMA}}
    return (openai_request(prompt, response_format=fmt, temperature=0.1, max_completion_tokens=200),
            gateway_call(prompt, options={"temperature": 0.1, "maxTokens": 200},
                         context={"task": "extract_structure"}, response_format=fmt))


def image_bodies(megabytes: float) -> tuple[dict, dict]:
    """A PNG-signed payload of `megabytes` MB as a data URI (flowcall checks types by magic bytes)."""
    size = int(megabytes * 1024 * 1024)
    raw = b"\x89PNG\r\n\x1a\n" + random.Random(6).randbytes(size - 8)
    uri = "data:image/png;base64," + base64.b64encode(raw).decode("ascii")
    parts = [{"type": "text", "text": "Describe this image."}, {"type": "image_url", "image_url": {"url": uri}}]
    return openai_request(parts, max_completion_tokens=500), {"model": "openai.gpt-4o",
                                                              "messages": [{"role": "user", "content": parts}],
                                                              "options": {"maxTokens": 500}}


def embeddings_bodies(size: int) -> tuple[dict, dict]:
    """`size` distinct documents; flowcall sends OpenAI the same body it is given (float vectors)."""
    texts = [f"Document {i}: the Eiffel Tower is in Paris, and this is passage {i} of the corpus." for i in range(size)]
    body = {"model": EMBEDDING_MODEL, "input": texts, "encoding_format": "float"}
    return body, body


# -- scenario (c): how a batch is sent ----------------------------------------------------------------
class FanoutBatch:
    """A batch as N concurrent single calls (until flowcall has a batch endpoint)."""
    name = "fanout"

    def configure(self, scn: Scenario, size: int) -> None:
        scn.batch_size = size
        scn.load.mode, scn.load.burst = "burst", size
        scn.load.connections = size


class EndpointBatch:
    """A batch as one POST /api/v3/llm/batch {"items": [call, ...], "concurrency": N}: one request per batch."""
    name = "endpoint"

    def configure(self, scn: Scenario, size: int) -> None:
        scn.batch_size = size
        scn.direct_load = Load("burst", connections=size, burst=size, max_requests=scn.load.max_requests,
                               duration_s=scn.load.duration_s, timeout_s=scn.load.timeout_s)
        scn.gateway_path = BATCH_PATH
        scn.gateway_body = {"items": [scn.gateway_body] * size, "concurrency": size}
        scn.load.mode, scn.load.burst, scn.load.connections = "closed", 0, 1
        scn.load.expect = '"failed":0'       # a batch answers 200 even when items fail
        scn.load.max_requests = max(1, scn.load.max_requests // size)
        scn.note = "gateway side: one batch request per measurement; direct side: the batch's calls at once"


BATCH_DRIVERS = {"fanout": FanoutBatch, "endpoint": EndpointBatch}


def build(args) -> list[Scenario]:
    """The scenarios selected by the command line, with their loads."""
    n, dur = args.requests, args.duration
    direct_plain, gw_plain = openai_request(PROMPT), gateway_call()

    def v1_load() -> Load:
        return Load("closed", connections=args.v1_concurrency, max_requests=n or 10**7, duration_s=dur)
    out = {
        "a_rate": Scenario(
            "a_rate", f"upstream 0 ms, fixed rate {args.rate:g} requests/s (open loop)", 0,
            Load("open", connections=args.rate_connections, rate=args.rate,
                 max_requests=min(n, int(args.rate * dur)) if n else int(args.rate * dur), duration_s=dur),
            direct_plain, gw_plain, warmup=args.warmup,
            targets={"added_p50_ms": 1.0, "added_p99_ms": 5.0}),
        "a_max": Scenario(
            "a_max", f"upstream 0 ms, maximum throughput, {args.a_concurrency} connections (closed loop)", 0,
            Load("closed", connections=args.a_concurrency, max_requests=n or 10**7, duration_s=dur),
            direct_plain, gw_plain, warmup=args.warmup, targets={"gateway_rps": 1500.0}),
        "a_idem": Scenario(
            "a_idem", f"a_max with a fresh Idempotency-Key on every call, {args.a_concurrency} connections", 0,
            Load("closed", connections=args.a_concurrency, max_requests=n or 10**7, duration_s=dur,
                 unique_header="Idempotency-Key"),
            direct_plain, gw_plain, warmup=args.warmup,
            direct_load=Load("closed", connections=args.a_concurrency, max_requests=n or 10**7, duration_s=dur),
            note="compare its gateway calls/s with a_max's in the same run (target: within 10 %)"),
        "b_hold": Scenario(
            "b_hold", f"upstream {args.b_latency_ms} ms, {args.b_concurrency} concurrent clients (closed loop)",
            args.b_latency_ms,
            Load("closed", connections=args.b_concurrency, max_requests=n or 10**7, duration_s=dur,
                 timeout_s=max(30.0, args.b_latency_ms / 1000 * 5)),
            direct_plain, gw_plain, warmup=args.b_concurrency if args.warmup else 0,
            targets={"errors": 0, "added_p99_ms": 50.0, "peak_rss_mb": 400.0}),
        "c_batch": Scenario(
            "c_batch", f"structured-output batch of {args.c_size} json_schema calls, upstream {args.c_latency_ms} ms",
            args.c_latency_ms, Load("burst", max_requests=n or args.c_size * 25, duration_s=dur),
            *structured_bodies(), warmup=args.warmup),
        "d_image": Scenario(
            "d_image", f"{args.d_image_mb:g} MB image (data URI) to openai.gpt-4o, {args.d_concurrency} connections",
            0, Load("closed", connections=args.d_concurrency, max_requests=n or 40, duration_s=dur),
            *image_bodies(args.d_image_mb), warmup=min(args.warmup, 4)),
        "e_embed": Scenario(
            "e_embed", f"a batch of {args.e_size} inputs to /v1/embeddings ({EMBEDDING_MODEL}, float vectors), "
                       f"{args.e_concurrency} connections", 0,
            Load("closed", connections=args.e_concurrency, max_requests=n or 10**7, duration_s=dur),
            *embeddings_bodies(args.e_size), gateway_path=EMBEDDINGS_PATH, direct_path=OPENAI_EMBEDDINGS_PATH,
            bearer=True, warmup=min(args.warmup, 4)),
        "f_chat": Scenario(
            "f_chat", f"/v1/chat/completions, upstream 0 ms, {args.v1_concurrency} connections (closed loop)", 0,
            v1_load(), *v1_chat([{"role": "user", "content": PROMPT}]), gateway_path=CHAT_PATH, bearer=True,
            warmup=args.warmup),
        "g_stream": Scenario(
            "g_stream", f"/v1/chat/completions stream: true, fixed rate {args.g_rate:g} requests/s (open loop), "
                        f"first token at 0 ms then one word every {args.g_gap_ms} ms", 0,
            Load("open", connections=args.rate_connections, rate=args.g_rate,
                 max_requests=min(n, int(args.g_rate * dur)) if n else int(args.g_rate * dur), duration_s=dur),
            *stream_bodies(), gateway_path=CHAT_PATH, bearer=True, warmup=args.warmup, ttft=CHAT_FIRST_TOKEN,
            stream_gap_ms=args.g_gap_ms, targets={"added_ttft_p50_ms": 2.0}),
        "h_tools": Scenario(
            "h_tools", f"tool call round trip on /v1/chat/completions (the call, then its result), "
                       f"{args.v1_concurrency} connections (closed loop)", 0,
            v1_load(), *tool_turns()[0], gateway_path=CHAT_PATH, bearer=True, warmup=args.warmup,
            turns=tool_turns()[1:]),
        "i_responses": Scenario(
            "i_responses", f"/v1/responses, store {str(args.i_store).lower()}, {args.v1_concurrency} connections "
                           f"(closed loop)", 0,
            v1_load(), *responses_bodies(args.i_store), gateway_path=RESPONSES_PATH, bearer=True,
            warmup=args.warmup,
            peer_na="LiteLLM sends an openai/ model's Responses call to the provider's own /responses, "
                    "which the fake does not serve (flowcall translates it to Chat Completions)"),
    }
    chosen = [out[name] for name in args.scenarios]
    for scn in chosen:
        if scn.name == "c_batch":
            BATCH_DRIVERS[args.c_mode_resolved]().configure(scn, args.c_size)
    return chosen


def write_body(tmp: Path, name: str, body: dict) -> str:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(body, separators=(",", ":")))
    return str(path)
