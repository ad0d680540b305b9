"""`model: "auto"`: choose the model for a call from its task, what the request needs, and what is configured.

Which models suit which task, and how well, is editorial judgement that ages with every launch, so it
lives in data (app/data/routing.json, or the file FLOWCALL_ROUTING_FILE names) with its source, date and
scoring rules in its "_doc"; this module only applies it. Everything here is pure apart from reading the
policy file once: the same call, catalog, settings and policy always give the same route.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

from app.calls import Call, ImagePart
from app.catalog import Capabilities, Catalog, ModelInfo, Resolved
from app.config import Settings
from app.errors import CapabilityMissing, ServiceUnavailable, ValidationError
from app.routing.route import Route

LOCAL = "@local"                        # the policy's placeholder for the configurable local model
EMBED_TASK = "embed"                    # the task of an embeddings call that names none
ROUTING_FILE_ENV = "FLOWCALL_ROUTING_FILE"
PREFERENCES = ("balanced", "cost", "quality")


# -- the policy ---------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def load_policy(path: str | None = None) -> dict:
    """The routing policy, read once per path; a malformed file fails loudly, as a deployment bug."""
    if path:
        with open(path, encoding="utf-8") as f:
            policy = json.load(f)
    else:
        policy = json.loads(resources.files("app").joinpath("data/routing.json").read_text("utf-8"))
    _check_policy(policy, path or "app/data/routing.json")
    return policy


def _check_policy(policy: dict, source: str) -> None:
    def require(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"routing policy {source}: {what}")
    tasks = policy.get("tasks")
    require(isinstance(tasks, dict) and bool(tasks), "needs a non-empty 'tasks' object")
    require(policy.get("default_task") in tasks, "default_task must name a task")
    for alias, task in (policy.get("task_aliases") or {}).items():
        require(task in tasks, f"task alias {alias!r} points to unknown task {task!r}")
    require(set(policy["scoring"]["preferences"]) >= set(PREFERENCES), f"scoring.preferences needs {PREFERENCES}")
    for name, task in tasks.items():
        ids = [entry["id"] for entry in task.get("models", ())]
        require(bool(ids) and len(ids) == len(set(ids)), f"task {name}: models must be non-empty and unique")
        require(all(0 <= entry["quality"] <= 1 for entry in task["models"]), f"task {name}: quality must be 0..1")
        for capability in task.get("requires", ()):
            require(capability in Capabilities.__dataclass_fields__, f"task {name}: unknown capability {capability!r}")
        require(LOCAL not in ids or "local_model" in policy, f"task {name} lists {LOCAL} but local_model is missing")


def task_of(call: Call, policy: dict) -> tuple[str, bool]:
    """(task, whether it was defaulted); spelling is forgiven, an unknown task is the caller's error."""
    if not (call.task or "").strip():
        return policy["default_task"], True
    key = call.task.strip().lower().replace("-", "_").replace(" ", "_")
    key = (policy.get("task_aliases") or {}).get(key, key)
    if key not in policy["tasks"]:
        known = ", ".join(policy["tasks"])
        raise ValidationError(f"Unknown task {call.task!r} for model 'auto'. Known tasks: {known}.",
                              fields={"context.task": f"unknown task; one of: {known}"})
    return key, False


def embeds(policy: dict, task: str) -> bool:
    """Whether `task` is for embeddings calls (its models must embed): no chat call routes to it."""
    return "embeddings" in policy["tasks"][task].get("requires", ())


# -- what the call needs ------------------------------------------------------------------------
@dataclass(frozen=True)
class Needs:
    """The call's hard requirements, each with the request field that imposes it (for error paths)."""
    capabilities: tuple[tuple[str, str], ...]   # (capability flag, field), e.g. ("vision", "messages")
    json_object: bool                           # JSON mode: json_object or json_schema will do
    prompt_tokens: int
    max_tokens: int
    stops: int


def estimate_prompt_tokens(call: Call, chars_per_token: float, tokens_per_image: int) -> int:
    """A deliberately rough size: no tokenizer per provider, just enough to rule out small windows."""
    chars = sum(len(m.text) for m in call.messages)
    images = sum(isinstance(p, ImagePart) for m in call.messages for p in m.parts)
    return math.ceil(chars / chars_per_token) + images * tokens_per_image


def needs_of(call: Call, policy: dict, task: str) -> Needs:
    capabilities = [(c, "context.task") for c in policy["tasks"][task].get("requires", ())]
    if call.has_images and "vision" not in dict(capabilities):
        capabilities.append(("vision", "messages"))
    if call.tools or any(m.role == "tool" or m.tool_calls for m in call.messages):
        capabilities.append(("tools", "tools"))
    fmt = call.response_format
    if fmt is not None and fmt.type == "json_schema":
        capabilities.append(("json_schema", "response_format"))
    request = policy["request"]
    return Needs(capabilities=tuple(capabilities), json_object=fmt is not None and fmt.type == "json_object",
                 prompt_tokens=estimate_prompt_tokens(call, request["chars_per_token"], request["tokens_per_image"]),
                 max_tokens=call.options.max_tokens, stops=len(call.options.stop))


def gaps(model: ModelInfo, needs: Needs, policy: dict) -> list[str]:
    """The hard requirements this model misses (empty: it can serve the call)."""
    caps = model.capabilities
    missing = [c for c, _ in needs.capabilities if not getattr(caps, c)]
    if caps.embeddings:
        missing.append("chat")
    if needs.json_object and not (caps.json_object or caps.json_schema):
        missing.append("json_object")
    window = model.context_window or policy["request"]["assumed_context_window"]
    if needs.prompt_tokens + needs.max_tokens > window:
        missing.append("context")
    if model.max_output_tokens is not None and needs.max_tokens > model.max_output_tokens:
        missing.append("max_output")
    return missing


# -- the candidates -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    resolved: Resolved
    quality: float
    position: int           # place in the task's list: the tie-break after the score
    score: float = 0.0
    native_stop: bool = False

    @property
    def model(self) -> ModelInfo:
        return self.resolved.model


def local_model(policy: dict, catalog: Catalog, settings: Settings) -> Resolved:
    """The configurable local model; what the catalog does not say about it is assumed (free, text-only)."""
    local = policy["local_model"]
    prefix = local["provider"] + "."
    name = (settings.ollama_model or local["default"]).strip()
    resolved = catalog.resolve(prefix + name.removeprefix(prefix))
    model = resolved.model
    changes: dict = {}
    if not model.has_price:
        changes.update(price_input=local["price"]["input"], price_output=local["price"]["output"])
    if not model.known:
        changes["capabilities"] = replace(model.capabilities, **local.get("capabilities", {}))
    if not changes:
        return resolved
    assumed = replace(model, **changes)
    warnings = resolved.warnings
    if not model.known:
        flags = ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in local.get("capabilities", {}).items())
        warnings = (f"Model {model.id} is not in the catalog: auto-routing assumed the routing policy's local "
                    f"model facts ({price_text(assumed, policy)}{', ' + flags if flags else ''}); describe it in "
                    f"FLOWCALL_MODELS_FILE to change that.",)
    return Resolved(model=assumed, requested=resolved.requested, warnings=warnings)


def policy_candidates(policy: dict, task: str, catalog: Catalog, settings: Settings) -> list[Candidate]:
    """The task's models as the catalog describes them today: retired ones drop out, the mock never enters."""
    out = []
    for position, entry in enumerate(policy["tasks"][task]["models"]):
        if entry["id"] == LOCAL:
            resolved = local_model(policy, catalog, settings)
        else:
            try:
                model = catalog.lookup(entry["id"])
            except ValidationError:
                model = None
            if model is None or not model.known:
                raise RuntimeError(f"routing policy names {entry['id']}, which is not in the catalog")
            if model.status == "retired":
                continue
            resolved = catalog.resolve(model.id)
        if resolved.model.provider != "mock":
            out.append(Candidate(resolved, float(entry["quality"]), position))
    return out


def configured_providers(catalog: Catalog, settings: Settings) -> set[str]:
    return {name for name, p in catalog.providers.items() if p.format != "mock" and settings.is_configured(p)}


# -- scoring ------------------------------------------------------------------------------------
def blended_price(model: ModelInfo, scoring: dict) -> float | None:
    if not model.has_price:
        return None
    w = scoring["price_weights"]
    return (w["input"] * model.price_input + w["output"] * model.price_output) / (w["input"] + w["output"])


def cost_score(model: ModelInfo, scoring: dict) -> float:
    """1 for free, 0 at the ceiling, on a log scale: a 3x price step weighs the same anywhere."""
    blended = blended_price(model, scoring)
    if blended is None:
        return scoring["unpriced_cost_score"]
    return min(1.0, max(0.0, 1 - math.log1p(blended) / math.log1p(scoring["cost_ceiling_per_1m"])))


def takes_stops_natively(model: ModelInfo, stops: int) -> bool:
    caps = model.capabilities
    return stops > 0 and caps.stop and (caps.stop_limit is None or stops <= caps.stop_limit)


def rank(candidates: list[Candidate], needs: Needs, policy: dict, preference: str) -> list[Candidate]:
    scoring = policy["scoring"]
    weights = scoring["preferences"][preference]
    scored = []
    for c in candidates:
        native = takes_stops_natively(c.model, needs.stops)
        score = (weights["quality"] * c.quality + weights["cost"] * cost_score(c.model, scoring)
                 + (scoring["stop_bonus"] if native else 0.0)
                 - (scoring["deprecated_penalty"] if c.model.status == "deprecated" else 0.0))
        scored.append(replace(c, score=round(score, 9), native_stop=native))   # rounding: exact ties tie
    return sorted(scored, key=lambda c: (-c.score, c.position, c.model.id))


def confidence(ranked: list[Candidate], policy: dict) -> float:
    """How clearly the policy prefers the choice: 0.5 for a dead heat, towards `max` as the margin grows."""
    conf = policy["confidence"]
    if len(ranked) < 2:
        return conf["single_candidate"]
    margin = ranked[0].score - ranked[1].score
    return round(min(conf["max"], 0.5 + 0.5 * (1 - math.exp(-margin / conf["scale"]))), 3)


def auto_fallbacks(ranked: list[Candidate], taken: set[str], limit: int) -> list[Candidate]:
    """Each other provider's best model first (an outage or a rate limit hits a whole provider), then rank order."""
    rest = [c for c in ranked[1:] if c.model.id not in taken]
    providers_seen = {ranked[0].model.provider}
    first = []
    for c in rest:
        if c.model.provider not in providers_seen:
            providers_seen.add(c.model.provider)
            first.append(c)
    return (first + [c for c in rest if c not in first])[:limit]


def resolve_fallbacks(call: Call, catalog: Catalog) -> list[Resolved]:
    out = []
    for i, spec in enumerate(call.fallbacks):
        try:
            out.append(catalog.resolve(spec))
        except ValidationError as err:
            raise ValidationError(err.message, code=err.code, fields={f"fallbacks.{i}": err.message}) from None
    return out


# -- the decision -------------------------------------------------------------------------------
def choose(call: Call, catalog: Catalog, settings: Settings) -> Route:
    policy = load_policy(settings.routing_file)
    task, defaulted = task_of(call, policy)
    if embeds(policy, task):
        raise ValidationError(f"Task {task} is for embeddings: send the texts to POST /v1/embeddings or "
                              "/api/v3/llm/embeddings.", fields={"context.task": "an embeddings task"})
    explicit = resolve_fallbacks(call, catalog)
    configured = configured_providers(catalog, settings)
    if not configured:
        raise no_provider_error(catalog)
    needs = needs_of(call, policy, task)
    listed = policy_candidates(policy, task, catalog, settings)
    offered = [c for c in listed if c.model.provider in configured]
    if not offered:
        raise no_provider_for_task_error(task, listed, catalog)
    eligible = [c for c in offered if not gaps(c.model, needs, policy)]
    if not eligible:
        raise capability_error(task, needs, offered, [c for c in listed if c not in offered], catalog, policy)
    ranked = rank(eligible, needs, policy, settings.routing_preference)
    kept, skipped = usable_fallbacks(explicit, ranked[0].model, configured, needs, policy)
    taken = {ranked[0].model.id, *(k.model.id for k in kept)}
    extra = auto_fallbacks(ranked, taken, policy["fallbacks"])
    return Route(candidates=(ranked[0].resolved, *kept, *(c.resolved for c in extra)), is_auto=True,
                 confidence=confidence(ranked, policy),
                 reason=reason(task, defaulted, needs, ranked, offered, settings.routing_preference, skipped, policy))


def usable_fallbacks(explicit: list[Resolved], chosen: ModelInfo, configured: set[str], needs: Needs,
                     policy: dict) -> tuple[list[Resolved], list[str]]:
    """The caller's fallbacks that could serve this call; the others are named in the reason, not tried."""
    kept, skipped = [], []
    for resolved in explicit:
        model = resolved.model
        if model.id == chosen.id or model.id in {k.model.id for k in kept}:
            continue
        if model.provider != "mock" and model.provider not in configured:
            skipped.append(f"{model.id} (provider not configured)")
        elif missing := gaps(model, needs, policy):
            skipped.append(f"{model.id} (lacks {', '.join(missing)})")
        else:
            kept.append(resolved)
    return kept, skipped


def price_text(model: ModelInfo, policy: dict) -> str:
    if not model.has_price:
        return "price unknown"
    if model.price_input == model.price_output == 0:
        return "local, $0" if model.provider == policy.get("local_model", {}).get("provider") else "$0"
    return f"${model.price_input:.2f}/${model.price_output:.2f} per 1M"


def reason(task: str, defaulted: bool, needs: Needs, ranked: list[Candidate], offered: list[Candidate],
           preference: str, skipped: list[str], policy: dict) -> str:
    """One sentence: what the call needed, what was chosen, and why."""
    wants = [c for c, _ in needs.capabilities] + (["json_object"] if needs.json_object else [])
    ruled_out = {g for c in offered for g in gaps(c.model, needs, policy)}
    if "context" in ruled_out:
        wants.append(f"~{needs.prompt_tokens + needs.max_tokens:,} tokens of context")
    if "max_output" in ruled_out:
        wants.append(f"{needs.max_tokens:,} output tokens")
    head = f"Task {task}" + (" (default)" if defaulted else "") + (f" needs {', '.join(wants)}" if wants else "")
    why = ("the only configured candidate" if len(ranked) == 1
           else f"best {preference} score among {len(ranked)} configured candidates")
    chosen = ranked[0]
    facts = [f"quality {chosen.quality:.2f}", price_text(chosen.model, policy)]
    if chosen.native_stop:
        facts.append("native stop sequences")
    if chosen.model.status == "deprecated":
        facts.append("deprecated")
    tail = f"; ignored fallbacks {', '.join(skipped)}" if skipped else ""
    return f"{head}; chose {chosen.model.id}: {why} ({', '.join(facts)}){tail}."


# -- errors that say how to fix them ------------------------------------------------------------
def how_to_configure(provider) -> str:
    if provider.requires_key and provider.key_env:
        return " or ".join(provider.key_env)
    return provider.base_url_env or provider.name


def no_provider_error(catalog: Catalog) -> ServiceUnavailable:
    options = ", ".join(f"{how_to_configure(p)} for {p.label}"
                        for p in catalog.providers.values() if p.format != "mock")
    return ServiceUnavailable(
        f"No LLM provider is configured, so model 'auto' has nothing to choose from. Set at least one of: "
        f"{options}. Model 'mock.echo' works without any.", code="no_provider_configured")


def no_provider_for_task_error(task: str, listed: list[Candidate], catalog: Catalog) -> ServiceUnavailable:
    providers = list(dict.fromkeys(c.model.provider for c in listed))
    options = ", ".join(f"{how_to_configure(catalog.providers[p])} for {catalog.providers[p].label}" for p in providers)
    return ServiceUnavailable(
        f"No configured provider serves task {task}: its models come from {', '.join(providers)}. Set {options}, "
        f"or choose another task or an explicit model.", code="no_provider_for_task",
        fields={"context.task": f"no configured provider serves {task}"})


REQUIREMENT_TEXT = {
    "vision": "a vision-capable model", "json_schema": "structured outputs (json_schema)",
    "json_object": "JSON mode (json_object)", "reasoning": "a reasoning model", "tools": "tool calling",
}


def capability_error(task: str, needs: Needs, offered: list[Candidate], unconfigured: list[Candidate],
                     catalog: Catalog, policy: dict) -> CapabilityMissing:
    """400: as configured, no model can serve this request; the message says what would."""
    field_of = dict(needs.capabilities) | {"json_object": "response_format", "context": "messages",
                                           "max_output": "options.maxTokens"}
    lacking: dict[str, list[str]] = {}
    for c in offered:
        for gap in gaps(c.model, needs, policy):
            lacking.setdefault(gap, []).append(c.model.id)
    problems, fields = [], {}
    for gap, ids in lacking.items():
        if gap == "context":
            text = (f"~{needs.prompt_tokens:,} prompt tokens + maxTokens {needs.max_tokens:,} exceed the context "
                    f"window")
        elif gap == "max_output":
            text = f"maxTokens {needs.max_tokens:,} exceeds the output limit"
        else:
            text = f"needs {REQUIREMENT_TEXT.get(gap, gap)}"
        shown = ", ".join(ids[:4]) + (f" and {len(ids) - 4} more" if len(ids) > 4 else "")
        problems.append(f"{text} ({shown})")
        path = field_of[gap]
        fields[path] = f"{fields[path]}; {text}" if path in fields else text
    would = [c for c in unconfigured if not gaps(c.model, needs, policy)]
    hint_providers = list(dict.fromkeys(c.model.provider for c in would))[:3]
    hint = ("Would work if configured: " + ", ".join(
        f"{next(c.model.id for c in would if c.model.provider == p)} (set {how_to_configure(catalog.providers[p])})"
        for p in hint_providers) + "." if hint_providers
        else "No model the routing policy lists for this task could serve it: change the request or name a model.")
    return CapabilityMissing(f"No configured model can serve this call for task {task}: {'; '.join(problems)}. {hint}",
                             fields=fields)
