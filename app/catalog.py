"""The model catalog: which models exist, what they can do, what they cost, who replaced them.

The facts live in `app/data/models.json` (with their source and date), so a price or a retirement is
a data change. A file named by FLOWCALL_MODELS_FILE is merged over it at start: models by `id`
(fields replace fields), providers by name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

from app.calls import Usage
from app.errors import UnknownModel, ValidationError


@dataclass(frozen=True)
class Capabilities:
    vision: bool = False
    json_schema: bool = False
    json_object: bool = False
    stop: bool = True               # accepts stop sequences natively
    stop_limit: int | None = None   # how many it accepts natively (None: no documented limit)
    temperature: bool = True        # accepts a non-default temperature
    reasoning: bool = False
    structured: str = "native"      # Anthropic: "native" output_config or the forced-"tool" fallback
    # Chat Completions `strict: true`: "openai" (OpenAI's strict subset: app.strict_schema rewrites
    # the schema), "none" (strict is rejected: sent best-effort as strict false, Groq outside gpt-oss),
    # "any" (the server takes any schema as is and ignores `strict`: Ollama)
    strict_schema: str = "openai"
    tools: bool = False             # takes function tools (tools, tool_choice, tool turns)
    embeddings: bool = False        # an embedding model: it embeds and never chats
    dimensions: bool = False        # takes a reduced output size (OpenAI `dimensions`, Gemini outputDimensionality)
    token_input: bool = False       # embeds token arrays as well as text (OpenAI)

    @classmethod
    def from_dict(cls, d: dict) -> Capabilities:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    format: str                     # which adapter module speaks its wire format
    label: str
    key_env: tuple[str, ...] = ()
    base_url_env: str | None = None
    default_base_url: str | None = None
    requires_key: bool = True
    image_urls: bool = True         # accepts http(s) image URLs; else we inline them as data URIs
    max_tokens_field: str = "max_tokens"
    reasoning_tokens_outside_completion: bool = False
    default_capabilities: Capabilities = Capabilities()
    aliases: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, name: str, d: dict) -> ProviderConfig:
        return cls(
            name=name, format=d["format"], label=d.get("label", name),
            key_env=tuple(d.get("key_env", ())), base_url_env=d.get("base_url_env"),
            default_base_url=d.get("default_base_url"), requires_key=d.get("requires_key", True),
            image_urls=d.get("image_urls", True), max_tokens_field=d.get("max_tokens_field", "max_tokens"),
            reasoning_tokens_outside_completion=d.get("reasoning_tokens_outside_completion", False),
            default_capabilities=Capabilities.from_dict(d.get("default_capabilities", {})),
            aliases=tuple(d.get("aliases", ())),
        )


@dataclass(frozen=True)
class ModelInfo:
    id: str                         # "provider.name"
    provider: str
    name: str                       # what the provider calls it
    label: str
    capabilities: Capabilities
    aliases: tuple[str, ...] = ()
    context_window: int | None = None
    max_output_tokens: int | None = None
    price_input: float | None = None    # USD per 1M tokens
    price_output: float | None = None
    price_cached_input: float | None = None     # cache reads; None: billed at price_input
    price_cache_write: float | None = None      # 5-minute cache writes; None: billed at price_input
    price_cache_write_1h: float | None = None   # 1-hour cache writes; None: billed at price_cache_write
    status: str = "active"          # active | deprecated | retired
    shutdown: str | None = None
    successor: str | None = None
    note: str | None = None
    params: dict = field(default_factory=dict)   # provider-specific extras (Perplexity preset...)
    known: bool = True              # False: not in the catalog, forwarded as is
    temperature_default: str | float = "ours"   # "ours" (send 0.7), "provider" (send none), or a number to send
    thinking_allowance: int = 0     # tokens added to the default maxTokens for a model that thinks by default
    reasoning_format: str | None = None         # Groq: the reasoning_format that keeps the answer clean
    embedding_dimensions: int | None = None     # an embedding model's default vector size
    max_input_tokens: int | None = None         # an embedding model's limit per input

    @property
    def has_price(self) -> bool:
        return self.price_input is not None and self.price_output is not None

    def cost(self, usage: Usage) -> float | None:
        return self.price_usage(usage)[0]

    def price_usage(self, usage: Usage) -> tuple[float | None, tuple[str, ...]]:
        """(USD, warnings): each usage class at the price the provider bills it (catalog `price`).

        `input_tokens` holds every prompt token; cache reads and writes are the parts of it billed
        at their own price. A class the catalog has no price for is billed at the input price, and
        says so. No usage reported (`usage.reported` false): no cost, not a free call.
        """
        if not self.has_price or not usage.reported:
            return None, ()
        warnings: list[str] = []
        read_price = self._or_input_price(self.price_cached_input, usage.cached_input_tokens,
                                          "cached-input", "cached input", warnings)
        write_price = self._or_input_price(self.price_cache_write, usage.cache_write_tokens,
                                           "cache-write", "cache-write", warnings)
        write_1h_price = self.price_cache_write_1h if self.price_cache_write_1h is not None else write_price
        write_1h = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
        plain = max(0, usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens)
        total = (plain * self.price_input + usage.cached_input_tokens * read_price
                 + (usage.cache_write_tokens - write_1h) * write_price + write_1h * write_1h_price
                 + usage.output_tokens * self.price_output)
        return round(total / 1e6, 8), tuple(warnings)

    def _or_input_price(self, price: float | None, tokens: int, label: str, noun: str, warnings: list[str]) -> float:
        """`price`, or the input price when the catalog has none (saying so when `tokens` pay it)."""
        if price is not None:
            return price
        if tokens:
            warnings.append(f"No {label} price is known for {self.id}: its {tokens} {noun} tokens were priced "
                            "as ordinary input.")
        return self.price_input


@dataclass(frozen=True)
class Resolved:
    """A model spec resolved to the model that will serve it, and what the caller should know."""
    model: ModelInfo
    requested: str
    warnings: tuple[str, ...] = ()


def _model_from_dict(d: dict) -> ModelInfo:
    # A listed model's flags are its own: the provider's default_capabilities describe only models
    # the catalog does not list (a provider-wide "reasoning" once marked gpt-4o a reasoning model).
    caps = dict(d.get("capabilities", {}))
    price = d.get("price") or {}
    return ModelInfo(
        id=d["id"], provider=d["provider"], name=d["name"], label=d.get("label", d["name"]),
        capabilities=Capabilities.from_dict(caps), aliases=tuple(d.get("aliases", ())),
        context_window=d.get("context_window"), max_output_tokens=d.get("max_output_tokens"),
        price_input=price.get("input"), price_output=price.get("output"),
        price_cached_input=price.get("cached_input"), price_cache_write=price.get("cache_write"),
        price_cache_write_1h=price.get("cache_write_1h"),
        temperature_default=d.get("temperature_default", "ours"),
        thinking_allowance=int(d.get("thinking_allowance") or 0), reasoning_format=d.get("reasoning_format"),
        status=d.get("status", "active"), shutdown=d.get("shutdown"), successor=d.get("successor"),
        note=d.get("note"), params=dict(d.get("params") or {}),
        embedding_dimensions=d.get("embedding_dimensions"), max_input_tokens=d.get("max_input_tokens"),
    )


class Catalog:
    def __init__(self, raw: dict):
        self.providers: dict[str, ProviderConfig] = {
            name: ProviderConfig.from_dict(name, p) for name, p in raw["providers"].items()}
        self._provider_alias = {a.lower(): n for n, p in self.providers.items() for a in (n, *p.aliases)}
        self.models: dict[str, ModelInfo] = {}
        for d in raw["models"]:
            if d["provider"] not in self.providers:
                raise ValueError(f"model {d['id']}: unknown provider {d['provider']!r}")
            self.models[d["id"]] = _model_from_dict(d)
        self._alias: dict[str, str] = {}
        for model in self.models.values():
            for alias in model.aliases:
                self._alias.setdefault(alias.lower(), model.id)
        for model in self.models.values():   # bare provider names ("gpt-4o") where unambiguous
            self._alias.setdefault(model.name.lower(), model.id)
        for model in self.models.values():
            if model.successor and model.successor not in self.models:
                raise ValueError(f"model {model.id}: successor {model.successor} is not in the catalog")

    @classmethod
    def load(cls, override_path: str | None = None) -> Catalog:
        raw = json.loads(resources.files("app").joinpath("data/models.json").read_text("utf-8"))
        if override_path:
            with open(override_path, encoding="utf-8") as f:
                raw = merge(raw, json.load(f))
        return cls(raw)

    def provider(self, name: str) -> ProviderConfig:
        key = self._provider_alias.get(name.lower())
        if key is None:
            raise UnknownModel(
                f"Unknown provider {name!r}. Known providers: {', '.join(sorted(self.providers))}.",
                code="unknown_provider", fields={"model": f"unknown provider {name!r}"})
        return self.providers[key]

    def lookup(self, spec: str) -> ModelInfo:
        """`provider.model`, an alias or a bare model name -> the catalog entry (not yet the successor).

        A name the catalog lacks under a known provider is forwarded as is: providers ship models
        weekly, and the provider's own answer is the authority on whether it exists.
        """
        spec = spec.strip()
        model_id = self._alias.get(spec.lower())
        if model_id:
            return self.models[model_id]
        if spec in self.models:
            return self.models[spec]
        provider_name, dot, name = spec.partition(".")
        if not dot or not name:
            raise UnknownModel(
                f"Unknown model {spec!r}: use 'provider.model' (e.g. openai.gpt-4o), a catalog alias, "
                f"or 'auto'. Known providers: {', '.join(sorted(self.providers))}.",
                fields={"model": "unknown model"})
        provider = self.provider(provider_name)
        model_id = f"{provider.name}.{name}"
        if model_id in self.models:
            return self.models[model_id]
        if provider.format == "mock":
            raise UnknownModel("The mock provider has one model: mock.echo.", fields={"model": "unknown mock model"})
        return ModelInfo(id=model_id, provider=provider.name, name=name, label=name,
                         capabilities=provider.default_capabilities, known=False)

    def resolve(self, spec: str) -> Resolved:
        """Lookup, then follow retirements to the model that serves the spec today."""
        model = self.lookup(spec)
        warnings = []
        if not model.known:
            warnings.append(f"Model {model.id} is not in the catalog: forwarded as is, with "
                            f"{model.provider}'s default capabilities and no price.")
        seen = {model.id}
        while model.status == "retired" and model.successor:
            successor = self.models[model.successor]
            when = f" on {model.shutdown}" if model.shutdown else ""
            warnings.append(f"{spec} ({model.id}) was retired{when}; served by its successor {successor.id}."
                            + (f" Note: {model.note}." if model.note else ""))
            model = successor
            if model.id in seen:
                raise ValueError(f"successor cycle at {model.id}")
            seen.add(model.id)
        if model.status == "deprecated" and model.shutdown:
            warnings.append(f"{model.id} is deprecated and shuts down on {model.shutdown}"
                            + (f"; move to {model.successor}." if model.successor else "."))
        return Resolved(model=model, requested=spec, warnings=tuple(warnings))


def merge(base: dict, override: dict) -> dict:
    """Merge a user catalog over ours: providers by name, models by id, field by field."""
    if not isinstance(override, dict):
        raise ValidationError("FLOWCALL_MODELS_FILE must hold a JSON object")
    out = dict(base)
    out["providers"] = {**base["providers"]}
    for name, p in (override.get("providers") or {}).items():
        out["providers"][name] = {**out["providers"].get(name, {}), **p}
    by_id = {m["id"]: dict(m) for m in base["models"]}
    for m in override.get("models") or []:
        if m["id"] in by_id:
            merged = {**by_id[m["id"]], **m}
            if "capabilities" in m:
                merged["capabilities"] = {**by_id[m["id"]].get("capabilities", {}), **m["capabilities"]}
            by_id[m["id"]] = merged
        else:   # a model we do not list: unset flags are its provider's defaults, as for any unlisted model
            provider, _, name = m["id"].partition(".")
            entry = {"provider": provider, "name": name, **m}
            defaults = (out["providers"].get(entry["provider"]) or {}).get("default_capabilities") or {}
            entry["capabilities"] = {**defaults, **(m.get("capabilities") or {})}
            by_id[m["id"]] = entry
    out["models"] = list(by_id.values())
    return out

