"""Model spec -> the ordered models to try: the chosen one first, then its fallbacks.

An explicit spec ("provider.model" or an alias) is resolved through the catalog, retirements
followed, and checked against what the call needs. `auto` is delegated to `app.routing.auto`
(embeddings calls: `app.routing.auto_embedding`).
"""
from __future__ import annotations

from app.routing import auto as autoroute
from app.routing import auto_embedding
from app.calls import Call
from app.catalog import Catalog, ModelInfo, Resolved
from app.config import Settings
from app.errors import CapabilityMissing, ValidationError
from app.routing.route import Route


def requirement_gaps(call: Call, model: ModelInfo) -> list[str]:
    """What the call needs that the model cannot do at all (soft differences are handled by adapters)."""
    if call.embed is not None:          # a model the catalog does not list may embed: its provider decides
        return ["embeddings"] if model.known and not model.capabilities.embeddings else []
    gaps = []
    if model.capabilities.embeddings:
        gaps.append("chat")
    if call.has_images and not model.capabilities.vision:
        gaps.append("vision")
    if (call.tools or any(m.role == "tool" or m.tool_calls for m in call.messages)) \
            and not model.capabilities.tools:
        gaps.append("tools")
    return gaps


# gap -> (what the model cannot do, who can, the field's message, whether a model can)
_GAPS = {"vision": ("cannot read images", "Vision-capable models", "model is not vision-capable",
                    lambda caps: caps.vision),
         "tools": ("cannot call tools", "Models that can", "model cannot call tools", lambda caps: caps.tools),
         "embeddings": ("cannot embed", "Embedding models", "model cannot embed", lambda caps: caps.embeddings),
         "chat": ("is an embedding model and cannot answer messages", "Chat models", "an embedding model",
                  lambda caps: not caps.embeddings)}


def check_capabilities(call: Call, resolved: Resolved, catalog: Catalog) -> None:
    """A model that cannot do what the call needs is a 400 naming models that can."""
    for gap in requirement_gaps(call, resolved.model):
        cannot, who, field, can = _GAPS[gap]
        alternatives = [m.id for m in catalog.models.values()
                        if can(m.capabilities) and m.status != "retired" and m.provider != "mock"][:6]
        auto = " (or model 'auto')" if gap != "embeddings" else ""
        raise CapabilityMissing(f"{resolved.model.id} {cannot}. {who}: {', '.join(alternatives)}{auto}.",
                                fields={"model": field})


def route(call: Call, catalog: Catalog, settings: Settings) -> Route:
    auto = call.model.strip().lower() == "auto"
    if auto and call.embed is None:
        return autoroute.choose(call, catalog, settings)
    chosen, why = auto_embedding.choose(call, catalog, settings) if auto else (catalog.resolve(call.model), "")
    check_capabilities(call, chosen, catalog)
    fallbacks = []
    for i, spec in enumerate(call.fallbacks):
        try:
            resolved = catalog.resolve(spec)
        except ValidationError as err:
            raise ValidationError(err.message, code=err.code, fields={f"fallbacks.{i}": err.message}) from None
        configured = settings.is_configured(catalog.providers[resolved.model.provider])
        if resolved.model.id != chosen.model.id and configured and not requirement_gaps(call, resolved.model):
            fallbacks.append(resolved)
    if auto:
        return Route(candidates=(chosen, *fallbacks), is_auto=True, confidence=1.0,
                     reason=why)
    return Route(candidates=(chosen, *fallbacks), is_auto=False, confidence=1.0,
                 reason=f"{chosen.model.id} was requested" + (
                     f" as {call.model}" if call.model != chosen.model.id else "") + ".")
