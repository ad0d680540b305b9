"""Small pure helpers shared by adapters: message shaping and error-body reading."""
from __future__ import annotations

import json

from app.calls import Message, TextPart, ToolCallPart, ToolResultPart, Usage
from app.errors import InvalidProviderResponse
from app.http import HttpResponse


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


def empty_answer_warnings(finish: str, text: str | None, usage: Usage, doing: str = "thinking") -> list[str]:
    """Why an answer is empty when the token limit cut it, so the caller knows to raise the limit."""
    if finish != "length" or text:
        return []
    return ["The answer is empty because the token limit was reached"
            + (f" while the model was {doing}" if usage.reasoning_tokens else "") + ": raise options.maxTokens."]


def json_object(resp: HttpResponse, provider: str) -> dict:
    """A 2xx body that must be a JSON object; anything else is the provider's fault, not ours."""
    body = resp.json()
    if not isinstance(body, dict):
        raise InvalidProviderResponse(
            f"{provider} answered HTTP {resp.status} with a body that is not a JSON object: "
            f"{resp.text(200)!r}", provider=provider, retryable=True, upstream_status=resp.status)
    return body


# One usage count of one call: 50 times the largest context window in the catalog (2M), far above
# any real count, and small enough that sums and costs stay exact and fit every ledger column.
MAX_USAGE_TOKENS = 100_000_000


def int_or_zero(value) -> int:
    """A usage count: absent (None) is 0; a whole number from 0 to MAX_USAGE_TOKENS (12.0 too) is
    itself. Anything else (negative, fractional, 1e300, 10**30, a string) is a broken answer: as 0
    it would make the call free, as sent it would overflow the ledger; the call fails instead."""
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer() and 0 <= value <= MAX_USAGE_TOKENS:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_USAGE_TOKENS:
        return value
    raise InvalidProviderResponse(
        f"The provider reported a token count that is not a whole number from 0 to {MAX_USAGE_TOKENS:,}: "
        f"{str(value)[:40]!r}; the call is not accepted, since it could not be metered.", retryable=False)


def schema_instruction(fmt) -> str:
    """The prompt-side half of structured output, for servers without native schema support."""
    if fmt.type == "json_schema" and fmt.schema is not None:
        return ("Respond only with a JSON object that matches this JSON Schema, with no other text:\n"
                + json.dumps(fmt.schema, separators=(",", ":")))
    return "Respond only with a JSON object, with no other text."
