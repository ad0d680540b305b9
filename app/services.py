"""The composition root: every service a flowcall process uses, built once, from one Settings.

wsgi.py (through nodes.create_app), the `flowcall` commands, the job worker and the tests all get
their services from `build_services`, so each entry point runs the same start checks and holds
the same fully built objects; nothing is built later, inside a request.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from app.telemetry import logs, metrics
from app import startup
from app.catalog import Catalog
from app.config import Settings
from app.dashboard.queries import Dashboard
from app.dashboard.sessions import Sessions
from app.dashboard.signin_throttle import FailedSignIns
from app.dispatch import Dispatcher
from app.tenancy.gateway import Gateway
from app.tenancy.idempotency import Idempotency
from app.image_fetch import make_fetcher
from app.batch.jobs import Jobs
from app.tenancy.ledger import Ledger
from app.tenancy.quotas import Quotas, make_storage
from app.openai_api.response_store import ResponseStore
from app.tenancy.store import Store
from app.streaming import StreamingDispatcher
from app.transport import Transport

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    store: Store
    dispatcher: Dispatcher
    streaming: StreamingDispatcher
    ledger: Ledger
    quotas: Quotas
    gateway: Gateway
    responses: ResponseStore
    dashboard: Dashboard
    sessions: Sessions
    jobs: Jobs | None = None          # None: the job queue could not be opened (its endpoints answer 503)
    signin_failures: FailedSignIns = field(default_factory=FailedSignIns)   # this process's, see its module


def build_services(settings: Settings) -> Services:
    """Check the settings, then build every service; a malformed setting raises SystemExit naming it."""
    logs.init(settings.log_level or "INFO")
    catalog = Catalog.load(settings.models_file)
    startup.check(settings, catalog)
    store = Store(settings.database_url)          # refuses an unmigrated database
    try:
        fetch_image = make_fetcher(settings)      # a malformed allow-list stops the start, not the first image
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    dispatcher = Dispatcher(settings, catalog, transport=Transport(settings.http_pool_size),
                            fetch_image=fetch_image, observer=metrics.PrometheusObserver())
    ledger = Ledger(store.engine, log_content=settings.log_content)
    quotas = Quotas(make_storage(store.engine, settings.redis_url), ledger)
    services = Services(
        settings=settings, catalog=catalog, store=store, dispatcher=dispatcher,
        streaming=StreamingDispatcher(dispatcher), ledger=ledger, quotas=quotas,
        gateway=Gateway(store, dispatcher, ledger, Idempotency(store.engine), quotas),
        responses=ResponseStore(store.engine, settings.response_retention_days),
        dashboard=Dashboard(store.engine, store, pages_sum_history=not settings.dashboard_roller),
        sessions=Sessions(store.engine))
    try:
        services.jobs = Jobs(services)
    except Exception:  # noqa: BLE001 - an unreachable queue makes the job endpoints 503, not the start fail
        log.exception("the job queue could not be opened")
    return services
