"""POST /v1/embeddings: OpenAI's Embeddings API in front of every provider that embeds, so n8n's
Embeddings OpenAI node, the OpenAI SDKs and LangChain get flowcall's ledger, limits and fallbacks
by pointing their base URL here. Auth and errors as /v1/chat/completions (nodes/openai_surface.py).

`encoding_format: base64` (the SDKs' default, which they decode) is answered exactly as OpenAI does:
each vector's little-endian float32 bytes, base64-encoded (app/embeddings.base64_vector)."""
from __future__ import annotations

from flask import Blueprint, g

from app.embedding_mode import Embedding
from app.embeddings import embedding_call, openai_body, parse_request
from app.json_body import parse_json_body
from app.openapi import CALL_ERRORS, doc

from ._common import idempotency_key, outcome_response, read_body, services
from .embeddings import REQUEST_SCHEMA
from .openai_surface import ERRORS_TEXT, bearer_principal, use_openai_errors

bp = Blueprint("openai_embeddings", __name__)
ENDPOINT = "openai_embeddings"

RESPONSE_SCHEMA = {"type": "object", "description": "CreateEmbeddingResponse, plus `flowcall`", "properties": {
    "object": {"type": "string", "enum": ["list"]},
    "data": {"type": "array", "items": {"type": "object", "properties": {
        "object": {"type": "string", "enum": ["embedding"]}, "index": {"type": "integer"},
        "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}},
                                {"type": "string", "description": "base64 of little-endian float32"}]}}}},
    "model": {"type": "string", "description": "The catalog id that made every vector"},
    "usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer"},
                                               "total_tokens": {"type": "integer"}}},
    "flowcall": {"type": "object", "description": "request_id, provider, provider_model, cost, latency_ms, warnings"}}}

use_openai_errors(bp)


@bp.post("/v1/embeddings")
@doc(summary="OpenAI Embeddings (OpenAI SDKs, n8n's Embeddings OpenAI node, LangChain)", tags=("openai",),
     auth="bearer_key", request=REQUEST_SCHEMA, response=RESPONSE_SCHEMA, idempotent=True, errors=CALL_ERRORS,
     error_schema="OpenAIError",
     request_example={"model": "text-embedding-3-small", "input": ["The Eiffel Tower is in Paris."],
                      "encoding_format": "float"},
     description="Any embedding model flowcall routes to, as OpenAI's Embeddings API. " + ERRORS_TEXT)
def create_embeddings():
    svc = services()
    principal = bearer_principal()
    raw = parse_json_body(read_body())
    request = parse_request(raw)

    def make_call():
        return embedding_call(request, request_id=g.request_id, tenant_id=principal.tenant_id,
                              agent_id=principal.agent_id, key_id=principal.key_id)

    outcome = svc.gateway.run(principal, ENDPOINT, raw, make_call,
                              lambda answer: openai_body(answer, request.encoding),
                              idempotency_key=idempotency_key(), mode=Embedding())
    return outcome_response(outcome)
