"""The web layer: `create_app` builds the services (app.services), then attaches the HTTP surface.

Nodes use the core; the core never imports a node. The table of contents: settings, services,
the request context (request id, overhead header, access log, metrics), the error envelope, each
node's blueprint, and the OpenAPI document built from them.
"""
from __future__ import annotations

import json
import re
import time
import uuid

from flask import Flask, g, request
from flask.json.provider import DefaultJSONProvider

from app.config import Settings
from app.errors import init_app as init_errors
from app.telemetry.logs import access
from app.telemetry.metrics import record_request
from app.openapi import build_spec
from app.services import Services, build_services

from . import (agentai, batch, call, chat_completions, connection_check, dashboard, docs, embeddings, health, me,
               models, openai_embeddings, responses, usage)
from . import metrics as metrics_node

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
BLUEPRINTS = (call, agentai, batch, connection_check, usage, models, me, docs, metrics_node, health,
              chat_completions, responses, embeddings, openai_embeddings, dashboard)


class _JSONProvider(DefaultJSONProvider):
    """Flask's JSON with the encoder built once per setting rather than by json.dumps on every
    answer: the same text (the same encoder arguments), less work per request."""

    def dumps(self, obj, **kwargs) -> str:
        if kwargs.keys() <= {"separators", "indent"}:
            settings = (self.default, self.ensure_ascii, self.sort_keys, kwargs.get("separators"),
                        kwargs.get("indent"))
            encoder = self.__dict__.get("_encoder")
            if encoder is None or encoder[0] != settings:
                encoder = self._encoder = (settings, json.JSONEncoder(
                    default=self.default, ensure_ascii=self.ensure_ascii, sort_keys=self.sort_keys,
                    separators=kwargs.get("separators"), indent=kwargs.get("indent")))
            return encoder[1].encode(obj)
        return super().dumps(obj, **kwargs)


def create_app(config: dict | None = None, services: Services | None = None) -> Flask:
    """The WSGI app. `config` overrides environment variables by name (tests pass settings here);
    `services`, when given, are used instead of building them from the settings."""
    services = services or build_services(Settings.load(config))
    app = Flask(__name__)
    app.json = _JSONProvider(app)
    app.config.update(MAX_CONTENT_LENGTH=services.settings.max_body_bytes)
    app.json.sort_keys = False
    app.json.compact = True
    app.extensions["flowcall"] = services
    init_errors(app)
    _init_request_context(app)
    for module in BLUEPRINTS:
        app.register_blueprint(module.bp)
    app.register_blueprint(docs.ui)
    app.extensions["flowcall_openapi"] = build_spec(app)
    return app


def _init_request_context(app: Flask) -> None:
    @app.before_request
    def _start():
        g.started = time.perf_counter()
        g.upstream_ms = 0.0
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def _finish(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        if "started" in g:
            total_ms = (time.perf_counter() - g.started) * 1000
            overhead_ms = max(0.0, total_ms - g.get("upstream_ms", 0.0))
            response.headers["X-Flowcall-Overhead-Ms"] = f"{overhead_ms:.3f}"
            endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
            record_request(endpoint, response.status_code, overhead_ms / 1000)
            fields = {"request_id": g.get("request_id"), "method": request.method, "path": request.path,
                      "status": response.status_code, "overhead_ms": overhead_ms, "principal": g.get("principal"),
                      "answer": g.get("answer"), "error_code": g.get("error_code")}
            if response.is_streamed:     # written once the body is sent: not before the first byte, and
                started = g.started      # its latency is the whole stream's, not the time to first byte
                response.call_on_close(lambda: access(latency_ms=(time.perf_counter() - started) * 1000, **fields))
            else:
                access(latency_ms=total_ms, **fields)
        return response
