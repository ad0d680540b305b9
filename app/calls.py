"""The internal request and answer: frozen, provider-neutral, validated before they exist.

Nodes build a `Call` from a validated body; provider adapters read it and never see Flask or JSON
bodies of ours. Everything here is plain data so translation stays pure and testable as tables.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 1000

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "other"]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    """An image as the caller sent it: an http(s) URL or a `data:image/...;base64,` URI.

    Adapters that need bytes (Gemini, servers without URL support) get parts whose `url` is already a
    data URI: dispatch inlines them before building, so adapters never download anything.
    """
    url: str
    detail: str | None = None

    @property
    def is_data_uri(self) -> bool:
        return self.url.startswith("data:")


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for. `arguments` is always a parsed JSON object.

    `state` carries provider state that must go back with this call on the next turn (Gemini 3's
    `thoughtSignature`, for one); it is opaque to everything but the adapter that set it, and the
    OpenAI-shaped surfaces keep it for the client (inside the call id they hand out, or stored).
    """
    id: str
    name: str
    arguments: dict
    state: dict | None = None


@dataclass(frozen=True)
class ToolCallPart:
    """An assistant turn's request to call a tool (the model's earlier answer, sent back)."""
    call: ToolCall


@dataclass(frozen=True)
class ToolResultPart:
    """A `tool` turn's result for the call `call_id`; `name` is the called function's name (Gemini's
    `functionResponse` needs it: nodes fill it in from the matching call)."""
    call_id: str
    content: str
    name: str | None = None
    is_error: bool = False


Part = TextPart | ImagePart | ToolCallPart | ToolResultPart


@dataclass(frozen=True)
class Message:
    role: Role
    parts: tuple[Part, ...]

    @property
    def text(self) -> str:
        """The message's text parts joined; images are ignored."""
        return "\n".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def has_images(self) -> bool:
        return any(isinstance(p, ImagePart) for p in self.parts)

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(p.call for p in self.parts if isinstance(p, ToolCallPart))


@dataclass(frozen=True)
class Tool:
    """A function the model may call: `parameters` is the JSON Schema of its arguments (an object)."""
    name: str
    description: str | None = None
    parameters: dict | None = None
    strict: bool = False


@dataclass(frozen=True)
class ToolChoice:
    """`auto` (the model decides), `none`, `required` (some tool), or `tool` (the one named)."""
    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None


@dataclass(frozen=True)
class ResponseFormat:
    type: Literal["json_object", "json_schema"]
    name: str = "response"
    schema: dict | None = None
    strict: bool = False


@dataclass(frozen=True)
class Options:
    temperature: float | None = None   # None: the caller did not set it (adapters use the default)
    max_tokens: int = DEFAULT_MAX_TOKENS
    stop: tuple[str, ...] = ()
    timeout_ms: int | None = None
    max_tokens_set: bool = True        # False: max_tokens is our default, which a thinking model may widen
    reasoning_effort: str | None = None    # minimal | low | medium | high; None: the provider's default

    @property
    def temperature_or_default(self) -> float:
        return DEFAULT_TEMPERATURE if self.temperature is None else self.temperature


@dataclass(frozen=True)
class Embed:
    """What an embeddings call embeds: `texts`, or `tokens` (token arrays, which only OpenAI takes).
    `query`: the caller sent one string, which Gemini embeds as a search query, not a document.
    `truncate`: an input over the model's limit is cut to it (with a warning) rather than refused."""
    texts: tuple[str, ...] = ()
    tokens: tuple[tuple[int, ...], ...] = ()
    dimensions: int | None = None
    query: bool = False
    user: str | None = None
    truncate: bool = False

    @property
    def count(self) -> int:
        return len(self.tokens) if self.tokens else len(self.texts)

    def part(self, start: int, stop: int) -> Embed:
        """The inputs start..stop, for one of several provider requests."""
        return replace(self, texts=self.texts[start:stop], tokens=self.tokens[start:stop])


@dataclass(frozen=True)
class Call:
    messages: tuple[Message, ...]
    model: str                          # as the caller wrote it: "provider.model", an alias, or "auto"
    options: Options = Options()
    response_format: ResponseFormat | None = None
    task: str | None = None
    fallbacks: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None       # None: the provider's default (auto when tools are sent)
    parallel_tool_calls: bool | None = None     # None: the provider's default
    tenant_id: str | None = None
    agent_id: str | None = None
    key_id: str | None = None
    request_id: str | None = None
    embed: Embed | None = None          # an embeddings call: `messages` then hold the texts, one a turn

    @property
    def has_images(self) -> bool:
        return any(m.has_images for m in self.messages)

    def with_messages(self, messages: tuple[Message, ...]) -> Call:
        return replace(self, messages=messages)


@dataclass(frozen=True)
class Usage:
    """Normalised token counts: `output_tokens` always includes reasoning/thinking tokens, and
    `input_tokens` every prompt token, cache reads (`cached_input_tokens`) and cache writes
    (`cache_write_tokens`, of which `cache_write_1h_tokens` were 1-hour writes) included.
    `reported` is false when the provider sent no usage at all: the counts are then unknown, not 0."""
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reported: bool = True

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Completion:
    """What an adapter's `parse_response` returns: the provider's answer in our terms."""
    text: str
    finish_reason: FinishReason
    usage: Usage
    model: str                          # the model name the provider says served the call
    data: object = None                 # structured output the provider returned natively (tool input)
    cost: float | None = None           # the provider's own cost figure, preferred over our prices
    warnings: tuple[str, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Embedded:
    """What an embeddings adapter's `parse_response` returns: one vector per input, in order."""
    vectors: tuple[list[float], ...]
    usage: Usage
    model: str


@dataclass(frozen=True)
class Routing:
    is_auto_routed: bool
    model_chosen: str
    confidence: float
    reason: str
    fallbacks: tuple[str, ...] = ()
    attempts: int = 1


@dataclass(frozen=True)
class Answer:
    """The finished call, ready for a node to dump."""
    text: str
    data: object
    model: str
    provider: str
    finish_reason: FinishReason
    usage: Usage
    cost: float | None
    latency_ms: int
    routing: Routing
    warnings: tuple[str, ...] = field(default_factory=tuple)
    request_id: str | None = None
    upstream_ms: float = 0.0
    tool_calls: tuple[ToolCall, ...] = ()
    estimated_cost: float | None = None     # what budgets charge when the provider reported no usage
    vectors: tuple[list[float], ...] = ()   # an embeddings call's answer, one vector per input
