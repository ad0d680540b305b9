"""POST /v1/responses and the stored-response routes: OpenAI's Responses API over the same core as
/v1/chat/completions (auth, errors in OpenAI's shape, metering, idempotency, streaming).

Translation lives in app/openai_api/responses.py, the per-tenant store in app/openai_api/response_store.py. A stored
response is saved once its answer is complete; `previous_response_id`, GET, DELETE and input_items
read only the caller's tenant's rows, so any other id is a 404.
"""
from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, g, jsonify, request

from app.openai_api import responses as api
from app.openai_api import responses_output as output
from app import streaming
from app.errors import NotFound, ValidationError
from app.tenancy.idempotency import Replay
from app.openapi import CALL_ERRORS, doc
from app.json_body import parse_json_body
from app.openai_api.responses_input import new_id

from ._common import idempotency_key, outcome_response, read_body, services
from .openai_surface import ERRORS_TEXT, bearer_principal, event_stream, relay, use_openai_errors

log = logging.getLogger(__name__)
# Its route declaration has the shape of nodes/chat_completions.py's (the two /v1 surfaces are declared
# alike on purpose; what they share at run time is nodes/openai_surface.py).
bp = Blueprint("openai_responses", __name__)
ENDPOINT = "openai_responses"
use_openai_errors(bp)

RESPONSE_SCHEMA = {"type": "object", "description": "OpenAI's Response object, plus `flowcall`", "properties": {
    "id": {"type": "string"}, "object": {"type": "string", "enum": ["response"]},
    "created_at": {"type": "integer"}, "status": {"type": "string", "enum": ["completed", "incomplete"]},
    "model": {"type": "string", "description": "The catalog id that served the call"},
    "output": {"type": "array", "items": {"type": "object", "description": "message or function_call items"}},
    "usage": {"type": "object"}, "flowcall": {"type": "object"}}}
REQUEST_SCHEMA = {"type": "object", "description": "CreateResponse; app/openai_api/responses.py says what happens to "
                                                   "each field", "required": ["model"],
                  "properties": {"model": {"type": "string"}, "input": {}, "instructions": {"type": "string"},
                                 "previous_response_id": {"type": "string"}, "tools": {"type": "array"},
                                 "stream": {"type": "boolean"}, "store": {"type": "boolean"}}}
DELETED_SCHEMA = {"type": "object", "properties": {"id": {"type": "string"}, "object": {"type": "string"},
                                                   "deleted": {"type": "boolean"}}}
ITEM_LIST_SCHEMA = {"type": "object", "properties": {"object": {"type": "string", "enum": ["list"]},
                                                     "data": {"type": "array"}, "has_more": {"type": "boolean"},
                                                     "first_id": {"type": ["string", "null"]},
                                                     "last_id": {"type": ["string", "null"]}}}
REQUEST_EXAMPLE = {"model": "anthropic.claude-sonnet-4-6", "instructions": "Answer in one word.",
                   "input": "What is the capital of France?"}


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"Response with id {response_id!r} not found.", code="response_not_found")


@bp.post("/v1/responses")
@doc(summary="OpenAI Responses API (n8n OpenAI node v2, OpenAI Chat Model v1.3, agents)", tags=("openai",),
     auth="bearer_key", request=REQUEST_SCHEMA, response=RESPONSE_SCHEMA, idempotent=True,
     request_example=REQUEST_EXAMPLE, errors=CALL_ERRORS, error_schema="OpenAIError",
     description="Any model flowcall routes to, as OpenAI's Responses API; the module docstring of "
                 "app/openai_api/responses.py says what happens to each request field. With `stream: true` the answer "
                 "is the spec's server-sent events, ending in `response.completed`. " + ERRORS_TEXT)
def create_response():
    svc = services()
    store = services().responses
    principal = bearer_principal()
    body = parse_json_body(read_body())
    req = api.parse_request(body)
    key = idempotency_key()
    created = int(time.time())
    response_id = new_id("resp")
    history: list = []

    def make_call():
        if req.previous_response_id:
            found = store.conversation(principal.tenant_id, req.previous_response_id)
            if found is None:
                raise NotFound(f"Previous response with id {req.previous_response_id!r} not found.",
                               code="previous_response_not_found",
                               fields={"previous_response_id": "not found (or expired)"})
            history[:] = found
        return api.build_call(req, tuple(history), request_id=g.request_id, tenant_id=principal.tenant_id,
                              agent_id=principal.agent_id, key_id=principal.key_id,
                              max_image_bytes=svc.settings.max_image_bytes)

    def save(response: dict) -> None:
        if req.store:
            store.save(principal.tenant_id, response, req.input_items, history)

    if req.stream:
        return _stream(principal, body, req, make_call, save, key, response_id, created)
    outcome = svc.gateway.run(principal, ENDPOINT, body, make_call,
                              lambda answer: output.completed_response(req, response_id, created, answer),
                              idempotency_key=key)
    if not outcome.replayed:
        save(outcome.body)
    return outcome_response(outcome)


class _Closing:
    """The closing events and finished Response of a stream, built once: the gateway renders it for
    the idempotent replay when the text ends, and the event stream sends the same events."""

    def __init__(self, writer: output.EventWriter):
        self.writer = writer
        self.events: list[str] | None = None
        self.response: dict | None = None

    def render(self, answer) -> dict:
        if self.response is None:
            self.events, self.response = self.writer.closing(answer)
        return self.response


def _stream(principal, body: dict, req: api.ResponsesRequest, make_call, save, key, response_id: str,
            created: int) -> Response:
    closing = _Closing(output.EventWriter(req, response_id, created, req.model))
    started = streaming.start(services().gateway, services().streaming, principal, ENDPOINT, body,
                              make_call, closing.render, idempotency_key=key)
    if isinstance(started, Replay):
        response = event_stream(iter(output.replay_events(req, started.body)))
        response.headers["Idempotent-Replay"] = "true"
        return response
    g.upstream_ms = started.opened.upstream_ms
    closing.writer.model = started.model_id
    response = event_stream(_events(started, closing, save, g.request_id))
    response.call_on_close(started.close)       # a client gone before the first event still settles
    return response


def _events(metered: streaming.MeteredStream, closing: _Closing, save, request_id):
    writer = closing.writer
    yield from writer.opening()
    # tool-call pieces are sent whole from the answer at the end
    emit = lambda piece: writer.delta(piece) if isinstance(piece, str) else ()  # noqa: E731
    if not (yield from relay(metered, emit, writer.error, request_id)):
        return
    final = closing.render(metered.answer)
    try:
        save(final)
    except Exception:  # noqa: BLE001 - the answer stands; only its stored copy is lost
        log.exception("storing response %s failed", final["id"])
    yield from closing.events


# -- stored responses -------------------------------------------------------------------------------------
@bp.get("/v1/responses/<response_id>")
@doc(summary="A stored response (this tenant's, within the retention period)", tags=("openai",),
     auth="bearer_key", response=RESPONSE_SCHEMA, errors=(400, 401, 404), error_schema="OpenAIError",
     description=ERRORS_TEXT)
def retrieve_response(response_id: str):
    principal = bearer_principal()
    if request.args.get("stream") in ("true", "1"):
        raise ValidationError("Streaming a stored response is not supported.", fields={"stream": "must be false"})
    found = services().responses.get(principal.tenant_id, response_id)
    if found is None:
        raise _not_found(response_id)
    return jsonify(found)


@bp.delete("/v1/responses/<response_id>")
@doc(summary="Delete a stored response", tags=("openai",), auth="bearer_key", response=DELETED_SCHEMA,
     errors=(401, 404), error_schema="OpenAIError", description=ERRORS_TEXT)
def delete_response(response_id: str):
    principal = bearer_principal()
    if not services().responses.delete(principal.tenant_id, response_id):
        raise _not_found(response_id)
    return jsonify({"id": response_id, "object": "response.deleted", "deleted": True})


@bp.get("/v1/responses/<response_id>/input_items")
@doc(summary="The input items of a stored response", tags=("openai",), auth="bearer_key",
     response=ITEM_LIST_SCHEMA, errors=(400, 401, 404), error_schema="OpenAIError",
     description="Query: `limit` (1-100, default 20), `order` (`desc`, the default, or `asc`), `after` and "
                 "`before` (item ids). " + ERRORS_TEXT)
def list_input_items(response_id: str):
    principal = bearer_principal()
    items = services().responses.input_items(principal.tenant_id, response_id)
    if items is None:
        raise _not_found(response_id)
    return jsonify(api.item_page(items, request.args))
