"""model "auto": the policy in app/data/routing.json applied to the call's task, needs and configured providers.

Expected choices in the tables were computed apart from the router, from the policy's quality scores,
the catalog's prices and the formula in the policy's "_doc"; the property test restates the hard
requirements on its own, so a router bug cannot agree with itself.
"""
from __future__ import annotations

import itertools
import json
import math
import random
from importlib import resources

import pytest

from app.routing import auto as autoroute
from app.calls import Call, ImagePart, Message, Options, ResponseFormat, TextPart
from app.catalog import Catalog, merge
from app.config import Settings
from app.errors import CapabilityMissing, ServiceUnavailable, ValidationError
from app.routing.resolve import route

RAW_CATALOG = json.loads(resources.files("app").joinpath("data/models.json").read_text("utf-8"))
CATALOG = Catalog(RAW_CATALOG)
POLICY = json.loads(resources.files("app").joinpath("data/routing.json").read_text("utf-8"))
DOCUMENTED_TASKS = ("chat_general", "summarize", "extract_structure", "classify", "translate", "code",
                    "reasoning", "vision", "creative_writing", "web_search")
PROVIDER_ENV = {
    "openai": {"OPENAI_API_KEY": "sk-test-openai-0123456789"},
    "anthropic": {"ANTHROPIC_API_KEY": "sk-ant-test-0123456789"},
    "google": {"GEMINI_API_KEY": "AIzaTest0123456789abcdefghij"},
    "xai": {"XAI_API_KEY": "xai-test-0123456789abcdef"},
    "groq": {"GROQ_API_KEY": "gsk_test0123456789"},
    "perplexity": {"PERPLEXITY_API_KEY": "pplx-test0123456789"},
    "ollama": {"OLLAMA_BASE_URL": "http://localhost:11434/v1"},
}
ALL = tuple(PROVIDER_ENV)
IMAGE = "data:image/png;base64,iVBORw0KGgo="


def settings(*providers: str, preference: str | None = None, **extra: str) -> Settings:
    env = {k: v for p in providers for k, v in PROVIDER_ENV[p].items()}
    if preference:
        env["FLOWCALL_ROUTING_PREFERENCE"] = preference
    return Settings.from_env({**env, **extra})


def call(text: str = "Hello there", *, task: str | None = None, images: int = 0, fmt: str | None = None,
         max_tokens: int = 1000, stop: tuple[str, ...] = (), fallbacks: tuple[str, ...] = ()) -> Call:
    parts = (TextPart(text), *(ImagePart(IMAGE) for _ in range(images)))
    response_format = None
    if fmt == "json_schema":
        response_format = ResponseFormat("json_schema", schema={"type": "object"})
    elif fmt == "json_object":
        response_format = ResponseFormat("json_object")
    return Call(messages=(Message("user", parts),), model="auto", task=task, response_format=response_format,
                options=Options(max_tokens=max_tokens, stop=stop), fallbacks=fallbacks)


def catalog_with(*models: dict) -> Catalog:
    return Catalog(merge(RAW_CATALOG, {"models": list(models)}))


def chosen(r) -> str:
    return r.candidates[0].model.id


def policy_file(tmp_path, models: list[tuple[str, float]], **changes) -> str:
    policy = {**POLICY, "tasks": {**POLICY["tasks"], "chat_general": {"models": [
        {"id": m, "quality": q} for m, q in models]}}, **changes}
    path = tmp_path / f"routing-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(policy))
    return str(path)


# -- the policy file ----------------------------------------------------------------------------
def test_policy_is_documented_and_names_only_current_models():
    assert POLICY["_doc"] and POLICY["_source"] and POLICY["_updated"]
    assert set(DOCUMENTED_TASKS) <= set(POLICY["tasks"])
    for task, spec in POLICY["tasks"].items():
        qualities = [e["quality"] for e in spec["models"]]
        assert qualities == sorted(qualities, reverse=True), f"{task}: list best first"
        for entry in spec["models"]:
            assert 0 <= entry["quality"] <= 1
            if entry["id"] == autoroute.LOCAL:
                continue
            model = CATALOG.models[entry["id"]]     # KeyError: not a catalog id
            assert model.status == "active" and model.provider != "mock", entry["id"]
            assert model.has_price, f"{entry['id']}: cost comes from the catalog price"


@pytest.mark.parametrize("bad, message", [
    ({"default_task": "nope"}, "default_task"),
    ({"task_aliases": {"x": "nope"}}, "alias"),
    ({"tasks": {"chat_general": {"models": [{"id": "openai.gpt-6-luna", "quality": 2}]}}}, "quality"),
    ({"tasks": {"chat_general": {"models": []}}}, "non-empty"),
    ({"tasks": {"chat_general": {"requires": ["telepathy"], "models": [{"id": "openai.gpt-6-luna", "quality": 1}]}}},
     "telepathy"),
    ({"scoring": {**POLICY["scoring"], "preferences": {"balanced": {"quality": 1, "cost": 0}}}}, "preferences"),
])
def test_a_malformed_policy_file_fails_loudly(tmp_path, bad, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**POLICY, **bad, "tasks": {**POLICY["tasks"], **bad.get("tasks", {})}}))
    with pytest.raises(ValueError, match=message):
        autoroute.choose(call(), CATALOG, settings("openai", FLOWCALL_ROUTING_FILE=str(path)))


@pytest.mark.parametrize("model_id", ["openai.gpt-99-imaginary", "nobody.model"])
def test_a_policy_naming_a_model_the_catalog_lacks_is_a_bug_not_a_guess(tmp_path, model_id):
    path = policy_file(tmp_path, [(model_id, 0.9)])
    with pytest.raises(RuntimeError, match=model_id):     # a 500 for the operator, not a 400 for the caller
        autoroute.choose(call(), CATALOG, settings("openai", FLOWCALL_ROUTING_FILE=path))


# -- the choice per task, provider set and preference ---------------------------------------------
CHOICES = [
    ("chat_general", ALL, "balanced", "openai.gpt-6-luna"),
    ("chat_general", ALL, "cost", "openai.gpt-6-luna"),
    ("chat_general", ALL, "quality", "openai.gpt-6.1-sol"),
    ("chat_general", ("anthropic",), "balanced", "anthropic.claude-sonnet-5"),
    ("chat_general", ("anthropic",), "cost", "anthropic.claude-haiku-4-5-20251001"),
    ("chat_general", ("anthropic",), "quality", "anthropic.claude-opus-5"),
    ("chat_general", ("groq", "perplexity"), "balanced", "groq.openai/gpt-oss-120b"),
    ("chat_general", ("perplexity",), "balanced", "perplexity.sonar"),
    ("summarize", ALL, "balanced", "openai.gpt-6-luna"),
    ("summarize", ("anthropic", "google"), "balanced", "google.gemini-3.1-flash-lite"),
    ("summarize", ALL, "quality", "anthropic.claude-sonnet-5"),
    ("extract_structure", ("anthropic", "google"), "balanced", "google.gemini-3.1-flash-lite"),
    ("extract_structure", ALL, "quality", "openai.gpt-6.1-terra"),
    ("extract_structure", ("groq", "ollama"), "balanced", "groq.openai/gpt-oss-120b"),
    ("classify", ("anthropic", "groq"), "balanced", "groq.openai/gpt-oss-120b"),
    ("classify", ("google",), "quality", "google.gemini-3.8-flash"),
    ("translate", ("anthropic", "google"), "balanced", "google.gemini-3.1-flash-lite"),
    ("translate", ALL, "quality", "google.gemini-3.1-pro-preview"),
    ("code", ALL, "balanced", "openai.gpt-6.1-sol"),
    ("code", ALL, "cost", "groq.openai/gpt-oss-120b"),
    ("code", ("anthropic",), "balanced", "anthropic.claude-sonnet-5"),
    ("code", ("openai", "anthropic"), "cost", "openai.gpt-6-luna"),
    ("code", ("openai", "anthropic"), "quality", "anthropic.claude-opus-5"),
    ("reasoning", ALL, "balanced", "openai.gpt-6.1-sol"),
    ("reasoning", ("google", "xai"), "balanced", "xai.grok-4.3"),
    ("reasoning", ("google", "anthropic"), "cost", "google.gemini-3.8-flash"),
    ("vision", ALL, "balanced", "google.gemini-3.8-flash"),
    ("vision", ("openai", "anthropic"), "balanced", "openai.gpt-6-luna"),
    ("vision", ALL, "quality", "google.gemini-3.1-pro-preview"),
    ("creative_writing", ALL, "balanced", "anthropic.claude-sonnet-5"),
    ("creative_writing", ("openai", "google"), "balanced", "google.gemini-3.8-flash"),
    ("creative_writing", ALL, "quality", "anthropic.claude-opus-5"),
    ("web_search", ALL, "balanced", "perplexity.sonar"),
    (None, ALL, "balanced", "openai.gpt-6-luna"),
]


@pytest.mark.parametrize("task, providers, preference, expected", CHOICES)
def test_choice_and_reason_follow_the_policy(task, providers, preference, expected):
    r = autoroute.choose(call(task=task), CATALOG, settings(*providers, preference=preference))
    assert r.is_auto and chosen(r) == expected
    name = task or "chat_general"
    entries = POLICY["tasks"][name]["models"]
    quality = next(e["quality"] for e in entries if e["id"] == expected)
    def provider_of(e):
        return "ollama" if e["id"] == "@local" else e["id"].split(".")[0]
    # the local model is assumed text-only, so the vision task never offers it
    offered = [e for e in entries if provider_of(e) in providers and not (name == "vision" and e["id"] == "@local")]
    assert r.reason.startswith(f"Task {name}" + (" (default)" if task is None else ""))
    assert f"chose {expected}: " in r.reason and f"quality {quality:.2f}" in r.reason
    if len(offered) > 1:
        assert f"best {preference} score among {len(offered)} configured candidates" in r.reason
    else:
        assert "the only configured candidate" in r.reason
    assert 0 <= r.confidence <= 1


def test_reason_is_one_plain_sentence():
    r = autoroute.choose(call(task="extract_structure", fmt="json_schema"), CATALOG, settings("anthropic", "google"))
    assert r.reason == ("Task extract_structure needs json_schema; chose google.gemini-3.1-flash-lite: best balanced "
                        "score among 4 configured candidates (quality 0.88, $0.25/$1.50 per 1M).")


@pytest.mark.parametrize("task, cheap, good", [
    ("chat_general", "anthropic.claude-haiku-4-5-20251001", "anthropic.claude-opus-5"),
    ("code", "openai.gpt-6-luna", "anthropic.claude-opus-5"),
    ("reasoning", "groq.openai/gpt-oss-120b", "openai.gpt-6.1-sol"),
])
def test_the_preference_shifts_the_choice(task, cheap, good):
    providers = {"chat_general": ("anthropic",), "code": ("openai", "anthropic"), "reasoning": ALL}[task]
    by_cost = autoroute.choose(call(task=task), CATALOG, settings(*providers, preference="cost"))
    by_quality = autoroute.choose(call(task=task), CATALOG, settings(*providers, preference="quality"))
    assert (chosen(by_cost), chosen(by_quality)) == (cheap, good)
    def price(m):
        return CATALOG.models[m].price_input + 3 * CATALOG.models[m].price_output
    assert price(cheap) < price(good)


# -- what the request shows ---------------------------------------------------------------------
def test_images_route_only_to_vision_models():
    r = autoroute.choose(call(images=2), CATALOG, settings("groq", "ollama", "openai"))
    assert chosen(r) == "openai.gpt-6-luna"
    assert all(c.model.capabilities.vision for c in r.candidates)
    assert not {"groq", "ollama"} & {c.model.provider for c in r.candidates}
    assert "needs vision" in r.reason


def test_images_without_a_vision_model_say_which_key_would_help():
    with pytest.raises(CapabilityMissing) as exc:
        autoroute.choose(call(images=1), CATALOG, settings("groq", "ollama"))
    err = exc.value
    assert err.status == 400 and err.code == "capability_missing" and set(err.fields) == {"messages"}
    assert "groq.openai/gpt-oss-120b" in err.message and "ollama.llama3.2" in err.message
    assert "ANTHROPIC_API_KEY" in err.message and "OPENAI_API_KEY" in err.message


def test_the_vision_task_needs_vision_even_without_images():
    text_only = catalog_with({"id": "google.gemini-3.8-flash", "capabilities": {"vision": False}})
    r = autoroute.choose(call(task="vision"), text_only, settings("google"))
    assert chosen(r) != "google.gemini-3.8-flash" and all(c.model.capabilities.vision for c in r.candidates)
    with pytest.raises(CapabilityMissing) as exc:
        autoroute.choose(call(task="vision"), CATALOG, settings("ollama"))
    assert set(exc.value.fields) == {"context.task"}


def test_json_schema_routes_only_to_models_with_structured_outputs():
    catalog = catalog_with({"id": "openai.gpt-6-luna", "capabilities": {"json_schema": False}},
                           {"id": "google.gemini-3.1-flash-lite", "capabilities": {"json_schema": False}})
    plain = autoroute.choose(call(), catalog, settings("openai", "google"))
    assert chosen(plain) == "openai.gpt-6-luna"                      # the best without the constraint
    r = autoroute.choose(call(fmt="json_schema"), catalog, settings("openai", "google"))
    assert chosen(r) == "google.gemini-3.8-flash"
    assert all(c.model.capabilities.json_schema for c in r.candidates)


def test_json_object_accepts_json_mode_or_structured_outputs():
    catalog = catalog_with({"id": "openai.gpt-6-luna", "capabilities": {"json_object": False}},
                           {"id": "google.gemini-3.8-flash",
                            "capabilities": {"json_object": False, "json_schema": False}})
    r = autoroute.choose(call(fmt="json_object"), catalog, settings("openai", "google"))
    assert chosen(r) == "openai.gpt-6-luna"                          # json_schema suffices for JSON mode
    assert "google.gemini-3.8-flash" not in [c.model.id for c in r.candidates]
    assert r.reason.startswith("Task chat_general (default) needs json_object;")


def test_a_long_prompt_skips_small_context_windows():
    long_text = "x" * 600_000                                       # ~150,000 tokens
    r = autoroute.choose(call(long_text), CATALOG, settings("openai", "anthropic"))
    # OpenAI's current models have no context_window in the catalog: assumed 128,000.
    assert chosen(r) == "anthropic.claude-sonnet-5"
    assert {c.model.provider for c in r.candidates} == {"anthropic"}
    assert "~151,000 tokens of context" in r.reason


def test_a_prompt_beyond_every_window_is_the_callers_to_fix():
    huge = "x" * 4_000_000                                          # ~1,000,000 tokens
    with pytest.raises(CapabilityMissing) as exc:
        autoroute.choose(call(huge), CATALOG, settings("openai", "anthropic"))
    assert set(exc.value.fields) == {"messages"} and "1,000,000 prompt tokens" in exc.value.message
    assert "google.gemini-3.1-pro-preview (set GEMINI_API_KEY or GOOGLE_API_KEY)" in exc.value.message
    assert chosen(autoroute.choose(call(huge), CATALOG, settings("openai", "google"))).startswith("google.")


def test_images_count_towards_the_prompt_size():
    text = "x" * 4 * 126_000                                        # 126,000 tokens + 1,000 max tokens: fits 128k
    assert chosen(autoroute.choose(call(text), CATALOG, settings("openai"))) == "openai.gpt-6-luna"
    with pytest.raises(CapabilityMissing):
        autoroute.choose(call(text, images=2), CATALOG, settings("openai"))


def test_max_tokens_must_fit_the_model_output_limit():
    with pytest.raises(CapabilityMissing) as exc:
        autoroute.choose(call(max_tokens=70_000), CATALOG, settings("anthropic", "google"))
    assert set(exc.value.fields) == {"options.maxTokens"}
    r = autoroute.choose(call(max_tokens=70_000), CATALOG, settings("anthropic", "google", "openai"))
    assert chosen(r).startswith("openai.")                         # output limit unknown: not ruled out
    assert "70,000 output tokens" in r.reason


def test_stop_sequences_prefer_native_support_without_excluding_others():
    plain = autoroute.choose(call(), CATALOG, settings("openai", "google"))
    with_stop = autoroute.choose(call(stop=("END",)), CATALOG, settings("openai", "google"))
    assert chosen(plain) == "openai.gpt-6-luna" and not CATALOG.models["openai.gpt-6-luna"].capabilities.stop
    assert chosen(with_stop) == "google.gemini-3.8-flash" and "native stop sequences" in with_stop.reason
    too_many = autoroute.choose(call(stop=tuple("ABCDEF")), CATALOG, settings("openai", "google"))
    assert chosen(too_many) == "openai.gpt-6-luna"                 # Gemini takes 5 natively, not 6
    only_openai = autoroute.choose(call(stop=("END",)), CATALOG, settings("openai"))
    assert chosen(only_openai) == "openai.gpt-6-luna"              # a bonus, not a filter


# -- which models may be candidates ---------------------------------------------------------------
def test_deprecated_models_are_penalised_and_retired_ones_never_chosen():
    deprecated = catalog_with({"id": "openai.gpt-6-luna", "status": "deprecated", "shutdown": "2027-06-01",
                               "successor": "openai.gpt-6.1-terra"})
    r = autoroute.choose(call(), deprecated, settings("openai", "google"))
    assert chosen(r) == "google.gemini-3.8-flash"          # luna won this call before the penalty
    every_openai_classifier = ("openai.gpt-6.1-terra", "openai.gpt-6-luna", "openai.gpt-5.6-luna")
    all_deprecated = catalog_with(*({"id": m, "status": "deprecated", "shutdown": "2027-06-01"}
                                    for m in every_openai_classifier))
    alone = autoroute.choose(call(task="classify"), all_deprecated, settings("openai"))
    assert chosen(alone) == "openai.gpt-6-luna" and "deprecated" in alone.reason
    assert any("deprecated" in w for w in alone.candidates[0].warnings)
    retired = catalog_with({"id": "openai.gpt-6-luna", "status": "retired", "successor": "openai.gpt-6.1-terra"})
    r = autoroute.choose(call(), retired, settings("openai", "google"))
    assert "openai.gpt-6-luna" not in [c.model.id for c in r.candidates]


def test_no_provider_configured_names_every_variable_to_set():
    with pytest.raises(ServiceUnavailable) as exc:
        autoroute.choose(call(), CATALOG, settings())
    err = exc.value
    assert err.status == 503 and err.code == "no_provider_configured"
    for provider in CATALOG.providers.values():
        if provider.format == "mock":
            continue
        for name in (provider.key_env if provider.requires_key else (provider.base_url_env,)):
            assert name in err.message, name
    assert "OLLAMA_BASE_URL" in err.message and "mock.echo" in err.message


def test_a_task_no_configured_provider_serves_is_a_configuration_gap():
    with pytest.raises(ServiceUnavailable) as exc:
        autoroute.choose(call(task="web_search"), CATALOG, settings("openai", "anthropic"))
    assert exc.value.code == "no_provider_for_task" and "PERPLEXITY_API_KEY" in exc.value.message
    assert set(exc.value.fields) == {"context.task"}


def test_only_ollama_configured_routes_to_the_local_model():
    r = autoroute.choose(call(), CATALOG, settings("ollama"))
    model = r.candidates[0].model
    assert model.id == "ollama.llama3.2" and len(r.candidates) == 1
    assert (model.price_input, model.price_output, model.capabilities.vision) == (0, 0, False)
    assert r.confidence == POLICY["confidence"]["single_candidate"]
    assert r.reason == ("Task chat_general (default); chose ollama.llama3.2: the only configured candidate "
                        "(quality 0.45, local, $0).")
    assert r.candidates[0].warnings == (
        "Model ollama.llama3.2 is not in the catalog: auto-routing assumed the routing policy's local model facts "
        "(local, $0, vision no); describe it in FLOWCALL_MODELS_FILE to change that.",)
    for name in ("qwen3:8b", "ollama.qwen3:8b"):
        r = autoroute.choose(call(), CATALOG, settings("ollama", FLOWCALL_OLLAMA_MODEL=name))
        assert chosen(r) == "ollama.qwen3:8b"


def test_a_local_model_the_catalog_describes_keeps_its_facts():
    catalog = catalog_with({"id": "ollama.llava", "capabilities": {"vision": True}, "context_window": 8192})
    s = settings("ollama", FLOWCALL_OLLAMA_MODEL="llava")
    r = autoroute.choose(call(images=1), catalog, s)
    assert chosen(r) == "ollama.llava" and r.candidates[0].model.price_input == 0
    with pytest.raises(CapabilityMissing):                        # its own 8k window now applies
        autoroute.choose(call("x" * 40_000), catalog, s)
    with pytest.raises(CapabilityMissing):                        # unknown local model: text-only
        autoroute.choose(call(images=1), CATALOG, s)


def test_the_mock_is_never_auto_routed():
    with pytest.raises(ServiceUnavailable):
        autoroute.choose(call(), CATALOG, settings())
    for task in DOCUMENTED_TASKS:
        r = autoroute.choose(call(task=task), CATALOG, settings(*ALL))
        assert "mock" not in {c.model.provider for c in r.candidates}


# -- property: whatever is configured or asked, a missing hard requirement is never chosen ----------
VARIANT_CATALOGS = [
    CATALOG,
    catalog_with({"id": "openai.gpt-6-luna", "capabilities": {"vision": False, "json_schema": False}},
                 {"id": "anthropic.claude-sonnet-5", "capabilities": {"json_schema": False, "json_object": False}},
                 {"id": "google.gemini-3.8-flash", "capabilities": {"vision": False}, "max_output_tokens": 8192},
                 {"id": "xai.grok-4.3", "context_window": 32768}),
    catalog_with({"id": "google.gemini-3.1-flash-lite", "capabilities": {"json_object": False, "json_schema": False}},
                 {"id": "groq.openai/gpt-oss-120b", "capabilities": {"json_schema": False}},
                 {"id": "anthropic.claude-haiku-4-5-20251001", "status": "retired",
                  "successor": "anthropic.claude-sonnet-4-6"},
                 {"id": "openai.gpt-6.1-terra", "capabilities": {"vision": False}}),
]


def independent_fit(model, c: Call, configured: set[str]) -> bool:
    """The hard requirements restated from the policy's _doc, without the router's code."""
    caps = model.capabilities
    text = sum(len(p.text) for m in c.messages for p in m.parts if isinstance(p, TextPart))
    images = sum(isinstance(p, ImagePart) for m in c.messages for p in m.parts)
    prompt = math.ceil(text / 4) + 1000 * images
    fmt = c.response_format.type if c.response_format else None
    return (model.provider in configured and model.provider != "mock" and model.status != "retired"
            and (caps.vision or not (images or c.task == "vision"))
            and (caps.json_schema or fmt != "json_schema")
            and (caps.json_object or caps.json_schema or fmt != "json_object")
            and prompt + c.options.max_tokens <= (model.context_window or 128_000)
            and (model.max_output_tokens is None or c.options.max_tokens <= model.max_output_tokens))


def test_a_model_lacking_a_required_capability_is_never_chosen():
    rng = random.Random(20261123)
    subsets = [s for n in range(1, len(ALL) + 1) for s in itertools.combinations(ALL, n)]
    outcomes = set()
    for _ in range(600):
        providers = rng.choice(subsets)
        catalog = rng.choice(VARIANT_CATALOGS)
        c = call("y" * rng.choice([10, 200_000, 560_000]), task=rng.choice((None, *DOCUMENTED_TASKS)),
                 images=rng.choice([0, 0, 1]), fmt=rng.choice([None, "json_object", "json_schema"]),
                 max_tokens=rng.choice([256, 1000, 40_000]), stop=rng.choice([(), ("END",)]))
        s = settings(*providers, preference=rng.choice(["balanced", "cost", "quality"]))
        configured = {p for p in providers}
        try:
            r = autoroute.choose(c, catalog, s)
        except (CapabilityMissing, ServiceUnavailable):
            task = c.task or "chat_general"
            listed = [e["id"] for e in POLICY["tasks"][task]["models"] if e["id"] != "@local"]
            assert not any(independent_fit(catalog.models[m], c, configured) for m in listed)
            outcomes.add("refused")
            continue
        assert all(independent_fit(x.model, c, configured) for x in r.candidates), (providers, c)
        assert 0 <= r.confidence <= 1 and len(r.candidates) == len({x.model.id for x in r.candidates})
        outcomes.add("routed")
    assert outcomes == {"routed", "refused"}


# -- determinism, ties and confidence -------------------------------------------------------------
def test_same_input_same_route_whatever_the_environment_order():
    c = call(task="code", stop=("END",))
    routes = set()
    for order in itertools.permutations(("openai", "anthropic", "google", "xai")):
        r = autoroute.choose(c, CATALOG, settings(*order))
        routes.add((tuple(x.model.id for x in r.candidates), r.confidence, r.reason))
    assert len(routes) == 1


def test_exact_ties_go_to_the_earlier_policy_entry(tmp_path):
    # Same price ($1/$5) and same quality: only the order in the policy separates them.
    pair = [("openai.gpt-6.1-terra", 0.8), ("anthropic.claude-haiku-4-5-20251001", 0.8)]
    for models in (pair, pair[::-1]):
        r = autoroute.choose(call(), CATALOG, settings("openai", "anthropic",
                                                       FLOWCALL_ROUTING_FILE=policy_file(tmp_path, models)))
        assert chosen(r) == models[0][0] and r.confidence == 0.5


def test_confidence_grows_with_the_margin(tmp_path):
    def confidence_for(second_quality: float) -> float:
        path = policy_file(tmp_path, [("openai.gpt-6.1-terra", 0.9), ("anthropic.claude-haiku-4-5-20251001",
                                                                       second_quality)])
        return autoroute.choose(call(), CATALOG, settings("openai", "anthropic", FLOWCALL_ROUTING_FILE=path)).confidence
    values = [confidence_for(q) for q in (0.89, 0.85, 0.7, 0.2)]
    assert values == sorted(values) and len(set(values)) == 4
    assert 0.5 < values[0] < 0.7 and values[-1] == POLICY["confidence"]["max"]
    # 0.5 + 0.5 * (1 - exp(-margin / 0.05)) with margin 0.7 * 0.01
    assert values[0] == round(0.5 + 0.5 * (1 - math.exp(-0.007 / 0.05)), 3)


# -- tasks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["chatty", "task_type", "summarise-everything"])
def test_an_unknown_task_is_a_400_on_context_task(task):
    with pytest.raises(ValidationError) as exc:
        autoroute.choose(call(task=task), CATALOG, settings("openai"))
    err = exc.value
    assert err.status == 400 and set(err.fields) == {"context.task"}
    for known in DOCUMENTED_TASKS:
        assert known in err.fields["context.task"] and known in err.message


def test_unknown_task_is_reported_before_missing_configuration():
    with pytest.raises(ValidationError):
        autoroute.choose(call(task="nope"), CATALOG, settings())


@pytest.mark.parametrize("spelled, task", [
    ("Summarize", "summarize"), (" creative-writing ", "creative_writing"), ("Extract Structure", "extract_structure"),
    ("summarization", "summarize"), ("coding", "code"), ("", "chat_general"),
])
def test_task_spelling_is_forgiven(spelled, task):
    r = autoroute.choose(call(task=spelled), CATALOG, settings("openai"))
    assert r.reason.startswith(f"Task {task}")


# -- fallbacks ----------------------------------------------------------------------------------
def test_fallbacks_try_other_providers_first():
    r = autoroute.choose(call(), CATALOG, settings("openai", "google", "anthropic"))
    ids = [c.model.id for c in r.candidates]
    # ranked: luna (openai), 3.8-flash (google), 6.1-terra (openai), ... sonnet-5 (anthropic) ...
    assert ids[:3] == ["openai.gpt-6-luna", "google.gemini-3.8-flash", "anthropic.claude-sonnet-5"]
    assert ids[3] == "openai.gpt-6.1-terra" and len(ids) == 1 + POLICY["fallbacks"]


def test_explicit_fallbacks_come_before_the_ranked_ones():
    c = call(fallbacks=("claude-haiku-4-5", "openai.gpt-6-luna", "groq.openai/gpt-oss-120b", "xai.grok-4.3"))
    r = autoroute.choose(c, CATALOG, settings("openai", "google", "anthropic", "groq"))
    ids = [x.model.id for x in r.candidates]
    assert ids[:3] == ["openai.gpt-6-luna", "anthropic.claude-haiku-4-5-20251001", "groq.openai/gpt-oss-120b"]
    assert len(ids) == 3 + POLICY["fallbacks"] and len(set(ids)) == len(ids)
    assert "ignored fallbacks xai.grok-4.3 (provider not configured)" in r.reason
    with_images = autoroute.choose(call(images=1, fallbacks=("groq.openai/gpt-oss-120b",)), CATALOG,
                                   settings("openai", "groq"))
    assert "groq.openai/gpt-oss-120b (lacks vision)" in with_images.reason
    assert "groq" not in {x.model.provider for x in with_images.candidates}


def test_an_invalid_explicit_fallback_names_its_position():
    with pytest.raises(ValidationError) as exc:
        autoroute.choose(call(fallbacks=("openai.gpt-6-luna", "no-such-model")), CATALOG, settings("openai"))
    assert exc.value.status == 400 and set(exc.value.fields) == {"fallbacks.1"}


# -- through the router ---------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["auto", "AUTO", " Auto "])
def test_routing_delegates_auto_here(spec):
    c = Call(messages=(Message("user", (TextPart("Describe"), ImagePart(IMAGE))),), model=spec,
             task="vision", options=Options(max_tokens=500))
    r = route(c, CATALOG, settings("openai", "google", "groq"))
    assert r.is_auto and chosen(r) == "google.gemini-3.8-flash"
    assert r.reason.startswith("Task vision needs vision; chose google.gemini-3.8-flash:")
    assert all(x.model.capabilities.vision for x in r.candidates) and 0.5 < r.confidence < 1
    explicit = route(Call(messages=c.messages, model="openai.gpt-6-luna"), CATALOG, settings("openai"))
    assert not explicit.is_auto
