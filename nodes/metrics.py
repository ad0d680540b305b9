"""GET /metrics: Prometheus text format, all gunicorn workers aggregated."""
from __future__ import annotations

from flask import Blueprint, Response

from app.telemetry.metrics import exposition
from app.openapi import doc

from ._common import services

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@doc(summary="Prometheus metrics (requests, provider calls, latency, tokens, cost, retries, circuits)",
     tags=("meta",), auth="none", response={"type": "string"}, response_content_type="text/plain")
def metrics():
    body, content_type = exposition(services().settings.prometheus_multiproc_dir)
    return Response(body, content_type=content_type)
