"""POST /api/v3/llm/embeddings: vectors for HTTP-step users, as flat JSON in flowcall's envelope
(X-Api-Key, or a JWT with tenant headers, as the call endpoints). The body is OpenAI's
CreateEmbeddingRequest (app/embeddings.py reads it), so one body works here and at /v1/embeddings."""
from __future__ import annotations

from flask import Blueprint, g

from app.embedding_mode import Embedding
from app.embeddings import embedding_call, flat_body, parse_request
from app.json_body import parse_json_body
from app.openapi import CALL_ERRORS, doc

from ._common import either_auth, idempotency_key, outcome_response, read_body, services

bp = Blueprint("embeddings", __name__)
ENDPOINT = "embeddings"

REQUEST_SCHEMA = {"type": "object", "required": ["input", "model"], "properties": {
    "input": {"description": "A string, a list of strings, or token arrays (OpenAI models only)",
              "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}},
                        {"type": "array", "items": {"type": "integer"}},
                        {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}]},
    "model": {"type": "string", "description": "An embedding model (GET /api/v3/llm/models?capability=embeddings), "
                                               "or auto"},
    "dimensions": {"type": "integer", "minimum": 1},
    "encoding_format": {"type": "string", "enum": ["float", "base64"],
                        "description": "Taken for symmetry with /v1/embeddings; vectors here are float lists"},
    "user": {"type": "string"},
    "fallbacks": {"type": "array", "items": {"type": "string"}, "maxItems": 5,
                  "description": "Embedding models to try in order; one answer's vectors all come from one model"},
    "truncate": {"type": "boolean", "default": False,
                 "description": "Cut an input over the model's token limit to the limit, with a warning, "
                                "instead of answering 400"}}}
NODE_REQUEST_SCHEMA = {**REQUEST_SCHEMA, "properties": {**REQUEST_SCHEMA["properties"], "context": {
    "type": "object", "additionalProperties": False, "properties": {"task": {
        "type": "string", "description": "For model auto: embed (the default; the only task it takes here)"}}}}}
RESPONSE_SCHEMA = {"type": "object", "properties": {
    "success": {"type": "boolean"},
    "embeddings": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
    "model": {"type": "string"}, "provider": {"type": "string"},
    "usage": {"type": ["object", "null"], "properties": {"input_tokens": {"type": "integer"},
                                                        "total_tokens": {"type": "integer"}}},
    "cost": {"type": ["number", "null"]}, "latency_ms": {"type": "integer"},
    "warnings": {"type": "array", "items": {"type": "string"}}, "request_id": {"type": "string"}}}


@bp.post("/api/v3/llm/embeddings")
@doc(summary="Embed texts (vectors as flat JSON)", tags=("calls",), auth="either", request=NODE_REQUEST_SCHEMA,
     response=RESPONSE_SCHEMA, errors=CALL_ERRORS, idempotent=True,
     request_example={"model": "text-embedding-3-small", "input": ["The Eiffel Tower is in Paris."]})
def embeddings():
    svc = services()
    principal = either_auth()
    raw = parse_json_body(read_body())
    request = parse_request(raw, context=True)

    def make_call():
        return embedding_call(request, request_id=g.request_id, tenant_id=principal.tenant_id,
                              agent_id=principal.agent_id, key_id=principal.key_id)

    outcome = svc.gateway.run(principal, ENDPOINT, raw, make_call, flat_body, idempotency_key=idempotency_key(),
                              mode=Embedding())
    return outcome_response(outcome)
