"""GET /healthz (the process answers) and GET /readyz (the store answers too)."""
from __future__ import annotations

from flask import Blueprint, jsonify

from app.errors import ServiceUnavailable

from ._common import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    try:
        services().store.ping()
    except Exception:  # noqa: BLE001 - any store failure means not ready
        raise ServiceUnavailable("The store is not reachable.", code="store_unavailable") from None
    return jsonify({"status": "ready"})
