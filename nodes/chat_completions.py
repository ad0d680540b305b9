"""POST /v1/chat/completions and GET /v1/models: OpenAI's Chat Completions API in front of every
provider, so OpenAI SDKs, n8n's OpenAI / AI Agent nodes and LangChain get routing, fallbacks,
limits and the ledger by pointing their base URL here. Auth: a flowcall API key as
`Authorization: Bearer <key>` (what those clients send as their "OpenAI API key").

The one exception to flowcall's error envelope: errors here are OpenAI's
`{"error": {message, type, param, code}}` with the same HTTP status flowcall uses elsewhere, so SDKs
raise their usual exceptions (401 AuthenticationError, 400 BadRequestError, 429 RateLimitError...).
This blueprint's error handlers take precedence over the app's for its own routes.

`stream: true` answers with server-sent `chat.completion.chunk` events taken from the provider's own
stream (app/streaming.py), tool calls as `delta.tool_calls` pieces. Retries and fallbacks run until the first text is ready, before anything
is sent, so a failure up to then is an ordinary HTTP error. After the first byte a failure ends the
stream with `data: {"error": {...}}` (OpenAI's SDKs raise it as APIError) and no `[DONE]`.
"""
from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context
from werkzeug.exceptions import HTTPException

from app import openai_compat as compat
from app import streaming
from app.auth import api_key_from_bearer, authenticate_api_key
from app.errors import (FlowcallError, NotFound, Unauthorized, ValidationError, from_http_exception,
                        http_exception_headers)
from app.idempotency import Replay
from app.openapi import CALL_ERRORS, doc
from app.schemas import call_from_body, parse_json_body

from ._common import idempotency_key, read_body, services

log = logging.getLogger(__name__)
bp = Blueprint("openai_compat", __name__)
ENDPOINT = "openai_chat_completions"

# -- the OpenAPI declarations (OpenAI's own shapes, abridged; errors are its ErrorResponse, not the Error
# envelope the other endpoints answer with, so they are described rather than listed) -------------
_ERRORS_TEXT = ("Errors are OpenAI's ErrorResponse, {\"error\": {message, type, param, code}}, with flowcall's "
                "usual HTTP statuses (400, 401, 402, 409, 413, 422, 429, 502, 503, 504) and an "
                "`x-should-retry` header that OpenAI's SDKs obey.")
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


# -- errors in OpenAI's shape -----------------------------------------------------------------------
def _error_response(err: FlowcallError) -> Response:
    response = jsonify(compat.error_body(err, g.get("request_id")))
    response.status_code = err.status
    response.headers.update(compat.error_headers(err))
    return response


@bp.errorhandler(FlowcallError)
def _flowcall_error(err: FlowcallError):
    return _error_response(err)


@bp.errorhandler(HTTPException)
def _http_error(err: HTTPException):
    response = _error_response(from_http_exception(err, current_app.config.get("MAX_CONTENT_LENGTH")))
    response.headers.update(http_exception_headers(err))
    return response


@bp.errorhandler(Exception)
def _unexpected(err: Exception):
    log.exception("unhandled error")
    return _error_response(FlowcallError("Internal error; the request id identifies it in our logs."))


# -- auth ---------------------------------------------------------------------------------------------
def _principal():
    presented = api_key_from_bearer(request.headers)
    if not presented:
        raise Unauthorized("Send your flowcall API key as Authorization: Bearer <key> (the OpenAI SDKs' api_key).",
                           code="missing_api_key")
    return authenticate_api_key(presented, services().store)


# -- routes -------------------------------------------------------------------------------------------
@bp.post("/v1/chat/completions")
@doc(summary="OpenAI Chat Completions (OpenAI SDKs, n8n OpenAI nodes, LangChain)", tags=("openai",),
     auth="bearer_key", request=compat.ChatCompletionRequestSchema, response=COMPLETION_SCHEMA, idempotent=True,
     request_example=REQUEST_EXAMPLE, errors=CALL_ERRORS, error_schema="OpenAIError",
     description="Any model flowcall routes to, as OpenAI's Chat Completions API; the module docstring of "
                 "app/openai_compat.py says what happens to each request field. With `stream: true` the answer "
                 "is server-sent `chat.completion.chunk` events ending in `data: [DONE]`; a failure after the "
                 "first event is a `data: {\"error\": ...}` event. " + _ERRORS_TEXT)
def chat_completions():
    svc = services()
    principal = _principal()
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
    if outcome.answer is not None:
        g.upstream_ms = outcome.answer.upstream_ms
    response = jsonify(outcome.body)
    response.status_code = outcome.status
    if outcome.replayed:
        response.headers["Idempotent-Replay"] = "true"
    return response


def _stream(principal, raw: dict, chat: compat.ChatRequest, make_call, render, key, created: int) -> Response:
    started = streaming.start(services().gateway, services().streaming, principal, ENDPOINT, raw,
                              make_call, render, idempotency_key=key)
    if isinstance(started, Replay):
        response = _event_stream(iter(compat.replay_events(started.body, chat.include_usage)))
        response.headers["Idempotent-Replay"] = "true"
        return response
    g.upstream_ms = started.opened.upstream_ms
    writer = compat.ChunkWriter(compat.completion_id(g.request_id), created, started.model_id, chat.include_usage)
    response = _event_stream(_events(started, writer, chat.warnings, g.request_id))
    response.call_on_close(started.close)       # a client gone before the first chunk still settles
    return response


def relay(metered: streaming.MeteredStream, emit, fail, request_id):
    """Yield `emit(piece)`'s events for each piece of the stream; a failure, once the status line
    is sent, can only be an event: `fail(error_body)`'s. -> whether the stream finished."""
    pieces = iter(metered)
    try:
        for piece in pieces:
            yield from emit(piece)
    except FlowcallError as err:
        yield fail(compat.error_body(err, request_id))
        return False
    except Exception:  # noqa: BLE001 - the status line is sent: the error can only be an event
        log.exception("stream failed")
        yield fail(compat.error_body(FlowcallError("Internal error while streaming."), request_id))
        return False
    finally:
        pieces.close()
    return True


def _events(metered: streaming.MeteredStream, writer: compat.ChunkWriter, warnings, request_id):
    yield writer.role()
    emit = lambda piece: (writer.content(piece) if isinstance(piece, str) else writer.tool_call(piece),)  # noqa: E731
    if (yield from relay(metered, emit, compat.sse, request_id)):
        yield from writer.answer(metered.answer, warnings)


def _event_stream(events) -> Response:
    response = Response(stream_with_context(events), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"        # proxies: pass each event on as it comes
    return response


@bp.get("/v1/models")
@doc(summary="OpenAI model list: auto and the models of the providers configured here", tags=("openai",),
     auth="bearer_key", response=MODEL_LIST_SCHEMA, description=_ERRORS_TEXT, errors=(401,),
     error_schema="OpenAIError")
def list_models():
    _principal()
    svc = services()
    return jsonify(compat.model_list(svc.catalog, svc.settings))


@bp.get("/v1/models/<model_id>")
@bp.get("/v1/models/<owner>/<name>")        # catalog ids with a slash: groq.openai/gpt-oss-120b
@doc(summary="OpenAI model: one catalog model by id or alias", tags=("openai",), auth="bearer_key",
     response=MODEL_SCHEMA, description=_ERRORS_TEXT, errors=(400, 401, 404), error_schema="OpenAIError")
def retrieve_model(model_id: str | None = None, owner: str | None = None, name: str | None = None):
    _principal()
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
