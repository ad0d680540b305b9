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

from . import errors, logs
from .catalog import Catalog, set_catalog
from .config import Settings
from .dispatch import Dispatcher
from .gateway import Gateway
from .idempotency import Idempotency
from .ledger import Ledger
from .quotas import Quotas, make_storage
from .store import Store

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
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    app.json.sort_keys = False
    app.json.compact = True

    catalog = Catalog.load(settings.models_file)
    set_catalog(catalog)
    store = Store(settings.database_url)          # refuses an unmigrated database
    dispatcher = Dispatcher(settings, catalog, fetch_image=_image_fetcher(settings))
    ledger = Ledger(store.engine, log_content=settings.log_content)
    quotas = Quotas(make_storage(store.engine, settings.redis_url), ledger)
    gateway = Gateway(store, dispatcher, ledger, Idempotency(store.engine), quotas)
    app.extensions["flowcall"] = Services(settings, catalog, store, dispatcher, ledger, gateway)

    errors.init_app(app)
    _init_request_context(app)

    from nodes import agentai, call, health, test_connection, usage
    for module in (call, agentai, test_connection, usage, health):
        app.register_blueprint(module.bp)
    return app


def _image_fetcher(settings: Settings):
    """Imported on first use: most processes never download an image."""
    fetcher = None

    def fetch(url: str):
        nonlocal fetcher
        if fetcher is None:
            from .image_fetch import make_fetcher
            fetcher = make_fetcher(settings)
        return fetcher(url)
    return fetch


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
            response.headers["X-Flowcall-Overhead-Ms"] = f"{max(0.0, total_ms - g.get('upstream_ms', 0.0)):.3f}"
        return response
