"""The catalog's facts reach the wire and the bill: capability flags, retirements, per-model defaults,
prices per usage class (cache reads and writes), and a call whose usage the provider did not report."""
from __future__ import annotations

import dataclasses
import json
import uuid
from importlib import resources

import pytest
import responses

from app import model_defaults
from app.calls import DEFAULT_MAX_TOKENS, Call, Message, Options, TextPart, Usage
from app.tenancy.budgets import estimate_cost
from app.catalog import Capabilities, Catalog
from app.config import Settings
from app.dispatch import Dispatcher
from app.tenancy.gateway import _billed_cost
from app.http import HttpResponse
from app.providers import anthropic, gemini, openai_chat, perplexity
from app.answer_schemas import answer_to_dict
from app.tenancy.store import Limits

CATALOG = Catalog.load()
RAW = json.loads(resources.files("app").joinpath("data/models.json").read_text("utf-8"))
ENV = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
       "GEMINI_API_KEY": "gm-test-0123456789", "XAI_API_KEY": "xai-test-0123456789abcdef",
       "GROQ_API_KEY": "gsk-test-0123456789", "PERPLEXITY_API_KEY": "pplx-test-0123456789"}
OPENAI = "https://api.openai.com/v1/chat/completions"


def dispatcher() -> Dispatcher:
    return Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None)


def target(spec: str):
    return dispatcher().target(CATALOG.resolve(spec).model)


DEFAULT_OPTIONS = Options()


def call(model: str, options: Options = DEFAULT_OPTIONS, prompt: str = "What is the capital of France?") -> Call:
    return Call(messages=(Message("user", (TextPart(prompt),)),), model=model, options=options)


def resp(body: dict) -> HttpResponse:
    return HttpResponse(200, json.dumps(body).encode(), {})


DEFAULTED = Options(max_tokens=DEFAULT_MAX_TOKENS, max_tokens_set=False)   # a body without maxTokens


# -- capability flags are the model's own -------------------------------------------------------------
@pytest.mark.parametrize("model_id", ["openai.gpt-4o", "openai.gpt-4o-mini", "openai.gpt-4.1", "openai.gpt-4.1-mini",
                                      "openai.gpt-4.1-nano", "xai.grok-4.20-non-reasoning"])
def test_non_reasoning_models_are_not_marked_reasoning(model_id):
    assert CATALOG.models[model_id].capabilities.reasoning is False


def test_no_provider_default_leaks_into_a_listed_model():
    for entry in RAW["models"]:
        assert CATALOG.models[entry["id"]].capabilities == Capabilities.from_dict(entry.get("capabilities", {})), \
            entry["id"]


def test_a_model_the_catalog_lacks_still_gets_its_providers_defaults():
    model = CATALOG.resolve("openai.gpt-9-unlisted").model
    assert not model.known and model.capabilities == CATALOG.providers["openai"].default_capabilities


@pytest.fixture
def config(config):
    return {**config, "OPENAI_API_KEY": "sk-test-openai-0123456789"}


def test_models_endpoint_capability_reasoning_lists_only_reasoning_models(client, api_key):
    body = client.get("/api/v3/llm/models?capability=reasoning", headers={"X-Api-Key": api_key}).get_json()
    ids = {m["id"] for m in body["models"]}
    assert "openai.gpt-5.6-sol" in ids and "xai.grok-4.3" in ids
    assert not ids & {"openai.gpt-4o", "openai.gpt-4o-mini", "openai.gpt-4.1", "openai.gpt-4.1-mini",
                      "openai.gpt-4.1-nano", "xai.grok-4.20-non-reasoning"}
    everything = client.get("/api/v3/llm/models?include_retired=true", headers={"X-Api-Key": api_key}).get_json()
    gpt4o = next(m for m in everything["models"] if m["id"] == "openai.gpt-4o")
    assert gpt4o["capabilities"]["reasoning"] is False
    opus = next(m for m in everything["models"] if m["id"] == "anthropic.claude-opus-5")
    assert (opus["price_cached_input_per_1m"], opus["price_cache_write_per_1m"]) == (0.5, 6.25)
    assert gpt4o["price_cached_input_per_1m"] is None


# -- the catalog is current -----------------------------------------------------------------------------
@pytest.mark.parametrize("spec, served, shutdown", [
    ("xai.grok-4-0709", "xai.grok-4.3", "2026-05-15"),
    ("grok-3", "xai.grok-4.3", "2026-05-15"),
    ("xai.grok-4-fast-reasoning", "xai.grok-4.3", "2026-05-15"),
    ("xai.grok-4-fast-non-reasoning", "xai.grok-4.20-non-reasoning", "2026-05-15"),
    ("xai.grok-4-1-fast-reasoning", "xai.grok-4.3", "2026-05-15"),
    ("xai.grok-4-1-fast-non-reasoning", "xai.grok-4.20-non-reasoning", "2026-05-15"),
    ("xai.grok-code-fast-1", "xai.grok-4.3", "2026-05-15"),
    ("google.gemini-2.0-flash", "google.gemini-3.5-flash", "2026-06-01"),
    ("groq.llama-3.1-8b-instant", "groq.openai/gpt-oss-20b", "2026-08-16"),
    ("claude-3-7-sonnet", "anthropic.claude-sonnet-4-6", "2026-02-19"),
    ("anthropic.claude-3-5-haiku-20241022", "anthropic.claude-haiku-4-5-20251001", "2026-02-19"),
    ("claude-3-haiku", "anthropic.claude-haiku-4-5-20251001", "2026-04-20"),
])
def test_retired_ids_go_to_their_successor_with_a_warning(spec, served, shutdown):
    resolved = CATALOG.resolve(spec)
    assert resolved.model.id == served
    assert any(f"retired on {shutdown}" in w for w in resolved.warnings)


@pytest.mark.parametrize("spec, temperature", [
    ("anthropic.claude-opus-4-6", True), ("claude-opus-4-5", True), ("anthropic.claude-fable-5", False)])
def test_new_claude_models_are_known_with_native_structured_output(spec, temperature):
    model = CATALOG.resolve(spec).model
    assert model.known and model.status == "active"
    assert model.capabilities.structured == "native" and model.capabilities.temperature is temperature
    plan = anthropic.build_request(call(spec, Options(temperature=0.2)), target(spec))
    assert ("temperature" in plan.request.json) is temperature


# -- temperature: per model ---------------------------------------------------------------------------
@pytest.mark.parametrize("spec, temperature, sent", [
    ("openai.gpt-4o", None, 0.7),                  # our documented default where it suits the model
    ("openai.gpt-4o", 0.1, 0.1),
    ("google.gemini-3.5-flash", None, None),       # Gemini 3: left at Google's default 1.0 (ai.google.dev/gemini-api/docs/gemini-3)
    ("google.gemini-3.5-flash", 0.4, 0.4),         # ... unless the caller chose one
    ("google.gemini-2.5-flash", None, 0.7),
    ("xai.grok-4.3", None, None),                  # reasoning: the provider's default ...
    ("xai.grok-4.3", 0.3, 0.3),                    # ... but a caller's temperature is sent (xAI rejects only
    ("xai.grok-4.5", 0.0, 0.0),                    #     penalties and stop on reasoning models)
    ("openai.gpt-5.6-sol", None, None),            # rejects any non-default temperature
])
def test_temperature_sent(spec, temperature, sent):
    adapter = gemini if spec.startswith("google.") else openai_chat
    body = adapter.build_request(call(spec, Options(temperature=temperature)), target(spec)).request.json
    config = body.get("generationConfig", body)
    assert config.get("temperature") == sent


def test_a_numeric_temperature_default_replaces_ours():
    model = dataclasses.replace(CATALOG.models["openai.gpt-4o"], temperature_default=1.0)
    assert model_defaults.temperature(model, Options()) == (1.0, None)
    assert model_defaults.temperature(model, Options(temperature=0.2)) == (0.2, None)


# -- maxTokens: room to think ---------------------------------------------------------------------------
@pytest.mark.parametrize("spec, field", [
    ("openai.gpt-5.6-sol", "max_completion_tokens"), ("xai.grok-4.3", "max_completion_tokens"),
    ("groq.openai/gpt-oss-120b", "max_completion_tokens"), ("anthropic.claude-opus-5", "max_tokens"),
    ("google.gemini-3.5-flash", "maxOutputTokens"), ("google.gemini-2.5-pro", "maxOutputTokens")])
def test_default_max_tokens_leaves_room_for_thinking(spec, field):
    model = CATALOG.resolve(spec).model
    adapter = {"google": gemini, "anthropic": anthropic}.get(model.provider, openai_chat)
    body = adapter.build_request(call(spec, DEFAULTED), target(spec)).request.json
    sent = body.get("generationConfig", body)[field]
    assert sent == DEFAULT_MAX_TOKENS + model.thinking_allowance and model.thinking_allowance >= 2000
    explicit = adapter.build_request(call(spec, Options(max_tokens=300)), target(spec)).request.json
    assert explicit.get("generationConfig", explicit)[field] == 300      # the caller's own limit is kept


def test_plain_models_keep_the_documented_default():
    body = openai_chat.build_request(call("openai.gpt-4o", DEFAULTED), target("openai.gpt-4o")).request.json
    assert body["max_completion_tokens"] == DEFAULT_MAX_TOKENS


def test_allowance_never_exceeds_the_models_output_limit():
    model = dataclasses.replace(CATALOG.models["openai.gpt-5"], max_output_tokens=2500, thinking_allowance=4000)
    assert model_defaults.max_tokens(model, DEFAULTED) == 2500


def test_call_body_without_max_tokens_is_marked_defaulted():
    from app.schemas import call_from_body
    assert call_from_body({"model": "openai.gpt-5", "prompt": "hi"}).options.max_tokens_set is False
    assert call_from_body({"model": "openai.gpt-5", "prompt": "hi", "options": {"maxTokens": 50}}).options.max_tokens_set


@responses.activate
def test_an_answer_of_thinking_alone_says_so():
    responses.post(OPENAI, json={
        "id": "c", "object": "chat.completion", "model": "gpt-5.6-sol",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 768, "total_tokens": 778,
                  "completion_tokens_details": {"reasoning_tokens": 768}}})
    answer = dispatcher().execute(call("openai.gpt-5.6-sol"))
    assert any("only thinking (768 tokens)" in w for w in answer.warnings)


# -- Groq reasoning_format ------------------------------------------------------------------------------
def test_groq_qwen_asks_for_parsed_reasoning():
    body = openai_chat.build_request(call("groq.qwen/qwen3.6-27b"), target("groq.qwen/qwen3.6-27b")).request.json
    assert body["reasoning_format"] == "parsed"
    plain = openai_chat.build_request(call("groq.openai/gpt-oss-120b"), target("groq.openai/gpt-oss-120b"))
    assert "reasoning_format" not in plain.request.json       # gpt-oss keeps reasoning out of content already
    other = openai_chat.build_request(call("openai.gpt-4o"), target("openai.gpt-4o"))
    assert "reasoning_format" not in other.request.json       # OpenAI would reject the unknown field


# -- usage classes and prices ----------------------------------------------------------------------------
# usage from ../shared/specs/fixtures/test_anthropic/test_anthropic_cache_real_api.yaml (pydantic-ai, MIT)
ANTHROPIC_CACHED = {
    "id": "msg_01KPaKTJSqAKoZri7Ujrny58", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Python is a beginner-friendly, versatile programming language."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 418},
              "cache_creation_input_tokens": 418, "cache_read_input_tokens": 1111, "inference_geo": "not_available",
              "input_tokens": 3, "output_tokens": 33, "service_tier": "standard"}}


def test_anthropic_cache_reads_and_writes_are_priced_as_anthropic_bills_them():
    spec = "anthropic.claude-sonnet-4-5-20250929"
    completion = anthropic.parse_response(resp(ANTHROPIC_CACHED), call(spec), target(spec))
    u = completion.usage
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.cache_write_1h_tokens, u.output_tokens) \
        == (1532, 1111, 418, 0, 33)
    cost, warnings = CATALOG.models[spec].price_usage(u)
    # $3 input, $0.30 cache hits, $3.75 5-minute writes, $15 output (platform.claude.com pricing)
    assert cost == pytest.approx((3 * 3 + 1111 * 0.30 + 418 * 3.75 + 33 * 15) / 1e6)
    assert warnings == ()


def test_one_hour_cache_writes_at_their_own_price():
    usage = Usage(input_tokens=1000, output_tokens=0, cache_write_tokens=1000, cache_write_1h_tokens=400)
    cost, _ = CATALOG.models["anthropic.claude-opus-5"].price_usage(usage)
    assert cost == pytest.approx((600 * 6.25 + 400 * 10) / 1e6)


def test_a_usage_class_without_its_own_price_is_billed_at_input_and_says_so():
    model = CATALOG.models["openai.gpt-4o"]         # no cached-input price from OpenAI's own page yet
    cost, warnings = model.price_usage(Usage(input_tokens=1000, output_tokens=10, cached_input_tokens=800))
    assert cost == pytest.approx((1000 * 2.5 + 10 * 10) / 1e6)
    assert any("800 cached input tokens" in w for w in warnings)


@pytest.mark.parametrize("adapter, spec, body, expected", [
    (openai_chat, "openai.gpt-4o",
     {"id": "c", "object": "chat.completion", "model": "gpt-4o",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 1200, "completion_tokens": 5, "total_tokens": 1205,
                "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 0}}},
     (1200, 1024, 0)),
    (gemini, "google.gemini-3.5-flash",
     {"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
      "usageMetadata": {"promptTokenCount": 2000, "cachedContentTokenCount": 1500, "candidatesTokenCount": 3,
                        "totalTokenCount": 2003}, "modelVersion": "gemini-3.5-flash"},
     (2000, 1500, 0)),
    (perplexity, "perplexity",
     {"id": "resp_1", "object": "response", "status": "completed", "model": "perplexity/sonar",
      "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}],
      "usage": {"input_tokens": 900, "output_tokens": 4, "total_tokens": 904,
                "input_tokens_details": {"cache_read_input_tokens": 300, "cache_creation_input_tokens": 200}}},
     (900, 300, 200)),
])
def test_cache_classes_are_read_from_every_provider(adapter, spec, body, expected):
    usage = adapter.parse_response(resp(body), call(spec), target(spec)).usage
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens) == expected


def test_node_answers_show_the_breakdown():
    completion = anthropic.parse_response(resp(ANTHROPIC_CACHED), call("anthropic.claude-sonnet-4-5-20250929"),
                                          target("anthropic.claude-sonnet-4-5-20250929"))

    @dataclasses.dataclass
    class _Answer:      # only what answer_to_dict reads
        usage: Usage
        text: str = ""
        data: object = None
        model: str = "m"
        provider: str = "anthropic"
        finish_reason: str = "stop"
        cost: float | None = None
        latency_ms: int = 0
        routing: object = None
        warnings: tuple = ()
        request_id: str | None = None
        tool_calls: tuple = ()

    from app.calls import Routing
    routing = Routing(is_auto_routed=False, model_chosen="m", confidence=1.0, reason="")
    body = answer_to_dict(_Answer(usage=completion.usage, routing=routing))
    assert body["usage"] == {"input_tokens": 1532, "output_tokens": 33, "total_tokens": 1565,
                             "cached_input_tokens": 1111, "cache_write_tokens": 418, "reasoning_tokens": 0}
    assert answer_to_dict(_Answer(usage=Usage(reported=False), routing=routing))["usage"] is None


# -- usage the provider did not report ----------------------------------------------------------------------
NO_USAGE = {"id": "c", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}]}


@responses.activate
def test_missing_usage_is_null_with_a_warning_and_an_estimate_for_budgets():
    responses.post(OPENAI, json=NO_USAGE)
    c = call("openai.gpt-4o", Options(max_tokens=100), prompt="x" * 400)
    answer = dispatcher().execute(c)
    assert answer.usage.reported is False and answer.cost is None
    assert answer.estimated_cost == pytest.approx((400 * 2.5 + 100 * 10) / 1e6)   # 400 bytes: at most 400 tokens
    assert any("reported no token usage" in w for w in answer.warnings)
    assert _billed_cost(answer) == answer.estimated_cost


def test_estimate_cost_counts_the_prompt_and_the_whole_output_limit():
    """The prompt's UTF-8 bytes (an upper bound of its tokens) and the output limit actually sent."""
    model = CATALOG.models["anthropic.claude-opus-5"]
    assert estimate_cost(call("anthropic.claude-opus-5", Options(max_tokens=1000), prompt="abcdefg"), model) \
        == pytest.approx((7 * 5 + 1000 * 25) / 1e6)
    default = call("anthropic.claude-opus-5", Options(max_tokens=1000, max_tokens_set=False), prompt="abcdefg")
    assert model.thinking_allowance and estimate_cost(default, model) == pytest.approx(
        (7 * 5 + (1000 + model.thinking_allowance) * 25) / 1e6)
    assert estimate_cost(call("groq.qwen/qwen3.6-27b"), CATALOG.models["groq.qwen/qwen3.6-27b"]) is None


@responses.activate
def test_a_call_without_usage_is_not_free_for_the_budget(client, app):
    responses.post(OPENAI, json=NO_USAGE)
    store = app.extensions["flowcall"].store
    _, key = store.create_key(str(uuid.uuid4()), limits=Limits())
    resp_ = client.post("/api/v3/llm/public/call", headers={"X-Api-Key": key},
                        json={"model": "openai.gpt-4o", "prompt": "x" * 400, "options": {"maxTokens": 100}})
    body = resp_.get_json()
    assert resp_.status_code == 200 and body["usage"] is None and body["cost"] is None
    assert any("reported no token usage" in w for w in body["warnings"])
    totals = client.get("/api/v3/llm/usage", headers={"X-Api-Key": key}).get_json()["totals"]
    assert totals["cost"] == pytest.approx((400 * 2.5 + 100 * 10) / 1e6)   # the estimate: 400 bytes, maxTokens


def test_a_model_added_by_models_file_takes_its_providers_defaults_for_unset_flags(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [{"id": "ollama.llama3.2", "aliases": ["local"],
                                            "capabilities": {"vision": False}, "price": {"input": 0, "output": 0}}]}))
    model = Catalog.load(str(path)).models["ollama.llama3.2"]
    ollama = CATALOG.providers["ollama"].default_capabilities
    assert model.capabilities == dataclasses.replace(ollama, vision=False)


@pytest.mark.parametrize("adapter, spec, body", [
    (openai_chat, "openai.gpt-4o", NO_USAGE),
    (openai_chat, "groq.openai/gpt-oss-120b", {**NO_USAGE, "model": "openai/gpt-oss-120b"}),
    (anthropic, "anthropic.claude-opus-5", {k: v for k, v in ANTHROPIC_CACHED.items() if k != "usage"}),
    (gemini, "google.gemini-3.5-flash",
     {"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}]}),
    (perplexity, "perplexity",
     {"id": "resp_1", "object": "response", "status": "completed", "model": "perplexity/sonar",
      "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}]}),
])
def test_every_adapter_reports_missing_usage_as_unknown(adapter, spec, body):
    usage = adapter.parse_response(resp(body), call(spec), target(spec)).usage
    assert usage.reported is False
    assert CATALOG.resolve(spec).model.price_usage(usage) == (None, ())


# -- one normalized call on every provider: the defaults and usage rows of the fidelity table ----------------
def _all_targets_env():
    return {**ENV, "OLLAMA_BASE_URL": "http://ollama.internal:11434/v1"}


@pytest.mark.parametrize("spec, adapter, path, temperature, max_tokens", [
    # spec, adapter, where the limit goes, temperature sent for a default call, limit sent for a default call
    ("openai.gpt-4o", openai_chat, ("max_completion_tokens",), 0.7, 1000),
    ("openai.gpt-5.6-sol", openai_chat, ("max_completion_tokens",), None, 5000),
    ("xai.grok-4.3", openai_chat, ("max_completion_tokens",), None, 5000),
    ("xai.grok-4.20-non-reasoning", openai_chat, ("max_completion_tokens",), 0.7, 1000),
    ("groq.openai/gpt-oss-120b", openai_chat, ("max_completion_tokens",), 0.7, 5000),
    ("ollama.llama3.2", openai_chat, ("max_tokens",), 0.7, 1000),
    ("anthropic.claude-sonnet-4-6", anthropic, ("max_tokens",), 0.7, 1000),
    ("anthropic.claude-opus-5", anthropic, ("max_tokens",), None, 5000),
    ("google.gemini-2.5-flash-lite", gemini, ("generationConfig", "maxOutputTokens"), 0.7, 1000),
    ("google.gemini-3.8-flash", gemini, ("generationConfig", "maxOutputTokens"), None, 5000),
    ("perplexity.sonar", perplexity, ("max_output_tokens",), None, 1000),
    ("perplexity.sonar-reasoning-pro", perplexity, ("max_output_tokens",), None, None),
])
def test_same_default_call_on_every_provider(spec, adapter, path, temperature, max_tokens):
    t = Dispatcher(Settings.from_env(_all_targets_env()), CATALOG, sleep=lambda s: None).target(
        CATALOG.resolve(spec).model)
    body = adapter.build_request(call(spec, DEFAULTED), t).request.json
    config = body.get("generationConfig", body)
    assert config.get("temperature") == temperature
    node = body
    for key in path[:-1]:
        node = node[key]
    assert node.get(path[-1]) == max_tokens
