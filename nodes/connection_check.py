"""POST /api/v3/llm/test-connection: one minimal real call to a provider, reported as a status.

The call itself succeeded whatever the provider said, so the answer is a 200 whose `success` and
`status` (connected, auth_failed, unreachable, rate_limited, model_not_found, not_configured,
error) tell the caller what works; only bad input or bad auth are errors.
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from app.calls import Call, Embed, Message, Options, TextPart
from app.catalog import ModelInfo
from app.dispatch import WHOLE, Mode
from app.embedding_mode import Embedding
from app.errors import (FlowcallError, ModelNotFound, ProviderAuthFailed, ProviderRateLimited, ProviderTimeout,
                        ProviderUnreachable, ServiceUnavailable, ValidationError)
from app import examples
from app.openapi import doc
from app.answer_schemas import TestConnectionResponseSchema
from app.schemas import TestConnectionSchema

from ._common import body_with, either_auth, provider_named, services

bp = Blueprint("connection_check", __name__)
_schema = TestConnectionSchema()

_STATUS = (
    (ProviderAuthFailed, "auth_failed"),
    (ProviderRateLimited, "rate_limited"),
    (ModelNotFound, "model_not_found"),
    (ProviderTimeout, "unreachable"),
    (ProviderUnreachable, "unreachable"),
)


def _model_spec(catalog, provider_name: str, model: str | None) -> tuple[str, str]:
    provider = provider_named(catalog, provider_name)
    if model:
        spec = model if model.startswith(f"{provider.name}.") else f"{provider.name}.{model}"
        return provider.name, spec
    default = next((m.id for m in catalog.models.values()
                    if m.provider == provider.name and m.status == "active"), None)
    if default is None:
        raise ValidationError(f"Name the model to test for {provider.name}.",
                              fields={"model": "required for this provider"})
    return provider.name, default


def probe_of(model: ModelInfo) -> tuple[Call, Mode]:
    """The smallest real call `model` takes: one input to embed for an embedding model (a chat
    request would be refused by it), else a one-word chat."""
    ping = (Message("user", (TextPart("ping"),)),)
    if model.capabilities.embeddings:
        return Call(messages=ping, model=model.id, embed=Embed(texts=("ping",))), Embedding()
    return Call(messages=ping, model=model.id, options=Options(max_tokens=16)), WHOLE


@bp.post("/api/v3/llm/test-connection")
@doc(summary="Test the connection to a provider with one minimal real call", tags=("providers",), auth="either",
     request=TestConnectionSchema, response=TestConnectionResponseSchema, errors=(400, 401, 403, 413, 503),
     request_example=examples.TEST_CONNECTION_REQUEST, response_example=examples.TEST_CONNECTION_RESPONSE)
def test_connection():
    svc = services()
    either_auth(require_agent=False)
    data = body_with(_schema)
    provider, spec = _model_spec(svc.catalog, data["provider"], data.get("model"))
    body = {"success": False, "provider": provider, "model": spec, "latency_ms": None,
            "status": "error", "message": ""}
    try:
        seconds = svc.dispatcher.probe(*probe_of(svc.catalog.resolve(spec).model))
    except ServiceUnavailable as err:
        body.update(status="not_configured", message=err.message)
    except ValidationError:
        raise
    except FlowcallError as err:
        body["status"] = next((s for cls, s in _STATUS if isinstance(err, cls)), "error")
        body["message"] = err.message
    else:
        body.update(success=True, status="connected", latency_ms=int(round(seconds * 1000)),
                    message=f"{provider} answered.")
    return jsonify(body)
