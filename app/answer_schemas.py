"""The answer bodies of the node endpoints: marshmallow schemas that document them (the OpenAPI
spec is built from these), and `answer_to_dict`, the flat success body of a call. Schemas of
different bodies share field shapes (an Integer here, a String there): declarations, not logic.
"""
from __future__ import annotations

from marshmallow import Schema, fields

from app import tools as tooling


class UsageOut(Schema):
    input_tokens = fields.Integer(metadata={"description": "Every prompt token, cache reads and writes included"})
    output_tokens = fields.Integer(metadata={"description": "Every generated token, reasoning included"})
    total_tokens = fields.Integer()
    cached_input_tokens = fields.Integer(metadata={"description": "Input tokens read from the provider's prompt "
                                                                  "cache (billed at its cached-input price)"})
    cache_write_tokens = fields.Integer(metadata={"description": "Input tokens written to the prompt cache "
                                                                 "(billed at its cache-write price)"})
    reasoning_tokens = fields.Integer(metadata={"description": "Output tokens spent thinking"})


class RoutingOut(Schema):
    is_auto_routed = fields.Boolean()
    model_chosen = fields.String()
    confidence = fields.Float()
    reason = fields.String()
    fallbacks = fields.List(fields.String())
    attempts = fields.Integer()


class CallResponseSchema(Schema):
    success = fields.Boolean()
    response = fields.String()
    data = fields.Raw(allow_none=True)
    model = fields.String()
    provider = fields.String()
    finish_reason = fields.String()
    usage = fields.Nested(UsageOut, allow_none=True, metadata={
        "description": "null when the provider reported no usage (a warning says so)"})
    cost = fields.Float(allow_none=True)
    latency_ms = fields.Integer()
    routing = fields.Nested(RoutingOut)
    warnings = fields.List(fields.String())
    request_id = fields.String(allow_none=True)
    tool_calls = fields.List(fields.Dict(), metadata={
        "description": "The tools the model asked to call: [{id, name, arguments (an object)}]; "
                       "finish_reason is then tool_calls."})


class ErrorBody(Schema):
    code = fields.String()
    message = fields.String()
    provider = fields.String(allow_none=True)
    field_errors = fields.Dict(keys=fields.String(), values=fields.String(), data_key="fields")
    retryable = fields.Boolean()


class ErrorResponseSchema(Schema):
    success = fields.Boolean()
    error = fields.Nested(ErrorBody)
    request_id = fields.String(allow_none=True)


class AgentAiResponseSchema(Schema):
    status = fields.Integer()
    response = fields.String()


class TestConnectionResponseSchema(Schema):
    __test__ = False
    success = fields.Boolean()
    provider = fields.String()
    model = fields.String()
    latency_ms = fields.Integer(allow_none=True)
    status = fields.String(metadata={"enum": ["connected", "auth_failed", "unreachable", "rate_limited",
                                              "model_not_found", "not_configured", "error"]})
    message = fields.String()


class UsageTotalsSchema(Schema):
    calls = fields.Integer()
    errors = fields.Integer()
    input_tokens = fields.Integer()
    output_tokens = fields.Integer()
    total_tokens = fields.Integer()
    cost = fields.Float()


class UsageGroupSchema(UsageTotalsSchema):
    group = fields.String(allow_none=True)


class UsageResponseSchema(Schema):
    success = fields.Boolean()
    tenant_id = fields.String()
    start = fields.String(data_key="from")
    to = fields.String()
    group_by = fields.String(allow_none=True)
    totals = fields.Nested(UsageTotalsSchema)
    groups = fields.List(fields.Nested(UsageGroupSchema))


class ModelOutSchema(Schema):
    id = fields.String()
    provider = fields.String()
    name = fields.String()
    label = fields.String()
    aliases = fields.List(fields.String())
    capabilities = fields.Dict(keys=fields.String(), values=fields.Raw())
    price_input_per_1m = fields.Float(allow_none=True)
    price_output_per_1m = fields.Float(allow_none=True)
    price_cached_input_per_1m = fields.Float(allow_none=True, metadata={
        "description": "cache reads; null: billed at the input price"})
    price_cache_write_per_1m = fields.Float(allow_none=True, metadata={
        "description": "5-minute cache writes; null: billed at the input price"})
    context_window = fields.Integer(allow_none=True)
    max_output_tokens = fields.Integer(allow_none=True)
    embedding_dimensions = fields.Integer(allow_none=True, metadata={
        "description": "an embedding model's default vector size; null for chat models"})
    max_input_tokens = fields.Integer(allow_none=True, metadata={
        "description": "an embedding model's limit per input; null for chat models"})
    configured = fields.Boolean()
    status = fields.String()
    deprecated = fields.Boolean()
    shutdown = fields.String(allow_none=True)
    successor = fields.String(allow_none=True)


class ModelsResponseSchema(Schema):
    success = fields.Boolean()
    count = fields.Integer()
    models = fields.List(fields.Nested(ModelOutSchema))


class LimitsOutSchema(Schema):
    rpm = fields.Integer(allow_none=True)
    tpm = fields.Integer(allow_none=True)
    budget_usd = fields.Float(allow_none=True)


class MeResponseSchema(Schema):
    success = fields.Boolean()
    tenant_id = fields.String()
    agent_id = fields.String(allow_none=True)
    auth = fields.String(metadata={"enum": ["api_key", "jwt"]})
    key_id = fields.String(allow_none=True)
    key_name = fields.String(allow_none=True)
    limits = fields.Nested(LimitsOutSchema)
    tenant_limits = fields.Nested(LimitsOutSchema)


class StatusSchema(Schema):
    status = fields.String()


def usage_to_dict(u) -> dict | None:
    """Our usage breakdown, or None when the provider reported none (unknown, not zero)."""
    if not u.reported:
        return None
    return {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "total_tokens": u.total_tokens,
            "cached_input_tokens": u.cached_input_tokens, "cache_write_tokens": u.cache_write_tokens,
            "reasoning_tokens": u.reasoning_tokens}


def answer_to_dict(answer) -> dict:
    """The flat success body: every key always present, with a stable type (`usage` and `cost` are
    null when unknown)."""
    u = answer.usage
    r = answer.routing
    return {
        "success": True,
        "response": answer.text,
        "data": answer.data,
        "model": answer.model,
        "provider": answer.provider,
        "finish_reason": answer.finish_reason,
        "usage": usage_to_dict(u),
        "cost": answer.cost,
        "latency_ms": answer.latency_ms,
        "routing": {"is_auto_routed": r.is_auto_routed, "model_chosen": r.model_chosen,
                    "confidence": round(r.confidence, 3), "reason": r.reason,
                    "fallbacks": list(r.fallbacks), "attempts": r.attempts},
        "warnings": list(answer.warnings),
        "request_id": answer.request_id,
        "tool_calls": tooling.tool_calls_out(answer.tool_calls),
    }
