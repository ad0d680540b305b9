"""Gemini embeddings (`POST {base}/v1beta/models/{model}:batchEmbedContents`): pure build and parse;
errors are generateContent's (gemini).

Wire facts relied on (../shared/specs/gemini/generative_service.proto BatchEmbedContentsRequest,
EmbedContentRequest, BatchEmbedContentsResponse): each request names the model as `models/{model}`
and embeds the text `parts` of its `content`; `taskType` says what the vectors are for (one string is
taken as a search query, RETRIEVAL_QUERY, a list as documents to store, RETRIEVAL_DOCUMENT: the two
sides of the retrieval n8n's vector stores do); `outputDimensionality` truncates the vector;
`embeddings` come back in request order, with no token usage. A batch holds at most 100 requests:
the API refuses more with "BatchEmbedContentsRequest.requests: at most 100 requests can be in one
batch" (quoted in langchain-ai/langchainjs issue 4491; not in the proto).
"""
from __future__ import annotations

from urllib.parse import quote

from app.calls import Embed, Embedded, Usage
from app.errors import InvalidProviderResponse, ValidationError
from app.http import HttpRequest, HttpResponse, Plan, drop_none
from app.providers.common import json_object
from app.providers.gemini import parse_error

MAX_INPUTS = 100
MAX_REQUEST_TOKENS = None

__all__ = ["MAX_INPUTS", "MAX_REQUEST_TOKENS", "build_request", "parse_error", "parse_response"]


def build_request(embed: Embed, target) -> Plan:
    if embed.tokens:
        raise ValidationError(f"{target.model.id} embeds text only: token arrays are OpenAI-only.",
                              fields={"input": "token arrays"})
    name = f"models/{target.model.name}"
    task = "RETRIEVAL_QUERY" if embed.query else "RETRIEVAL_DOCUMENT"
    body = {"requests": [drop_none({"model": name, "content": {"parts": [{"text": text}]}, "taskType": task,
                                    "outputDimensionality": embed.dimensions}) for text in embed.texts]}
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if target.api_key:
        headers["x-goog-api-key"] = target.api_key
    url = f"{target.base_url}/v1beta/models/{quote(target.model.name, safe='-._~')}:batchEmbedContents"
    return Plan(HttpRequest("POST", url, headers=headers, json=body, secrets=target.secrets))


def parse_response(resp: HttpResponse, embed: Embed, target) -> Embedded:
    provider = target.provider.name
    body = json_object(resp, provider)
    embeddings = body.get("embeddings")
    if not isinstance(embeddings, list) or len(embeddings) != embed.count:
        if "error" in body:
            raise parse_error(resp, target)
        raise InvalidProviderResponse(f"{provider} answered {len(embeddings) if isinstance(embeddings, list) else 'no'}"
                                      f" embeddings for {embed.count} inputs.", provider=provider, retryable=True)
    vectors = []
    for item in embeddings:
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list) or not values or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in values):
            raise InvalidProviderResponse(f"{provider} answered a malformed embedding.", provider=provider,
                                          retryable=True)
        vectors.append([float(x) for x in values])
    return Embedded(tuple(vectors), Usage(reported=False), target.model.name)
