"""POST /api/v3/llm/call (JWT + tenant headers) and /api/v3/llm/public/call (X-Api-Key)."""
from __future__ import annotations

from flask import Blueprint, request

from app import examples
from app.tenancy.auth import api_key_from_header, authenticate_api_key, authenticate_jwt
from app.openapi import CALL_ERRORS, doc
from app.answer_schemas import CallResponseSchema, answer_to_dict
from app.schemas import CallSchema

from ._common import body_with, run_call, services

bp = Blueprint("call", __name__)
_schema = CallSchema()


@bp.post("/api/v3/llm/call")
@doc(summary="Execute an LLM call with full multi-tenant context (JWT)", tags=("calls",), auth="jwt",
     request=CallSchema, response=CallResponseSchema, errors=CALL_ERRORS, idempotent=True,
     request_example=examples.CALL_REQUEST, response_example=examples.CALL_RESPONSE)
def call_with_jwt():
    principal = authenticate_jwt(request.headers, services().settings)
    return run_call(principal, "call", body_with(_schema), answer_to_dict)


@bp.post("/api/v3/llm/public/call")
@doc(summary="Execute an LLM call (API key)", tags=("calls",), auth="api_key",
     request=CallSchema, response=CallResponseSchema, errors=CALL_ERRORS, idempotent=True,
     request_example={"query": "Summarize this contract", "model": "mock.echo"},
     response_example=examples.CALL_RESPONSE)
def call_with_api_key():
    principal = authenticate_api_key(api_key_from_header(request.headers), services().store)
    return run_call(principal, "public_call", body_with(_schema), answer_to_dict)
