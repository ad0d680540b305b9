"""flowcall: one HTTP endpoint that calls any LLM provider the same way.

`create_app` is the table of contents: settings, catalog, store, dispatcher, errors, logging,
then each node's blueprint.
"""
from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass

from flask import Flask, g, request

from . import errors, jobs, logs, metrics, startup  # noqa: F401 - jobs: its tables join app.db.metadata
from .catalog import Catalog
from .config import Settings
from .dispatch import Dispatcher
from .gateway import Gateway
from .idempotency import Idempotency
from .ledger import Ledger
from .quotas import Quotas, make_storage
from .response_store import ResponseStore
from .response_store import retention_days as response_retention_days
from .store import Store
from .transport import Transport

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    store: Store
    dispatcher: Dispatcher
    ledger: Ledger
    gateway: Gateway


def create_app(config: dict | None = None) -> Flask:
    """Build the app. `config` overrides environment variables by name (tests pass settings here)."""
    config = dict(config or {})
    env = {**os.environ, **{k: str(v) for k, v in config.items() if isinstance(v, (str, int, float))}}
    settings = Settings.from_env(env)
    logs.init(settings.log_level)

    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.json.sort_keys = False
    app.json.compact = True

    catalog = Catalog.load(settings.models_file)
    startup.check(settings, catalog)               # settings read late, parsed now: a typo stops the start
    store = Store(settings.database_url)          # refuses an unmigrated database
    dispatcher = Dispatcher(settings, catalog, transport=Transport(settings.http_pool_size),
                            fetch_image=_image_fetcher(settings),
                            observer=metrics.PrometheusObserver())
    ledger = Ledger(store.engine, log_content=settings.log_content)
    quotas = Quotas(make_storage(store.engine, settings.redis_url), ledger)
    gateway = Gateway(store, dispatcher, ledger, Idempotency(store.engine), quotas)
    app.extensions["flowcall"] = Services(settings, catalog, store, dispatcher, ledger, gateway)

    errors.init_app(app)
    _init_request_context(app)

    from nodes import agentai, batch, call, docs, health, me, models, openai_compat, responses, test_connection, usage
    from nodes import metrics as metrics_node
    app.extensions["flowcall_responses"] = ResponseStore(store.engine, response_retention_days(settings.environ))
    for module in (call, agentai, batch, test_connection, usage, models, me, docs, metrics_node, health,
                   openai_compat, responses):
        app.register_blueprint(module.bp)
    app.register_blueprint(docs.ui)
    return app


def _image_fetcher(settings: Settings):
    """The SSRF-guarded downloader; a malformed allow-list stops the start, not the first image."""
    from .image_fetch import make_fetcher
    try:
        return make_fetcher(settings)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


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
            metrics.record_request(endpoint, response.status_code, overhead_ms / 1000)
            logs.access(request_id=g.get("request_id"), method=request.method, path=request.path,
                        status=response.status_code, latency_ms=total_ms, overhead_ms=overhead_ms,
                        principal=g.get("principal"), answer=g.get("answer"), error_code=g.get("error_code"))
        return response
