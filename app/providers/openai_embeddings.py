"""OpenAI embeddings (`POST {base}/embeddings`), for OpenAI and every OpenAI-compatible server that
serves it (Ollama's /v1/embeddings): pure build and parse; errors are Chat Completions' (openai_chat).

Wire facts relied on (../shared/specs/openai/openapi.yaml CreateEmbeddingRequest/Response): `input`
is a string, strings, or token arrays, at most 2048 of them and 300,000 tokens a request; `dimensions`
only for text-embedding-3 and later; we always ask for `float` (the caller's base64 is ours to write,
so vectors are decoded once, here, whatever the server's default); `data[].index` orders the answer.
"""
from __future__ import annotations

from app.calls import Embed, Embedded, Usage
from app.errors import InvalidProviderResponse
from app.http import HttpRequest, HttpResponse, Plan, drop_none
from app.providers.common import int_or_zero, json_object
from app.providers.openai_chat import parse_error

MAX_INPUTS = 2048
MAX_REQUEST_TOKENS = 300_000

__all__ = ["MAX_INPUTS", "MAX_REQUEST_TOKENS", "build_request", "parse_error", "parse_response"]


def build_request(embed: Embed, target) -> Plan:
    inputs = [list(t) for t in embed.tokens] if embed.tokens else list(embed.texts)
    body = drop_none({"model": target.model.name, "input": inputs, "encoding_format": "float",
                      "dimensions": embed.dimensions, "user": embed.user})
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    return Plan(HttpRequest("POST", f"{target.base_url}/embeddings", headers=headers, json=body,
                            secrets=target.secrets))


def parse_response(resp: HttpResponse, embed: Embed, target) -> Embedded:
    provider = target.provider.name
    body = json_object(resp, provider)
    data = body.get("data")
    if not isinstance(data, list) or len(data) != embed.count:
        if "error" in body:
            raise parse_error(resp, target)
        raise InvalidProviderResponse(f"{provider} answered {len(data) if isinstance(data, list) else 'no'} "
                                      f"embeddings for {embed.count} inputs.", provider=provider, retryable=True)
    vectors: list = [None] * embed.count
    for position, item in enumerate(data):
        index = item.get("index", position) if isinstance(item, dict) else None
        vector = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < embed.count or vectors[index] is not None \
                or not _is_vector(vector):
            raise InvalidProviderResponse(f"{provider} answered a malformed embedding.", provider=provider,
                                          retryable=True)
        vectors[index] = [float(x) for x in vector]
    raw_usage = body.get("usage")
    usage = Usage(input_tokens=int_or_zero(raw_usage.get("prompt_tokens"))) if isinstance(raw_usage, dict) \
        else Usage(reported=False)
    model = body.get("model") if isinstance(body.get("model"), str) else target.model.name
    return Embedded(tuple(vectors), usage, model)


def _is_vector(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
