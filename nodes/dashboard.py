"""GET /dashboard...: the usage dashboard's web pages (issue 17), one tenant (or agent) per session.

Server-rendered HTML, no script: tables sort through query parameters, filters are GET forms, charts
are SVG from app/dashboard/charts.py. Sign-in (an API key, or a JWT for operators) makes a
server-side session (app/dashboard/sessions.py) whose cookie is HttpOnly, SameSite=Strict, and
Secure over TLS; each page re-checks the key (revoked within the store's 5 s cache). Failed
sign-ins are throttled per client address and key (app/dashboard/signin_throttle.py). Every state
change is a POST carrying a CSRF token. Every answer carries a strict CSP and no-referrer. Not part
of the API: these routes are left out of the OpenAPI document, like /docs.
"""
from __future__ import annotations

import logging
import secrets
import time
from datetime import datetime, UTC

import jwt
from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from app.dashboard import charts, figures
from app.dashboard.exports import csv_pieces, to_csv
from app.dashboard.params import BadParam, View, parse
from app.dashboard.queries import CALL_COLUMNS, Scope, day_range
from app.dashboard.rollups import RollupPending
from app.dashboard.sessions import Session
from app.errors import FlowcallError
from app.tenancy.auth import authenticate_api_key, authenticate_jwt

from ._common import services

log = logging.getLogger(__name__)
bp = Blueprint("dashboard", __name__)

COOKIE = "flowcall_dashboard"
PENDING_REFRESH_S = 15
PRE_COOKIE = "flowcall_dashboard_signin"          # the sign-in form's double-submit CSRF token
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
PUBLIC = {"dashboard.signin", "dashboard.signin_post", "dashboard.slash", "dashboard.not_found"}
BREAKDOWN_COLUMNS = ("group", "calls", "errors", "error_rate", "input_tokens", "output_tokens", "total_tokens", "cost",
                     "latency_p50", "latency_p95", "upstream_p50", "upstream_p95", "overhead_p50", "overhead_p95")
DAILY_COLUMNS = ("day", "calls", "errors", "input_tokens", "output_tokens", "total_tokens", "cost")
EXPORT_CALLS = 10_000                              # the newest calls of the range a CSV holds
JOB_COLUMNS = ("id", "kind", "status", "done", "items_total", "result_status", "created_at", "started_at",
               "finished_at", "callback_state")
TITLES = {"overview": "Overview", "breakdowns": "Breakdowns", "failures": "Failures", "calls": "Recent calls",
          "call": "Call", "jobs": "Jobs", "signin": "Sign in"}


class SignInNeeded(Exception):
    """No valid session: browser routes redirect to the sign-in page."""


class NotFoundPage(Exception):
    pass


# -- request plumbing -------------------------------------------------------------------------
@bp.before_request
def _session():
    g.dashboard_page = True
    if request.endpoint in PUBLIC:
        return None
    svc = services()
    session = svc.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        raise SignInNeeded()
    if session.key_id is not None and svc.store.active_key(session.key_id) is None:
        svc.sessions.delete(request.cookies.get(COOKIE))        # the key was revoked: so is its session
        raise SignInNeeded()
    g.dashboard = session
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response


def _page(template: str, status: int = 200, **context) -> Response:
    session: Session | None = g.get("dashboard")
    page = template.removesuffix(".html")
    context.setdefault("title", TITLES.get(page, page))
    body = render_template(f"dashboard/{template}", session=session, page=page, **context)
    return Response(body, status=status, content_type="text/html; charset=utf-8")


@bp.errorhandler(SignInNeeded)
def _sign_in(_err):
    response = redirect(url_for("dashboard.signin"), code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


@bp.errorhandler(BadParam)
def _bad_param(err: BadParam):
    return _page("error.html", 400, title="Bad request", message=str(err))


@bp.errorhandler(NotFoundPage)
def _missing(_err):
    return _page("error.html", 404, title="Not found", message="There is no such page or call in your dashboard.")


@bp.errorhandler(RollupPending)
def _pending(_err):
    """The roller is still summing this tenant's history (the first minutes after an upgrade): the
    page says so and reloads itself, rather than reading months of ledger rows in a web worker."""
    response = _page("pending.html", 503, title="Summing your history", refresh_s=PENDING_REFRESH_S)
    response.headers["Retry-After"] = str(PENDING_REFRESH_S)
    return response


@bp.errorhandler(HTTPException)
def _http(err: HTTPException):
    code = err.code or 500
    return _page("error.html", code if 400 <= code < 500 else 500, title=err.name, message=err.description or "")


@bp.errorhandler(Exception)
def _unexpected(err: Exception):
    log.exception("dashboard page failed")
    return _page("error.html", 500, title="Something went wrong",
                 message=f"The page could not be built; request id {g.get('request_id', '')}.")


def _scope() -> Scope:
    s: Session = g.dashboard
    return Scope(tenant_id=s.tenant_id, agent_id=s.agent_id, key_id=s.key_id)


def _view() -> View:
    view = parse(request.args)
    if g.dashboard.agent_id is not None:            # an agent's session sees that agent only, whatever it asks
        view = View(**{**view.__dict__, "agent": g.dashboard.agent_id})
    return view


def _cells(view: View, dims: tuple[str, ...], histograms: bool = False) -> list:
    """The view's sums grouped by `dims` (its agent's only, when it names one)."""
    return services().dashboard.cells(_scope(), view.first, view.last, view.agent, dims=dims, histograms=histograms)


def _agents(view: View) -> list[str]:
    return services().dashboard.agents(_scope(), view.first, view.last)


@bp.app_template_filter("dash_usd")
def _usd(value) -> str:
    """Dollars to 8 decimals (the ledger's precision), trailing zeros cut: the usage endpoint's number."""
    if value is None:
        return "-"
    text = f"{float(value):.8f}".rstrip("0").rstrip(".")
    return text or "0"


@bp.app_template_filter("dash_num")
def _num(value) -> str:
    return "-" if value is None else f"{int(value):,}"


# -- sign-in and sign-out ---------------------------------------------------------------------
@bp.get("/dashboard/signin")
def signin():
    return _signin_form()


def _signin_form(status: int = 200, message: str | None = None) -> Response:
    token = secrets.token_urlsafe(32)
    response = _page("signin.html", status, csrf=token, message=message,
                     jwt_enabled=bool(services().settings.jwt_secret or services().settings.jwt_public_key))
    response.set_cookie(PRE_COOKIE, token, max_age=3600, path="/dashboard", httponly=True, samesite="Strict",
                        secure=request.is_secure)
    return response


@bp.post("/dashboard/signin")
def signin_post():
    presented = request.form.get("csrf", "")
    expected = request.cookies.get(PRE_COOKIE, "")
    if not expected or not secrets.compare_digest(expected.encode(), presented.encode("utf-8", "replace")):
        return _signin_form(400, "The sign-in form expired or came from elsewhere: sign in again.")
    svc = services()
    api_key = (request.form.get("api_key") or "").strip()
    token = (request.form.get("token") or "").strip()
    lifetime = svc.settings.dashboard_session_minutes * 60
    who = (request.remote_addr, _named(api_key, request.form.get("tenant_id", "")))
    wait = svc.signin_failures.retry_after(who)
    if wait is not None:
        response = _signin_form(429, f"Too many failed sign-ins: try again in {wait} s.")
        response.headers["Retry-After"] = str(wait)
        return response
    try:
        if api_key:
            principal = authenticate_api_key(api_key[:300], svc.store)
            expires_in = lifetime
        elif token:
            headers = {"Authorization": f"Bearer {token}", "x-tenant-id": request.form.get("tenant_id", "")[:100],
                       "x-agent-id": request.form.get("agent_id", "")[:100]}
            principal = authenticate_jwt(headers, svc.settings, require_agent=False)
            exp = jwt.decode(token, options={"verify_signature": False})["exp"]   # verified just above
            expires_in = min(lifetime, exp - time.time())
        else:
            return _signin_form(400, "Enter an API key (or a JWT and its tenant id).")
    except FlowcallError as exc:
        svc.signin_failures.failed(who)
        return _signin_form(401, f"Sign-in refused: {exc.message}")
    cookie, _ = svc.sessions.create(principal.tenant_id, principal.agent_id, principal.key_id,
                                    principal.subject, expires_in)
    response = redirect(url_for("dashboard.overview"), code=303)
    response.set_cookie(COOKIE, cookie, max_age=int(expires_in), path="/dashboard", httponly=True,
                        samesite="Strict", secure=request.is_secure)
    response.delete_cookie(PRE_COOKIE, path="/dashboard")
    return response


def _named(api_key: str, tenant_id: str) -> str:
    """What a sign-in attempt names, for its throttle: the API key's id (fc_<id>_<secret>), else the
    tenant a JWT is presented for. Bounded: a caller's text is cut before it is kept."""
    if api_key:
        parts = api_key.split("_", 2)
        return "key:" + (parts[1][:32] if len(parts) == 3 and parts[0] == "fc" else "?")
    return "tenant:" + tenant_id[:100]


@bp.post("/dashboard/signout")
def signout():
    if not g.dashboard.csrf_ok(request.form.get("csrf")):
        return _page("error.html", 400, title="Bad request", message="The sign-out form came from elsewhere.")
    services().sessions.delete(request.cookies.get(COOKIE))
    response = redirect(url_for("dashboard.signin"), code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


# -- pages ------------------------------------------------------------------------------------
@bp.get("/dashboard")
def overview():
    view = _view()
    svc = services()
    cells = _cells(view, ("day",))
    days = figures.daily(cells, view.first, view.last)
    chart = {name: Markup(charts.columns([(d["day"], d[name]) for d in days], f"{title} per day"))
             for name, title in (("calls", "Calls"), ("total_tokens", "Tokens"), ("cost", "Cost (USD)"))}
    return _page("overview.html", view=view, agents=_agents(view), totals=figures.totals(cells), days=days,
                 charts=chart, budgets=svc.dashboard.budget(_scope()), minute=svc.dashboard.last_minute(_scope()))


@bp.get("/dashboard/breakdowns")
def breakdowns():
    view = _view()
    rows = figures.breakdown(_cells(view, (figures.FIELD[view.by],), histograms=True), view.by, view.sort,
                             view.descending)
    chart = Markup(charts.rows([(str(r["group"]), r[_chart_measure(view)]) for r in rows],
                               f"{_chart_measure(view)} by {view.by}"))
    return _page("breakdowns.html", view=view, agents=_agents(view), rows=rows, chart=chart,
                 measure=_chart_measure(view), keys=_key_names())


def _chart_measure(view: View) -> str:
    return view.sort if view.sort != "group" else "cost"


def _key_names() -> dict[str, str]:
    return {k.id: k.name or k.id for k in services().store.list_keys(g.dashboard.tenant_id)}


@bp.get("/dashboard/failures")
def failures():
    view = _view()
    per_day, codes = figures.failures_by_code(_cells(view, ("day", "error_code")), view.first, view.last)
    chart = Markup(charts.columns([(d["day"], d["errors"]) for d in per_day], "Errors per day"))
    start, end = day_range(view.first, view.last)
    latest, _ = services().dashboard.calls(_scope(), start, end, view.agent, failed=True, size=20)
    return _page("failures.html", view=view, agents=_agents(view), per_day=per_day, codes=codes, chart=chart,
                 latest=latest, log_content=services().settings.log_content)


@bp.get("/dashboard/calls")
def calls():
    view = _view()
    start, end = day_range(view.first, view.last)
    rows, more = services().dashboard.calls(_scope(), start, end, view.agent, page=view.page)
    return _page("calls.html", view=view, agents=_agents(view), rows=rows, more=more)


@bp.get("/dashboard/calls/<int:row_id>")
def call_detail(row_id: int):
    row = services().dashboard.call(_scope(), row_id) if row_id < 2**63 else None
    if row is None:
        raise NotFoundPage()
    return _page("call.html", call=row, log_content=services().settings.log_content)


@bp.get("/dashboard/jobs")
def jobs_page():
    return _page("jobs.html", rows=services().dashboard.jobs(_scope()))


@bp.get("/dashboard/export/<name>.csv")
def export(name: str):
    view = _view()
    svc = services()
    if name == "daily":
        rows, columns = figures.daily(_cells(view, ("day",)), view.first, view.last), DAILY_COLUMNS
    elif name == "breakdown":
        rows = figures.breakdown(_cells(view, (figures.FIELD[view.by],), histograms=True), view.by, view.sort,
                                 view.descending)
        columns = BREAKDOWN_COLUMNS
    elif name == "failures":
        per_day, codes = figures.failures_by_code(_cells(view, ("day", "error_code")), view.first, view.last)
        rows, columns = [{"day": d["day"], **d["by_code"]} for d in per_day], ("day", *codes)
    elif name == "calls":
        start, end = day_range(view.first, view.last)
        rows = svc.dashboard.call_rows(_scope(), start, end, view.agent, EXPORT_CALLS)
        return _csv(name, csv_pieces(rows, CALL_COLUMNS))       # streamed: the largest export by far
    elif name == "jobs":
        rows, columns = svc.dashboard.jobs(_scope()), JOB_COLUMNS
    else:
        raise NotFoundPage()
    return _csv(name, to_csv(rows, columns))


def _csv(name: str, body) -> Response:
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    return Response(body, content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="flowcall-{name}-{stamp}.csv"'})


@bp.get("/dashboard/", endpoint="slash")
def trailing_slash():
    """`/dashboard/` is the overview typed with a slash: redirect (the page itself checks the session)."""
    return _to_page("/dashboard")


@bp.route("/dashboard/<path:rest>", methods=["GET", "POST"])
def not_found(rest: str):
    """A page's URL with a trailing slash (`/dashboard/calls/`) is redirected to the page; only to a
    path that is one of our GET pages, so the redirect can never point anywhere else."""
    if request.method == "GET" and rest.endswith("/") and rest.rstrip("/"):
        target = "/dashboard/" + rest.rstrip("/")
        try:
            endpoint, _ = current_app.url_map.bind("localhost").match(target, method="GET")
        except HTTPException:
            endpoint = None
        if endpoint is not None and endpoint.startswith("dashboard.") and endpoint != "dashboard.not_found":
            return _to_page(target)
    raise NotFoundPage()


def _to_page(path: str) -> Response:
    query = request.query_string.decode("latin-1")
    return redirect(f"{path}?{query}" if query else path, code=308)
