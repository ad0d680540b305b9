"""GET /healthz (the process answers) and GET /readyz (the store answers too)."""
from __future__ import annotations

from flask import Blueprint, jsonify

from app.errors import ServiceUnavailable
from app.openapi import doc
from app.answer_schemas import StatusSchema

from ._common import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@doc(summary="The process is up", tags=("meta",), auth="none", response=StatusSchema)
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@doc(summary="The process and its store are up", tags=("meta",), auth="none", response=StatusSchema,
     errors=(503,))
def readyz():
    try:
        services().store.ping()
    except Exception:  # noqa: BLE001 - any store failure means not ready
        raise ServiceUnavailable("The store is not reachable.", code="store_unavailable") from None
    return jsonify({"status": "ready"})
