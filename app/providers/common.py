"""Small pure helpers shared by adapters: message shaping and error-body reading."""
from __future__ import annotations

import json

from ..calls import Message, TextPart, ToolCallPart, ToolResultPart
from ..errors import InvalidProviderResponse
from ..http import HttpResponse


def split_system(messages: tuple[Message, ...]) -> tuple[str, tuple[Message, ...]]:
    """Providers with a separate system field get every system message's text, joined in order."""
    system = "\n\n".join(m.text for m in messages if m.role == "system" and m.text)
    return system, tuple(m for m in messages if m.role != "system")


def merge_consecutive(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """Join runs of same-role messages: Anthropic and Gemini want strictly alternating turns."""
    merged: list[Message] = []
    for m in messages:
        if merged and merged[-1].role == m.role:
            prev = merged[-1]
            joiner = (TextPart("\n\n"),) if prev.parts and m.parts and not (
                _is_tool(prev.parts[-1]) or _is_tool(m.parts[0])) else ()
            merged[-1] = Message(prev.role, prev.parts + joiner + m.parts)
        else:
            merged.append(m)
    return tuple(_join_adjacent_text(m) for m in merged)


def _is_tool(part) -> bool:
    return isinstance(part, (ToolCallPart, ToolResultPart))


def _join_adjacent_text(message: Message) -> Message:
    parts: list = []
    for p in message.parts:
        if isinstance(p, TextPart) and parts and isinstance(parts[-1], TextPart):
            parts[-1] = TextPart(parts[-1].text + p.text)
        else:
            parts.append(p)
    return Message(message.role, tuple(parts))


def json_object(resp: HttpResponse, provider: str) -> dict:
    """A 2xx body that must be a JSON object; anything else is the provider's fault, not ours."""
    body = resp.json()
    if not isinstance(body, dict):
        raise InvalidProviderResponse(
            f"{provider} answered HTTP {resp.status} with a body that is not a JSON object: "
            f"{resp.text(200)!r}", provider=provider, retryable=True, upstream_status=resp.status)
    return body


def int_or_zero(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def schema_instruction(fmt) -> str:
    """The prompt-side half of structured output, for servers without native schema support."""
    if fmt.type == "json_schema" and fmt.schema is not None:
        return ("Respond only with a JSON object that matches this JSON Schema, with no other text:\n"
                + json.dumps(fmt.schema, separators=(",", ":")))
    return "Respond only with a JSON object, with no other text."
