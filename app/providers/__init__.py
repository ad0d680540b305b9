"""Provider adapters, and the one registry from wire format to adapter (`adapter_for`).

A wire format spoken over HTTP is a module of three pure functions,

    build_request(call: Call, target: Target) -> Plan
        The HTTP request (URL, headers, JSON body) in the provider's native form, plus warnings
        for anything we had to change (a dropped temperature, stop sequences enforced on output).
    parse_response(resp: HttpResponse, call: Call, target: Target) -> Completion
        A 2xx answer in our terms. Raises InvalidProviderResponse (garbage), ContentBlocked,
        or a ProviderError for an error hidden inside a 200.
    parse_error(resp: HttpResponse, target: Target) -> ProviderError
        A non-2xx answer mapped onto our error tree, `retryable` set right, secrets redacted.

and, when flowcall streams it, a `<format>_stream` module with its streaming request and event
parser (the vocabulary they share is `app.providers.streams`). The registry holds one entry per
format: `answer(call, target, send)` for a whole answer, and `stream` (or None) for a streamed one.
`mock` is an entry like the others that answers in this process and so never calls `send`.

Adapters do no I/O and import nothing from Flask: dispatch inlines images that a provider cannot
fetch itself, the transport sends (the `send` an entry is given), and stop sequences are enforced
on every answer afterwards by `app.postprocess` (so an adapter only decides what it can send natively).
OpenAI-compatible providers (OpenAI, xAI, Groq, Ollama) are configuration of `openai_chat`.

Embeddings have a registry of their own (`embedder_for`): per wire format a module with the same three
pure functions over an `Embed` (openai_embeddings, gemini_embeddings) and the provider's bounds on
one request, which app/embedding_mode.py splits the inputs to.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from app.calls import Call, Completion, Embed, Embedded
from app.catalog import ModelInfo, ProviderConfig
from app.errors import ProviderError
from app.http import HttpRequest, HttpResponse, Plan
from app.providers import (anthropic, anthropic_stream, gemini, gemini_embeddings, gemini_stream, mock, openai_chat,
                           openai_chat_stream, openai_embeddings, perplexity)
from app.providers.streams import StreamParser


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


Send = Callable[[HttpRequest], HttpResponse]       # one exchange with the provider: the caller's I/O


@dataclass(frozen=True)
class HttpAnswer:
    """A whole HTTP answer in our terms: a 2xx through the adapter's parse_response, any other
    status through its parse_error."""
    parse_response: Callable[[HttpResponse, Call, Target], Completion]
    parse_error: Callable[[HttpResponse, Target], ProviderError]

    def __call__(self, resp: HttpResponse, call: Call, target: Target) -> Completion:
        if not 200 <= resp.status < 300:
            raise self.parse_error(resp, target)
        return self.parse_response(resp, call, target)


@dataclass(frozen=True)
class Stream:
    """How a format streams: the request asking for events, the parser of one attempt's events, and
    the whole answer's parser for a reply that is not an event stream (an error status, or a server
    that ignored `stream: true`)."""
    request: Callable[[Call, Target], Plan]
    parser: Callable[[Call, Target], StreamParser]
    whole: HttpAnswer


class Adapter(Protocol):
    """A registry entry: what dispatch needs of a wire format, whole or streamed."""

    @property
    def stream(self) -> Stream | None:
        """None: a streamed call gets the whole answer as one piece."""

    def answer(self, call: Call, target: Target, send: Send) -> tuple[Completion, tuple[str, ...]]:
        """One whole answer and the plan's warnings; `send` is called at most once."""


@dataclass(frozen=True)
class HttpAdapter:
    """A wire format spoken over HTTP: build, send, parse."""
    build_request: Callable[[Call, Target], Plan]
    parse: HttpAnswer
    stream: Stream | None = None

    def answer(self, call: Call, target: Target, send: Send) -> tuple[Completion, tuple[str, ...]]:
        plan = self.build_request(call, target)
        return self.parse(send(plan.request), call, target), plan.warnings


@dataclass(frozen=True)
class LocalAdapter:
    """A format answered in this process (`mock`): nothing is sent, so no attempt is timed or observed."""
    complete: Callable[[Call, Target], Completion]
    stream: None = None

    def answer(self, call: Call, target: Target, send: Send) -> tuple[Completion, tuple[str, ...]]:
        return self.complete(call, target), ()


def _http(adapter: ModuleType, stream_request: Callable[[Call, Target], Plan] | None = None,
          parser: Callable[[Call, Target], StreamParser] | None = None) -> HttpAdapter:
    """An HTTP format's entry from its adapter module, and its stream module's request and parser."""
    whole = HttpAnswer(adapter.parse_response, adapter.parse_error)
    stream = Stream(stream_request, parser, whole) if stream_request is not None and parser is not None else None
    return HttpAdapter(adapter.build_request, whole, stream)


_REGISTRY: dict[str, Adapter] = {
    "openai_chat": _http(openai_chat, openai_chat_stream.stream_request, openai_chat_stream.OpenAIChatStream),
    "anthropic": _http(anthropic, anthropic_stream.stream_request, anthropic_stream.AnthropicStream),
    "gemini": _http(gemini, gemini_stream.stream_request, gemini_stream.GeminiStream),
    "perplexity_agent": _http(perplexity),     # its Agent API is not streamed here
    "mock": LocalAdapter(mock.complete),
}


def adapter_for(format_name: str) -> Adapter:
    """The registry's entry for a wire format (a catalog provider's `format`)."""
    return _REGISTRY[format_name]


@dataclass(frozen=True)
class Embedder:
    """An embeddings wire format: build, send, parse; at most `max_inputs` inputs and (when set)
    `max_request_tokens` tokens in one request."""
    build_request: Callable[[Embed, Target], Plan]
    parse_response: Callable[[HttpResponse, Embed, Target], Embedded]
    parse_error: Callable[[HttpResponse, Target], ProviderError]
    max_inputs: int
    max_request_tokens: int | None

    def embed(self, embed: Embed, target: Target, send: Send) -> Embedded:
        """One request's vectors; `send` is called once."""
        resp = send(self.build_request(embed, target).request)
        if not 200 <= resp.status < 300:
            raise self.parse_error(resp, target)
        return self.parse_response(resp, embed, target)


def _embedder(module: ModuleType) -> Embedder:
    return Embedder(module.build_request, module.parse_response, module.parse_error, module.MAX_INPUTS,
                    module.MAX_REQUEST_TOKENS)


_EMBEDDERS: dict[str, Embedder] = {
    "openai_chat": _embedder(openai_embeddings),     # OpenAI and the compatible servers (Ollama)
    "gemini": _embedder(gemini_embeddings),
}


def embedder_for(format_name: str) -> Embedder | None:
    """The embeddings entry for a wire format; None: its providers do not embed."""
    return _EMBEDDERS.get(format_name)
