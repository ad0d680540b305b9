"""`flowcall models check`: the catalog against each configured provider's own model list.

Providers retire models every month; a catalog id the provider no longer serves fails at the
provider instead of going to its successor with a warning. This asks every configured provider
for its models and reports catalog ids it no longer serves, served ids the catalog lacks, and
catalog shutdown dates within the window (or already past while the catalog still serves them).

List endpoints (one GET each, paged where the provider pages):
- OpenAI, xAI, Groq, Ollama and Perplexity: `GET {base}/models` (Perplexity: `{base}/v1/models`,
  providers.md §2.6), `{"data": [{"id": ...}]}`;
- Anthropic: `GET {base}/v1/models?limit=1000`, `{"data": [{"id"}], "has_more", "last_id"}`, next
  page by `after_id`, headers `x-api-key` and `anthropic-version`;
- Gemini: `GET {base}/v1beta/models?pageSize=1000`, `{"models": [{"name": "models/<id>",
  "supportedGenerationMethods"}], "nextPageToken"}`, next page by `pageToken`; only models that
  support `generateContent` count as served.
Building requests and reading answers are pure; `run` does the I/O through the transport.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from urllib.parse import quote

from app.http import HttpRequest, HttpResponse

WINDOW_DAYS = 30
MAX_PAGES = 20
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0


@dataclass
class ProviderReport:
    provider: str
    served: int = 0
    not_served: list[str] = field(default_factory=list)      # catalog ids the provider no longer lists
    not_in_catalog: list[str] = field(default_factory=list)  # provider ids the catalog lacks
    retiring: list[dict] = field(default_factory=list)       # {"id", "shutdown", "days_left"}
    unchecked: list[str] = field(default_factory=list)       # catalog ids with no name to compare (presets)
    error: str | None = None

    @property
    def findings(self) -> bool:
        return bool(self.not_served or self.not_in_catalog or self.retiring)

    def as_dict(self) -> dict:
        return {"provider": self.provider, "served": self.served, "not_served": self.not_served,
                "not_in_catalog": self.not_in_catalog, "retiring": self.retiring, "unchecked": self.unchecked,
                "error": self.error}


# -- the list request and its answer (pure) --------------------------------------------------------------
def list_request(provider, base_url: str, api_key: str | None, page: str | None = None) -> HttpRequest:
    base = base_url.rstrip("/")
    secrets = (api_key,) if api_key else ()
    if provider.format == "anthropic":
        root = base[:-3] if base.endswith("/v1") else base
        url = f"{root}/v1/models?limit=1000" + (f"&after_id={quote(page)}" if page else "")
        headers = {"anthropic-version": "2023-06-01", **({"x-api-key": api_key} if api_key else {})}
        return HttpRequest("GET", url, headers=headers, secrets=secrets)
    if provider.format == "gemini":
        url = f"{base}/v1beta/models?pageSize=1000" + (f"&pageToken={quote(page)}" if page else "")
        headers = {"x-goog-api-key": api_key} if api_key else {}
        return HttpRequest("GET", url, headers=headers, secrets=secrets)
    url = f"{base}/v1/models" if provider.format == "perplexity_agent" else f"{base}/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return HttpRequest("GET", url, headers=headers, secrets=secrets)


def parse_list(provider, resp: HttpResponse) -> tuple[list[str], str | None]:
    """(served model ids, next page or None). Raises ValueError on an answer that is not a list."""
    body = resp.json()
    if resp.status != 200 or not isinstance(body, dict):
        raise ValueError(f"HTTP {resp.status}: {resp.text(200)}")
    if provider.format == "gemini":
        items = body.get("models")
        if not isinstance(items, list):
            raise ValueError("no `models` list in the answer")
        ids = [item["name"].removeprefix("models/") for item in items
               if isinstance(item, dict) and isinstance(item.get("name"), str)
               and "generateContent" in (item.get("supportedGenerationMethods") or ["generateContent"])]
        token = body.get("nextPageToken")
        return ids, token if isinstance(token, str) and token else None
    items = body.get("data")
    if not isinstance(items, list):
        raise ValueError("no `data` list in the answer")
    ids = [item["id"] for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]
    if provider.format == "anthropic" and body.get("has_more") and isinstance(body.get("last_id"), str):
        return ids, body["last_id"]
    return ids, None


# -- the comparison (pure) ---------------------------------------------------------------------------------
def _served_name(model) -> str | None:
    """The id the provider's list would show for a catalog model (None: a Perplexity preset)."""
    if model.params.get("preset"):
        return None
    return model.params.get("model") or model.name


def compare(catalog, provider_name: str, served: list[str], today: dt.date,
            window_days: int = WINDOW_DAYS) -> ProviderReport:
    report = ProviderReport(provider=provider_name, served=len(set(served)))
    served_set = set(served)
    models = [m for m in catalog.models.values() if m.provider == provider_name]
    known_names = {_served_name(m) for m in models}
    for model in models:
        name = _served_name(model)
        if name is None:
            report.unchecked.append(model.id)
        elif model.status != "retired" and name not in served_set:
            report.not_served.append(model.id)
        if model.status != "retired" and model.shutdown:
            days_left = (dt.date.fromisoformat(model.shutdown) - today).days
            if days_left <= window_days:
                report.retiring.append({"id": model.id, "shutdown": model.shutdown, "days_left": days_left})
    report.not_in_catalog = sorted(served_set - known_names)
    report.not_served.sort()
    report.retiring.sort(key=lambda r: (r["days_left"], r["id"]))
    return report


# -- the I/O ---------------------------------------------------------------------------------------------------
def check_provider(provider, base_url: str, api_key: str | None, catalog, transport, today: dt.date) -> ProviderReport:
    served: list[str] = []
    page = None
    try:
        for _ in range(MAX_PAGES):
            resp = transport.send(list_request(provider, base_url, api_key, page), provider=provider.name,
                                  connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S)
            ids, page = parse_list(provider, resp)
            served.extend(ids)
            if page is None:
                break
    except Exception as exc:  # noqa: BLE001 - one provider's failure is reported, the others still checked
        message = str(exc) or type(exc).__name__
        if api_key:
            message = message.replace(api_key, "***")
        return ProviderReport(provider=provider.name, error=message[:300])
    return compare(catalog, provider.name, served, today)


def run(settings, catalog, transport, today: dt.date, providers: list[str] | None = None) -> list[ProviderReport]:
    """One report per configured provider (the offline mock has no list to check)."""
    reports = []
    for name, provider in catalog.providers.items():
        if provider.format == "mock" or (providers and name not in providers):
            continue
        base_url, api_key = settings.credentials(provider)
        if base_url is None:
            continue
        reports.append(check_provider(provider, base_url, api_key, catalog, transport, today))
    return reports


def render_table(reports: list[ProviderReport]) -> str:
    lines = [f"{'PROVIDER':<12}{'FINDING':<18}{'MODEL':<52}DETAIL"]
    for r in reports:
        if r.error:
            lines.append(f"{r.provider:<12}{'list failed':<18}{'-':<52}{r.error}")
            continue
        for model_id in r.not_served:
            lines.append(f"{r.provider:<12}{'not served':<18}{model_id:<52}the provider no longer lists it")
        for model_id in r.not_in_catalog:
            lines.append(f"{r.provider:<12}{'not in catalog':<18}{model_id:<52}served, unknown to the catalog")
        for item in r.retiring:
            when = (f"in {item['days_left']} days" if item["days_left"] >= 0
                    else f"{-item['days_left']} days ago, still served by the catalog")
            lines.append(f"{r.provider:<12}{'shutdown':<18}{item['id']:<52}{item['shutdown']} ({when})")
        if not r.findings:
            lines.append(f"{r.provider:<12}{'ok':<18}{'-':<52}{r.served} models served, catalog current")
    return "\n".join(lines)
