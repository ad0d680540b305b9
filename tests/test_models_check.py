"""`flowcall models check` against fakes of each provider's list endpoint (`responses`, no network)."""
from __future__ import annotations

import datetime as dt
import json

import pytest
import responses
from responses import matchers

from app import models_check
from app.catalog import Catalog
from app.cli import main
from app.config import Settings
from app.http import HttpResponse

CATALOG = Catalog.load()
TODAY = "2026-11-29"


def served_ids(provider: str, drop=(), add=()) -> list[str]:
    """What the provider would list if it served exactly the catalog's non-retired models."""
    names = []
    for m in CATALOG.models.values():
        if m.provider == provider and m.status != "retired" and not m.params.get("preset"):
            names.append(m.params.get("model") or m.name)
    return [n for n in names if n not in drop] + list(add)


def openai_list(ids):        # shape of OpenAI's GET /v1/models (openai/openapi.yaml ListModelsResponse)
    return {"object": "list", "data": [{"id": i, "object": "model", "created": 1700000000, "owned_by": "system"}
                                      for i in ids]}


def run_cli(capsys, env, monkeypatch, *args):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code = main(["models", "check", "--today", TODAY, *args])
    return code, capsys.readouterr().out


@responses.activate
def test_openai_catalog_ids_gone_and_new_ids_and_shutdowns(capsys, monkeypatch):
    responses.get("https://api.openai.com/v1/models", json=openai_list(
        served_ids("openai", drop=("gpt-4.1-nano",), add=("gpt-7-preview",))),
        match=[matchers.header_matcher({"Authorization": "Bearer sk-test-openai-0123456789"})])
    code, out = run_cli(capsys, {"OPENAI_API_KEY": "sk-test-openai-0123456789"}, monkeypatch, "--json")
    report = json.loads(out)
    [openai] = report["providers"]
    assert code == 1 and report["checked_on"] == TODAY and report["window_days"] == 30
    assert openai["not_served"] == ["openai.gpt-4.1-nano"]
    assert openai["not_in_catalog"] == ["gpt-7-preview"]
    assert {"id": "openai.gpt-5", "shutdown": "2026-12-11", "days_left": 12} in openai["retiring"]
    assert all(r["id"] != "openai.gpt-4o" for r in openai["retiring"])      # 2027-01-14: outside 30 days
    assert openai["error"] is None


@responses.activate
def test_table_output_and_exit_zero_when_current(capsys, monkeypatch):
    responses.get("https://api.x.ai/v1/models", json=openai_list(served_ids("xai")))
    code, out = run_cli(capsys, {"XAI_API_KEY": "xai-test-0123456789abcdef"}, monkeypatch)
    assert code == 0
    assert out.splitlines()[0].split() == ["PROVIDER", "FINDING", "MODEL", "DETAIL"]
    assert "xai" in out and "catalog current" in out


@responses.activate
def test_anthropic_pages_with_after_id(capsys, monkeypatch):
    ids = served_ids("anthropic", drop=("claude-opus-4-5-20251101",), add=("claude-opus-5-5",))
    first, second = ids[:3], ids[3:]
    headers = {"x-api-key": "sk-ant-test-0123456789", "anthropic-version": "2023-06-01"}
    # page shape from Anthropic's models list (data, has_more, first_id, last_id)
    responses.get("https://api.anthropic.com/v1/models", match=[
        matchers.query_param_matcher({"limit": "1000"}), matchers.header_matcher(headers)],
        json={"data": [{"type": "model", "id": i, "display_name": i, "created_at": "2026-01-01T00:00:00Z"}
                       for i in first], "has_more": True, "first_id": first[0], "last_id": first[-1]})
    responses.get("https://api.anthropic.com/v1/models", match=[
        matchers.query_param_matcher({"limit": "1000", "after_id": first[-1]}), matchers.header_matcher(headers)],
        json={"data": [{"type": "model", "id": i, "display_name": i, "created_at": "2026-01-01T00:00:00Z"}
                       for i in second], "has_more": False, "first_id": second[0], "last_id": second[-1]})
    code, out = run_cli(capsys, {"ANTHROPIC_API_KEY": "sk-ant-test-0123456789"}, monkeypatch, "--json")
    [report] = json.loads(out)["providers"]
    assert code == 1 and report["served"] == len(ids)
    assert report["not_served"] == ["anthropic.claude-opus-4-5-20251101"]
    assert report["not_in_catalog"] == ["claude-opus-5-5"]
    assert {"id": "anthropic.claude-sonnet-4-5-20250929", "shutdown": "2026-11-30", "days_left": 1} in report["retiring"]


@responses.activate
def test_gemini_pages_and_counts_only_generate_content_models(capsys, monkeypatch):
    ids = served_ids("google")
    model = lambda i, methods=("generateContent", "countTokens"): {      # noqa: E731
        "name": f"models/{i}", "displayName": i, "supportedGenerationMethods": list(methods)}
    responses.get("https://generativelanguage.googleapis.com/v1beta/models",
                  match=[matchers.query_param_matcher({"pageSize": "1000"}),
                         matchers.header_matcher({"x-goog-api-key": "gm-test-0123456789"})],
                  json={"models": [model(i) for i in ids[:2]] + [model("text-embedding-005", ("embedContent",))],
                        "nextPageToken": "page-2"})
    responses.get("https://generativelanguage.googleapis.com/v1beta/models",
                  match=[matchers.query_param_matcher({"pageSize": "1000", "pageToken": "page-2"})],
                  json={"models": [model(i) for i in ids[2:]]})
    code, out = run_cli(capsys, {"GEMINI_API_KEY": "gm-test-0123456789"}, monkeypatch, "--json")
    [report] = json.loads(out)["providers"]
    assert report["not_served"] == [] and report["not_in_catalog"] == []          # the embedding model is not counted
    assert [r["id"] for r in report["retiring"]] == ["google.gemini-2.5-flash", "google.gemini-2.5-pro"]
    assert code == 1


@responses.activate
def test_groq_ollama_and_perplexity_lists(capsys, monkeypatch):
    responses.get("https://api.groq.com/openai/v1/models", json=openai_list(served_ids("groq")))
    responses.get("http://ollama.internal:11434/v1/models", json=openai_list(["llama3.2"]))
    responses.get("https://api.perplexity.ai/v1/models", json=openai_list(["perplexity/sonar", "openai/gpt-5.1"]))
    env = {"GROQ_API_KEY": "gsk-test-0123456789", "OLLAMA_BASE_URL": "http://ollama.internal:11434/v1",
           "PERPLEXITY_API_KEY": "pplx-test-0123456789"}
    code, out = run_cli(capsys, env, monkeypatch, "--json")
    by = {r["provider"]: r for r in json.loads(out)["providers"]}
    assert set(by) == {"groq", "ollama", "perplexity"}
    assert by["groq"]["not_served"] == [] and by["groq"]["not_in_catalog"] == []
    assert by["ollama"]["not_in_catalog"] == ["llama3.2"]
    assert by["perplexity"]["not_served"] == [] and by["perplexity"]["not_in_catalog"] == ["openai/gpt-5.1"]
    assert "perplexity.sonar-pro" in by["perplexity"]["unchecked"]        # a preset is not a listed model
    assert code == 1


@responses.activate
def test_a_failing_list_is_reported_without_the_key_and_others_still_checked(capsys, monkeypatch):
    responses.get("https://api.openai.com/v1/models", status=401,
                  json={"error": {"message": "Incorrect API key provided: sk-test-openai-0123456789",
                                  "type": "invalid_request_error", "code": "invalid_api_key"}})
    responses.get("https://api.x.ai/v1/models", json=openai_list(served_ids("xai")))
    env = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "XAI_API_KEY": "xai-test-0123456789abcdef"}
    code, out = run_cli(capsys, env, monkeypatch, "--json")
    by = {r["provider"]: r for r in json.loads(out)["providers"]}
    assert code == 2
    assert "HTTP 401" in by["openai"]["error"] and "sk-test-openai-0123456789" not in out
    assert by["xai"]["error"] is None


def test_only_configured_providers_are_asked(capsys, monkeypatch):
    code, out = run_cli(capsys, {}, monkeypatch)
    assert code == 0 and "nothing to check" in out


def test_past_shutdown_of_a_model_the_catalog_still_serves_is_flagged():
    report = models_check.compare(CATALOG, "openai", served_ids("openai"), dt.date(2026, 12, 20))
    assert {"id": "openai.gpt-5", "shutdown": "2026-12-11", "days_left": -9} in report.retiring
    assert "days ago" in models_check.render_table([report])


def test_parse_list_refuses_an_answer_that_is_not_a_list():
    provider = CATALOG.providers["openai"]
    with pytest.raises(ValueError):
        models_check.parse_list(provider, HttpResponse(200, b'{"object": "list"}', {}))
    assert models_check.run(Settings.from_env({}), CATALOG, transport=None, today=dt.date(2026, 11, 29)) == []
