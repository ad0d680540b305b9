"""POST /api/v3/llm/call (JWT + tenant headers) and /api/v3/llm/public/call (X-Api-Key)."""
from __future__ import annotations

from flask import Blueprint, request

from app.auth import api_key_from_header, authenticate_api_key, authenticate_jwt
from app.schemas import CallSchema, answer_to_dict

from ._common import body_with, run_call, services

bp = Blueprint("call", __name__)
_schema = CallSchema()


@bp.post("/api/v3/llm/call")
def call_with_jwt():
    principal = authenticate_jwt(request.headers, services().settings)
    return run_call(principal, "call", body_with(_schema), answer_to_dict)


@bp.post("/api/v3/llm/public/call")
def call_with_api_key():
    principal = authenticate_api_key(api_key_from_header(request.headers), services().store)
    return run_call(principal, "public_call", body_with(_schema), answer_to_dict)
