"""GET /openapi.json (built by create_app at start) and GET /docs (Swagger UI served from the package)."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask_swagger_ui import get_swaggerui_blueprint

from app.openapi import doc

bp = Blueprint("docs", __name__)
ui = get_swaggerui_blueprint("/docs", "/openapi.json", config={"app_name": "flowcall"})


@bp.get("/openapi.json")
@doc(summary="This API's OpenAPI 3.1 document", tags=("meta",), auth="none", response={"type": "object"})
def openapi_json():
    return jsonify(current_app.extensions["flowcall_openapi"])
