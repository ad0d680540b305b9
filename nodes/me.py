"""GET /api/v3/llm/me and GET /v1/me: who this credential is, for platforms' "test credential" step."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from app.tenancy.auth import api_key_from_bearer, authenticate_api_key
from app.openapi import doc
from app.answer_schemas import MeResponseSchema

from ._common import either_auth, services

bp = Blueprint("me", __name__)


def _me(principal) -> dict:
    tenant_limits = services().store.tenant_limits(principal.tenant_id)
    return {"success": True, "tenant_id": principal.tenant_id, "agent_id": principal.agent_id,
            "auth": principal.method, "key_id": principal.key_id, "key_name": principal.key_name,
            "limits": principal.limits.as_dict(), "tenant_limits": tenant_limits.as_dict()}


@bp.get("/api/v3/llm/me")
@doc(summary="Who this credential is (API key or JWT)", tags=("account",), auth="either",
     response=MeResponseSchema, errors=(400, 401, 403))
def me():
    return jsonify(_me(either_auth(require_agent=False)))


@bp.get("/v1/me")
@doc(summary="Who this API key is (key as Bearer token)", tags=("account",), auth="bearer_key",
     response=MeResponseSchema, errors=(401,))
def me_bearer():
    return jsonify(_me(authenticate_api_key(api_key_from_bearer(request.headers), services().store)))
