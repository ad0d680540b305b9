"""Cached input is billed at the provider's own cached-input price where the catalog has one (with
`price_source` naming the provider page), and at the input price with a warning where it has none.

Answers are recorded exchanges from ../shared/specs/fixtures (pydantic-ai cassettes, MIT), parsed by the
real adapters and billed by the dispatcher with the provider mocked by `responses`."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import responses
import yaml

from app.calls import Call, Message, Options, TextPart, Usage
from app.catalog import Catalog
from app.config import Settings
from app.dispatch import Dispatcher
from specs import fixture_file

CATALOG = Catalog.load()
ENV = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "GEMINI_API_KEY": "gm-test-0123456789",
       "GROQ_API_KEY": "gsk-test-0123456789", "XAI_API_KEY": "xai-test-0123456789abcdef",
       "PERPLEXITY_API_KEY": "pplx-test-0123456789"}


def recorded(path: str) -> dict:
    interaction = yaml.safe_load(fixture_file(path).read_text())["interactions"][-1]
    return interaction["response"]["parsed_body"]


def execute(model: str, url: str, body: dict):
    responses.post(url, json=body)
    dispatcher = Dispatcher(Settings.from_env(ENV), CATALOG, sleep=lambda s: None)
    call = Call(messages=(Message("user", (TextPart("What is the capital of France?"),)),), model=model,
                options=Options(max_tokens=64))
    return dispatcher.execute(call)


# -- OpenAI -----------------------------------------------------------------------------------------------
def openai_with_cache_hit() -> dict:
    """The recorded gpt-5 answer; every recorded OpenAI answer in the fixtures reports cached_tokens 0, so
    the counts are set to a cache hit (prompt_tokens includes cached_tokens, as OpenAI reports it)."""
    body = copy.deepcopy(recorded("test_openai/test_openai_model_settings_temperature_ignored_on_gpt_5.yaml"))
    body["usage"].update(prompt_tokens=2048, total_tokens=2059)
    body["usage"]["prompt_tokens_details"]["cached_tokens"] = 1536
    return body


@responses.activate
def test_openai_cached_tokens_at_openais_cached_input_price():
    answer = execute("openai.gpt-5-mini", "https://api.openai.com/v1/chat/completions", openai_with_cache_hit())
    assert (answer.usage.input_tokens, answer.usage.cached_input_tokens, answer.usage.output_tokens) == (2048, 1536, 11)
    # developers.openai.com gpt-5-mini: $0.25 input, $0.025 cached input, $2.00 output per 1M
    assert answer.cost == pytest.approx((512 * 0.25 + 1536 * 0.025 + 11 * 2.00) / 1e6)
    assert not [w for w in answer.warnings if "price" in w]


@responses.activate
def test_openai_model_without_a_cached_price_still_says_so():
    answer = execute("openai.gpt-4o", "https://api.openai.com/v1/chat/completions", openai_with_cache_hit())
    assert answer.cost == pytest.approx((2048 * 2.5 + 11 * 10) / 1e6)
    assert any("1536 cached input tokens were priced as ordinary input" in w for w in answer.warnings)


@responses.activate
def test_gpt_5_6_terra_bills_each_class_as_its_model_page_says():
    """developers.openai.com (zh-Hant copy) gpt-5.6-terra: $2.00 input, $0.20 cached input, $12.00 output per
    1M; cache writes at 1.25x the uncached input rate ($2.50). The answer is the recorded gpt-5 one with a
    cache hit and a cache write (`prompt_tokens_details.cache_write_tokens`, counted in prompt_tokens)."""
    body = openai_with_cache_hit()
    body["usage"]["prompt_tokens_details"]["cache_write_tokens"] = 256
    answer = execute("openai.gpt-5.6-terra", "https://api.openai.com/v1/chat/completions", body)
    u = answer.usage
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens) == (2048, 1536, 256, 11)
    assert answer.cost == pytest.approx((256 * 2.00 + 1536 * 0.20 + 256 * 2.50 + 11 * 12.00) / 1e6)
    assert not [w for w in answer.warnings if "price" in w]


@pytest.mark.parametrize("model_id, input_, cached, write, output", [
    # developers.openai.com (ja-JP copy) gpt-6.1-sol: $2.00 input, $0.10 cached, $2.50 cache writes, $10.00 output
    ("openai.gpt-6.1-sol", 2.00, 0.10, 2.50, 10.00),
    # developers.openai.com gpt-5.6-sol: $4.00 input, $0.40 cached, $20.00 output; writes at 1.25x input (ja-JP copy)
    ("openai.gpt-5.6-sol", 4.00, 0.40, 5.00, 20.00),
])
def test_openai_model_pages_price_every_class(model_id, input_, cached, write, output):
    usage = Usage(input_tokens=3000, output_tokens=10, cached_input_tokens=1000, cache_write_tokens=1500)
    cost, warnings = CATALOG.models[model_id].price_usage(usage)
    assert cost == pytest.approx((500 * input_ + 1000 * cached + 1500 * write + 10 * output) / 1e6)
    assert warnings == ()


def test_openai_cache_writes_at_their_own_price():
    usage = Usage(input_tokens=3000, output_tokens=10, cached_input_tokens=1000, cache_write_tokens=1500)
    cost, warnings = CATALOG.models["openai.gpt-6.1-terra"].price_usage(usage)
    # developers.openai.com gpt-6.1-terra: $1 input, $0.05 cached, $1.25 cache writes, $5 output per 1M
    assert cost == pytest.approx((500 * 1 + 1000 * 0.05 + 1500 * 1.25 + 10 * 5) / 1e6)
    assert warnings == ()


# -- Anthropic --------------------------------------------------------------------------------------------
def test_claude_sonnet_5_bills_each_class_as_its_model_page_says():
    """platform.claude.com (zh-CN copy) models/sonnet-5/overview, Pricing block: $2 input, $2.50 5-minute
    cache writes, $4 1-hour cache writes, $0.20 cache reads, $10 output per 1M tokens."""
    usage = Usage(input_tokens=10_000, output_tokens=500, cached_input_tokens=6_000, cache_write_tokens=3_000,
                  cache_write_1h_tokens=1_000)
    cost, warnings = CATALOG.models["anthropic.claude-sonnet-5"].price_usage(usage)
    assert cost == pytest.approx((1_000 * 2 + 6_000 * 0.20 + 2_000 * 2.50 + 1_000 * 4 + 500 * 10) / 1e6)
    assert warnings == ()


# -- Gemini -----------------------------------------------------------------------------------------------
GEMINI = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"


@responses.activate
def test_gemini_recorded_cache_hit_is_split_and_billed_at_input_with_a_warning():
    """test_google_model_mobile_youtube_video_url_input.yaml: 17379 of 17713 prompt tokens came from the
    cache. No copy of Google's pricing page was available, so the catalog has no cached price for Gemini:
    the cached tokens are billed at the input price and the answer says so."""
    body = recorded("test_google/test_google_model_mobile_youtube_video_url_input.yaml")
    answer = execute("google.gemini-2.5-flash", GEMINI, body)
    u = answer.usage
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens) == (17713, 17379, 0)
    output = u.output_tokens
    assert output == 68 + 821          # candidates + thoughts: Gemini bills thinking as output
    assert answer.cost == pytest.approx((17713 * 0.30 + output * 2.50) / 1e6)
    assert any("17379 cached input tokens were priced as ordinary input" in w for w in answer.warnings)


# -- Groq (OpenAI-compatible) ------------------------------------------------------------------------------
@responses.activate
def test_groq_recorded_cache_hit_at_half_the_input_price():
    """test_groq/test_tool_use_failed_error.yaml: openai/gpt-oss-120b, 256 of 336 prompt tokens cached.
    Groq's prompt-caching page: cached portions cost 50% less ($0.075 against $0.15 input)."""
    body = recorded("test_groq/test_tool_use_failed_error.yaml")
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 256
    answer = execute("groq.openai/gpt-oss-120b", "https://api.groq.com/openai/v1/chat/completions", body)
    u = answer.usage
    assert (u.input_tokens, u.cached_input_tokens, u.output_tokens) == (336, 256, 96)
    assert answer.cost == pytest.approx((80 * 0.15 + 256 * 0.075 + 96 * 0.60) / 1e6)
    assert not [w for w in answer.warnings if "price" in w]


# -- the catalog's evidence --------------------------------------------------------------------------------
RAW = json.loads((Path(__file__).parents[1] / "app" / "data" / "models.json").read_text("utf-8"))


@pytest.mark.parametrize("entry", [m for m in RAW["models"] if m["provider"] not in ("anthropic", "mock")
                                   and set(m.get("price") or {}) - {"input", "output"}], ids=lambda m: m["id"])
def test_every_cache_price_cites_the_providers_page(entry):
    assert entry.get("price_source", "").startswith("https://") and entry.get("price_note")


@pytest.mark.parametrize("model_id", ["openai.gpt-4.1-nano", "groq.openai/gpt-oss-20b"])
def test_models_that_had_no_price_now_answer_a_cost(model_id):
    assert CATALOG.models[model_id].cost(Usage(input_tokens=1000, output_tokens=100)) is not None


@pytest.mark.parametrize("model_id", ["openai.gpt-4.1-mini", "google.gemini-2.5-flash-lite",
                                      "xai.grok-4.20-non-reasoning", "groq.qwen/qwen3.6-27b",
                                      "perplexity.sonar-pro", "perplexity.sonar-reasoning",
                                      "perplexity.sonar-reasoning-pro", "perplexity.sonar-deep-research"])
def test_models_without_a_published_price_stay_null_and_say_why(model_id):
    entry = next(m for m in RAW["models"] if m["id"] == model_id)
    assert entry["price"] is None and CATALOG.models[model_id].cost(Usage(1000, 100)) is None
    assert entry.get("price_note", "").startswith("no price: ")
