"""What every provider stream is made of, pure like the adapters: server-sent events in, `Delta`s
out, and the helpers the per-format parsers share.

A format that streams has its own module beside its adapter (`openai_chat_stream`,
`anthropic_stream`, `gemini_stream`) with two things, named in the registry (`app.providers`):

    stream_request(call, target) -> Plan
        The adapter's own `build_request` with streaming switched on (`streaming_plan`), so a
        streamed call is translated exactly like a whole one.
    a StreamParser class, built per attempt with (call, target)
        `feed(SseEvent) -> Delta` for every event, then `check_end(text)` once the stream is over.

Each module names the recordings its wire facts come from; tests/test_streaming.py copies their shapes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Protocol

from app.calls import Usage
from app.errors import InvalidProviderResponse, ProviderError, ProviderUnreachable
from app.http import HttpResponse, Plan, loads_bounded

EVENT_STREAM = "text/event-stream"


@dataclass(frozen=True)
class SseEvent:
    event: str          # "" when the server named none (the spec's default, "message")
    data: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of the `index`-th tool call, in OpenAI's chunk terms: the first piece has the id and
    name (and the provider state, when the provider sends it with the call), later ones more of the
    arguments' JSON text."""
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    state: dict | None = None


@dataclass(frozen=True)
class Delta:
    """What one provider event adds to the answer."""
    text: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None    # ours: stop, length, content_filter, tool_calls, other
    usage: Usage | None = None          # the provider's running total; replaces earlier ones
    model: str | None = None
    done: bool = False                  # the provider said the stream is over


class SseDecoder:
    """Lines -> events, by the server-sent events rules a provider stream needs: `event:` and `data:`
    fields (several data lines joined by newlines), comments and other fields ignored, and a blank
    line dispatching the event."""

    def __init__(self):
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SseEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None

    def flush(self) -> SseEvent | None:
        """An event left open at the end of the stream: servers that omit the final blank line."""
        return self._dispatch()

    def _dispatch(self) -> SseEvent | None:
        event, data = self._event, self._data
        self._event, self._data = "", []
        return SseEvent(event, "\n".join(data)) if data else None


class StreamParser(Protocol):
    """One attempt's reading of one format's events (it may keep state between them)."""

    def feed(self, event: SseEvent) -> Delta: ...

    def check_end(self, text: str) -> None:
        """The stream is over and `text` was the answer: raise if the provider withheld it."""


# -- requests ---------------------------------------------------------------------------------------
def streaming_plan(plan: Plan, *, body: dict | None = None, url: str | None = None) -> Plan:
    """A whole-answer plan asking for an event stream instead: `body` or `url` replace the plan's own."""
    headers = {k: v for k, v in plan.request.headers.items() if k.lower() not in ("accept", "accept-encoding")}
    # identity: a compressed event stream arrives in compression blocks, not event by event
    headers.update({"Accept": EVENT_STREAM, "Accept-Encoding": "identity"})
    request = replace(plan.request, headers=headers, json=body if body is not None else plan.request.json,
                      url=url or plan.request.url)
    return Plan(request=request, warnings=plan.warnings)


# -- parsing helpers --------------------------------------------------------------------------------
def json_event(event: SseEvent, target) -> dict:
    """The event's data as a JSON object, or the retryable error a garbled event is."""
    try:
        body = loads_bounded(event.data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise InvalidProviderResponse(f"{target.provider.name} sent a stream event that is not a JSON object: "
                                      f"{event.data[:200]!r}", provider=target.provider.name, retryable=True)
    return body


def status_in(value, default: int) -> int:
    """An error event's HTTP status, when it names a plausible one."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599 else default


def error_response(status: int, body: dict) -> HttpResponse:
    """An error that arrived inside a stream, as the adapter's parse_error expects it."""
    return HttpResponse(status=status, body=json.dumps(body).encode(), headers={})


def broke_off(target) -> ProviderError:
    return ProviderUnreachable(f"{target.provider.name} ended its stream before finishing the answer.",
                               provider=target.provider.name)
