"""What /v1/chat/completions and /v1/responses do the same way: errors in OpenAI's shape, the
flowcall key as a bearer token, and server-sent events relayed from a metered stream (/v1/embeddings
uses the first two)."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context
from werkzeug.exceptions import HTTPException

from app.openai_api import chat_completions as compat
from app import streaming
from app.tenancy.auth import Principal, api_key_from_bearer, authenticate_api_key
from app.errors import FlowcallError, Unauthorized, from_http_exception, http_exception_headers

from ._common import services

log = logging.getLogger(__name__)

# OpenAPI: errors are OpenAI's ErrorResponse, not the Error envelope the other endpoints answer with,
# so they are described rather than listed.
ERRORS_TEXT = ("Errors are OpenAI's ErrorResponse, {\"error\": {message, type, param, code}}, with flowcall's "
               "usual HTTP statuses (400, 401, 402, 409, 413, 422, 429, 502, 503, 504) and an "
               "`x-should-retry` header that OpenAI's SDKs obey.")


def error_response(err: FlowcallError) -> Response:
    response = jsonify(compat.error_body(err, g.get("request_id")))
    response.status_code = err.status
    response.headers.update(compat.error_headers(err))
    return response


def use_openai_errors(bp: Blueprint) -> None:
    """Every error of `bp`'s routes in OpenAI's shape; these handlers win over the app's for them."""
    @bp.errorhandler(FlowcallError)
    def _flowcall_error(err: FlowcallError):
        return error_response(err)

    @bp.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        response = error_response(from_http_exception(err, current_app.config.get("MAX_CONTENT_LENGTH")))
        response.headers.update(http_exception_headers(err))
        return response

    @bp.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error")
        return error_response(FlowcallError("Internal error; the request id identifies it in our logs."))


def bearer_principal() -> Principal:
    """The caller, from `Authorization: Bearer <flowcall key>` (what OpenAI clients send)."""
    presented = api_key_from_bearer(request.headers)
    if not presented:
        raise Unauthorized("Send your flowcall API key as Authorization: Bearer <key> (the OpenAI SDKs' api_key).",
                           code="missing_api_key")
    g.principal = authenticate_api_key(presented, services().store)     # for the request line
    return g.principal


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


def event_stream(events) -> Response:
    response = Response(stream_with_context(events), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"        # proxies: pass each event on as it comes
    return response
