"""What every node does the same way: reach the services, read a body, answer a call."""
from __future__ import annotations

from flask import current_app, g, jsonify, request

from app.schemas import answer_to_dict, call_from_body, load, parse_json_body


def services():
    return current_app.extensions["flowcall"]


def body_with(schema) -> dict:
    """The request body, parsed strictly and validated by `schema` (errors raise the 400)."""
    return load(schema, parse_json_body(request.get_data(cache=False)))


def execute(data: dict, principal):
    """Validated call body -> the core -> the answer; records upstream time for the overhead header."""
    svc = services()
    call = call_from_body(data, request_id=g.request_id, tenant_id=principal.tenant_id,
                          agent_id=principal.agent_id, key_id=principal.key_id,
                          max_image_bytes=svc.settings.max_image_bytes)
    answer = svc.dispatcher.execute(call)
    g.upstream_ms = answer.upstream_ms
    return answer


def call_response(answer):
    return jsonify(answer_to_dict(answer))
