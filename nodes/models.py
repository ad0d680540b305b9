"""GET /api/v3/llm/models: the catalog as flat JSON, for platform dropdowns."""
from __future__ import annotations

from flask import Blueprint, jsonify

from app.openapi import doc
from app.answer_schemas import ModelsResponseSchema

from ._common import boolean, either_auth, one_of, provider_named, query, services

bp = Blueprint("models", __name__)
CAPABILITIES = ("vision", "json_schema", "json_object", "stop", "temperature", "reasoning", "embeddings")


def model_to_dict(model, configured: bool) -> dict:
    caps = model.capabilities
    return {
        "id": model.id, "provider": model.provider, "name": model.name, "label": model.label,
        "aliases": list(model.aliases),
        "capabilities": {"vision": caps.vision, "json_schema": caps.json_schema, "json_object": caps.json_object,
                         "stop": caps.stop, "stop_limit": caps.stop_limit, "temperature": caps.temperature,
                         "reasoning": caps.reasoning, "embeddings": caps.embeddings},
        "embedding_dimensions": model.embedding_dimensions, "max_input_tokens": model.max_input_tokens,
        "price_input_per_1m": model.price_input, "price_output_per_1m": model.price_output,
        "price_cached_input_per_1m": model.price_cached_input, "price_cache_write_per_1m": model.price_cache_write,
        "context_window": model.context_window, "max_output_tokens": model.max_output_tokens,
        "configured": configured, "status": model.status, "deprecated": model.status != "active",
        "shutdown": model.shutdown, "successor": model.successor,
    }


@bp.get("/api/v3/llm/models")
@doc(summary="List the model catalog", tags=("catalog",), auth="either", response=ModelsResponseSchema,
     errors=(400, 401, 403), params=(
         lambda app: {"in": "query", "name": "provider", "required": False, "schema": {"type": "string", "enum": sorted(
             {n for name, p in app.extensions["flowcall"].catalog.providers.items() for n in (name, *p.aliases)})}},
         {"in": "query", "name": "capability", "schema": {"type": "string", "enum": list(CAPABILITIES)},
          "required": False},
         {"in": "query", "name": "include_retired", "schema": {"type": "boolean"}, "required": False}))
def list_models():
    either_auth(require_agent=False)
    svc = services()
    args = query(provider=str, capability=one_of(*CAPABILITIES), include_retired=boolean)
    provider = provider_named(svc.catalog, args["provider"]).name if "provider" in args else None
    capability = args.get("capability")
    include_retired = args.get("include_retired", False)
    models = []
    for model in svc.catalog.models.values():
        if provider and model.provider != provider:
            continue
        if capability and not getattr(model.capabilities, capability):
            continue
        if model.status == "retired" and not include_retired:
            continue
        configured = svc.settings.is_configured(svc.catalog.providers[model.provider])
        models.append(model_to_dict(model, configured))
    return jsonify({"success": True, "count": len(models), "models": models})
