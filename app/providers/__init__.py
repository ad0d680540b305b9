"""Provider adapters: one module per wire format, each three pure functions.

    build_request(call: Call, target: Target) -> Plan
        The HTTP request (URL, headers, JSON body) in the provider's native form, plus warnings
        for anything we had to change (a dropped temperature, stop sequences enforced on output).
    parse_response(resp: HttpResponse, call: Call, target: Target) -> Completion
        A 2xx answer in our terms. Raises InvalidProviderResponse (garbage), ContentBlocked,
        or a ProviderError for an error hidden inside a 200.
    parse_error(resp: HttpResponse, target: Target) -> ProviderError
        A non-2xx answer mapped onto our error tree, `retryable` set right, secrets redacted.

Adapters do no I/O and import nothing from Flask: dispatch inlines images that a provider cannot
fetch itself, the transport sends, and stop sequences are enforced on every answer afterwards by
`app.postprocess` (so an adapter only decides what it can send natively).
OpenAI-compatible providers (OpenAI, xAI, Groq, Ollama) are configuration of `openai_chat`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..catalog import ModelInfo, ProviderConfig


@dataclass(frozen=True)
class Target:
    """Where one attempt goes: the model, its provider's settings, and the key to use."""
    model: ModelInfo
    provider: ProviderConfig
    base_url: str
    api_key: str | None

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.api_key,) if self.api_key else ()


_FORMATS = {
    "openai_chat": "app.providers.openai_chat",
    "anthropic": "app.providers.anthropic",
    "gemini": "app.providers.gemini",
    "perplexity_agent": "app.providers.perplexity",
    "mock": "app.providers.mock",
}


def adapter_for(format_name: str):
    """The adapter module for a wire format (imported once, cached by Python)."""
    return importlib.import_module(_FORMATS[format_name])
