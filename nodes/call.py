"""POST /api/v3/llm/call (JWT + tenant headers) and /api/v3/llm/public/call (X-Api-Key)."""
from __future__ import annotations

from flask import Blueprint, request

from app.auth import api_key_from_header, authenticate_api_key, authenticate_jwt
from app.schemas import CallSchema

from ._common import body_with, call_response, execute, services

bp = Blueprint("call", __name__)
_schema = CallSchema()


@bp.post("/api/v3/llm/call")
def call_with_jwt():
    principal = authenticate_jwt(request.headers, services().settings)
    return call_response(execute(body_with(_schema), principal))


@bp.post("/api/v3/llm/public/call")
def call_with_api_key():
    principal = authenticate_api_key(api_key_from_header(request.headers), services().store)
    return call_response(execute(body_with(_schema), principal))
