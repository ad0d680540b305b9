"""POST /v1/chat/completions and GET /v1/models: OpenAI's Chat Completions API in front of every
provider, so OpenAI SDKs, n8n's OpenAI / AI Agent nodes and LangChain get routing, fallbacks,
limits and the ledger by pointing their base URL here. Auth: a flowcall API key as
`Authorization: Bearer <key>` (what those clients send as their "OpenAI API key").

The one exception to flowcall's error envelope: errors here are OpenAI's
`{"error": {message, type, param, code}}` with the same HTTP status flowcall uses elsewhere, so SDKs
raise their usual exceptions (401 AuthenticationError, 400 BadRequestError, 429 RateLimitError...).
This blueprint's error handlers (nodes/openai_surface.py) take precedence over the app's for its own routes.

`stream: true` answers with server-sent `chat.completion.chunk` events taken from the provider's own
stream (app/streaming.py), tool calls as `delta.tool_calls` pieces. Retries and fallbacks run until
the first text is ready, before anything is sent, so a failure up to then is an ordinary HTTP error.
After the first byte a failure ends the stream with `data: {"error": {...}}` (OpenAI's SDKs raise it
as APIError) and no `[DONE]`.
"""
from __future__ import annotations

import time

from flask import Blueprint, Response, g, jsonify

from app.openai_api import chat_completions as compat
from app import streaming
from app.openai_api.chat_completions_schema import ChatCompletionRequestSchema
from app.errors import NotFound, ValidationError
from app.tenancy.idempotency import Replay
from app.openapi import CALL_ERRORS, doc
from app.json_body import parse_json_body
from app.schemas import call_from_body

from ._common import idempotency_key, outcome_response, read_body, services
from .openai_surface import ERRORS_TEXT, bearer_principal, event_stream, relay, use_openai_errors

bp = Blueprint("chat_completions", __name__)
ENDPOINT = "openai_chat_completions"

# -- the OpenAPI declarations (OpenAI's own shapes, abridged; errors are its ErrorResponse, not the Error
# envelope the other endpoints answer with, so they are described rather than listed) -------------
_USAGE = {"type": ["object", "null"], "properties": {k: {"type": "integer"} for k in
                                           ("prompt_tokens", "completion_tokens", "total_tokens")}}
COMPLETION_SCHEMA = {"type": "object", "description": "CreateChatCompletionResponse, plus `flowcall`", "properties": {
    "id": {"type": "string"}, "object": {"type": "string", "enum": ["chat.completion"]},
    "created": {"type": "integer"}, "model": {"type": "string", "description": "The catalog id that served the call"},
    "choices": {"type": "array", "items": {"type": "object", "properties": {
        "index": {"type": "integer"},
        "message": {"type": "object", "properties": {"role": {"type": "string", "enum": ["assistant"]},
                                                     "content": {"type": ["string", "null"]},
                                                     "refusal": {"type": ["string", "null"]}}},
        "finish_reason": {"type": "string", "enum": ["stop", "length", "content_filter", "tool_calls"]}}}},
    "usage": _USAGE,
    "flowcall": {"type": "object", "description": "request_id, provider, provider_model, finish_reason, cost, "
                                                  "latency_ms, routing, warnings"}}}
MODEL_SCHEMA = {"type": "object", "properties": {
    "id": {"type": "string"}, "object": {"type": "string", "enum": ["model"]}, "created": {"type": "integer"},
    "owned_by": {"type": "string"}, "shutdown_date": {"type": ["string", "null"]}}}
MODEL_LIST_SCHEMA = {"type": "object", "properties": {"object": {"type": "string", "enum": ["list"]},
                                                      "data": {"type": "array", "items": MODEL_SCHEMA}}}
REQUEST_EXAMPLE = {"model": "openai.gpt-4o",
                   "messages": [{"role": "user", "content": "What is the capital of France?"}],
                   "temperature": 0.2, "max_tokens": 256, "fallbacks": ["anthropic.claude-sonnet-4-6"]}


use_openai_errors(bp)


# -- routes -------------------------------------------------------------------------------------------
@bp.post("/v1/chat/completions")
@doc(summary="OpenAI Chat Completions (OpenAI SDKs, n8n OpenAI nodes, LangChain)", tags=("openai",),
     auth="bearer_key", request=ChatCompletionRequestSchema, response=COMPLETION_SCHEMA, idempotent=True,
     request_example=REQUEST_EXAMPLE, errors=CALL_ERRORS, error_schema="OpenAIError",
     description="Any model flowcall routes to, as OpenAI's Chat Completions API; the module docstring of "
                 "app/openai_api/chat_completions.py says what happens to each request field. With "
                 "`stream: true` the answer is server-sent `chat.completion.chunk` events ending in "
                 "`data: [DONE]`; a failure after the first event is a `data: {\"error\": ...}` event. " + ERRORS_TEXT)
def chat_completions():
    svc = services()
    principal = bearer_principal()
    raw = parse_json_body(read_body())
    chat = compat.parse_request(raw)
    key = idempotency_key()
    created = int(time.time())
    structured = "response_format" in chat.body

    def make_call():
        call = call_from_body(chat.body, request_id=g.request_id, tenant_id=principal.tenant_id,
                              agent_id=principal.agent_id, key_id=principal.key_id,
                              max_image_bytes=svc.settings.max_image_bytes)
        return compat.with_default_limit(call, chat)

    def render(answer) -> dict:
        return compat.completion_body(answer, created=created, structured=structured, warnings=chat.warnings)

    if chat.stream:
        return _stream(principal, raw, chat, make_call, render, key, created)
    outcome = svc.gateway.run(principal, ENDPOINT, raw, make_call, render, idempotency_key=key)
    return outcome_response(outcome)


def _stream(principal, raw: dict, chat: compat.ChatRequest, make_call, render, key, created: int) -> Response:
    started = streaming.start(services().gateway, services().streaming, principal, ENDPOINT, raw,
                              make_call, render, idempotency_key=key)
    if isinstance(started, Replay):
        response = event_stream(iter(compat.replay_events(started.body, chat.include_usage)))
        response.headers["Idempotent-Replay"] = "true"
        return response
    g.upstream_ms = started.opened.upstream_ms
    writer = compat.ChunkWriter(compat.completion_id(g.request_id), created, started.model_id, chat.include_usage)
    response = event_stream(_events(started, writer, chat.warnings, g.request_id))
    response.call_on_close(started.close)       # a client gone before the first chunk still settles
    return response


def _events(metered: streaming.MeteredStream, writer: compat.ChunkWriter, warnings, request_id):
    yield writer.role()
    emit = lambda piece: (writer.content(piece) if isinstance(piece, str) else writer.tool_call(piece),)  # noqa: E731
    if (yield from relay(metered, emit, compat.sse, request_id)):
        yield from writer.answer(metered.answer, warnings)


@bp.get("/v1/models")
@doc(summary="OpenAI model list: auto and the models of the providers configured here", tags=("openai",),
     auth="bearer_key", response=MODEL_LIST_SCHEMA, description=ERRORS_TEXT, errors=(401,),
     error_schema="OpenAIError")
def list_models():
    bearer_principal()
    svc = services()
    return jsonify(compat.model_list(svc.catalog, svc.settings))


@bp.get("/v1/models/<model_id>")
@bp.get("/v1/models/<owner>/<name>")        # catalog ids with a slash: groq.openai/gpt-oss-120b
@doc(summary="OpenAI model: one catalog model by id or alias", tags=("openai",), auth="bearer_key",
     response=MODEL_SCHEMA, description=ERRORS_TEXT, errors=(400, 401, 404), error_schema="OpenAIError")
def retrieve_model(model_id: str | None = None, owner: str | None = None, name: str | None = None):
    bearer_principal()
    svc = services()
    model_id = model_id or f"{owner}/{name}"
    if model_id == "auto":
        return jsonify(compat.AUTO_MODEL)
    try:
        model = svc.catalog.lookup(model_id)
    except ValidationError:
        model = None
    if model is None or not model.known or not svc.settings.is_configured(svc.catalog.providers[model.provider]):
        raise NotFound(f"The model {model_id!r} does not exist or is not available on this server.",
                       code="model_not_found")
    return jsonify(compat.model_object(model))
