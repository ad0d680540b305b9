"""What every node does the same way: reach the services, read a body, run a metered call."""
from __future__ import annotations

from flask import Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from app.tenancy.auth import api_key_from_header, authenticate_api_key, authenticate_jwt
from app.errors import FlowcallError, InvalidJSON, PayloadTooLarge, UnsupportedMediaType, ValidationError
from app.tenancy.idempotency import validate_key
from app.json_body import parse_json_body
from app.schemas import call_from_body, load
from app.services import Services


def services() -> Services:
    """This app's services, built once by create_app."""
    return current_app.extensions["flowcall"]


def body_with(schema) -> dict:
    """The request body, parsed strictly and validated by `schema` (errors raise the 400)."""
    return load(schema, parse_json_body(read_body()))


def read_body() -> bytes:
    """The raw body, whole and unencoded, or a clean 4xx: never decompressed (no gzip bombs), never
    silently cut at the size cap, never shorter than its Content-Length."""
    encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {encoding[:40]!r} is not accepted: send the JSON body "
                                   f"uncompressed.", code="unsupported_content_encoding")
    try:
        raw = request.get_data(cache=False)
        cap = request.max_content_length
        if request.content_length is None and cap and len(raw) >= cap and request.stream.read(1):
            raise PayloadTooLarge(f"Request body is larger than the limit of {cap} bytes (FLOWCALL_MAX_BODY_BYTES).")
    except HTTPException:
        raise                               # 413 from Werkzeug: the one error handler maps it
    except FlowcallError:
        raise
    except Exception:  # noqa: BLE001 - a malformed chunked body or a broken connection
        raise InvalidJSON("The request body could not be read (malformed chunked encoding?).") from None
    if request.content_length is not None and len(raw) != request.content_length:
        raise InvalidJSON(f"The request body has {len(raw)} bytes, not the {request.content_length} its "
                          f"Content-Length says.")
    return raw


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError("must be true or false")


def one_of(*choices: str):
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value
    return parse


def query(**parsers) -> dict:
    """The query string, strictly: known names only, each at most once, each value parsed."""
    errors = {}
    for name in request.args:
        if name not in parsers:
            errors[name] = "unknown parameter"
        elif len(request.args.getlist(name)) > 1:
            errors[name] = "given more than once"
    values = {}
    for name, parse in parsers.items():
        raw = request.args.get(name)
        if raw is None or name in errors:
            continue
        try:
            values[name] = parse(raw)
        except (ValueError, OverflowError) as exc:       # e.g. a date at the edge of time
            errors[name] = str(exc) or "out of range"
    if errors:
        raise ValidationError("Invalid query: " + "; ".join(f"{k}: {v}" for k, v in errors.items()), fields=errors)
    return values


def either_auth(require_agent: bool = True):
    """API key (X-Api-Key) when sent, else JWT with tenant headers (x-agent-id optional for reads:
    `require_agent=False`)."""
    svc = services()
    if request.headers.get("X-Api-Key"):
        g.principal = authenticate_api_key(api_key_from_header(request.headers), svc.store)
    else:
        g.principal = authenticate_jwt(request.headers, svc.settings, require_agent=require_agent)
    return g.principal


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header, validated; None when it sent none."""
    key = request.headers.get("Idempotency-Key")
    return validate_key(key.strip()) if key is not None else None


def provider_named(catalog, name: str):
    """A provider by name or alias; an unknown one is a 400 on the `provider` field."""
    try:
        return catalog.provider(name)
    except ValidationError as err:
        raise type(err)(err.message, code=err.code, fields={"provider": f"unknown provider {name!r}"}) from None


def run_call(principal, endpoint: str, data: dict, render):
    """A validated call body through the gateway (idempotency, limits, ledger) -> a Flask response."""
    svc = services()
    g.principal = principal
    key = idempotency_key()

    def make_call():
        return call_from_body(data, request_id=g.request_id, tenant_id=principal.tenant_id,
                              agent_id=principal.agent_id, key_id=principal.key_id,
                              max_image_bytes=svc.settings.max_image_bytes)

    outcome = svc.gateway.run(principal, endpoint, data, make_call, render, idempotency_key=key)
    return outcome_response(outcome)


def outcome_response(outcome) -> Response:
    """A gateway outcome as the HTTP answer (its body, status and replay header), with the answer noted
    for the access log: every metered endpoint answers through this."""
    if outcome.answer is not None:
        g.upstream_ms = outcome.answer.upstream_ms
        g.answer = outcome.answer
    response = jsonify(outcome.body)
    response.status_code = outcome.status
    if outcome.replayed:
        response.headers["Idempotent-Replay"] = "true"
    return response
