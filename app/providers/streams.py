"""Streaming wire formats, pure like the adapters: the request that asks a provider for server-sent
events, and parsers that turn its events into text deltas, a finish reason and usage.

    build_stream_request(call, target) -> Plan | None
        The adapter's own `build_request`, with streaming switched on, so a streamed call is
        translated exactly like a whole one. None: this format is not streamed here (Perplexity's
        Agent API, the mock); the caller answers from the whole reply as one piece.
    parser_for(call, target) -> StreamParser
        `feed(SseEvent) -> Delta` for every event, then `check_end(text)` once the stream is over.

Wire facts relied on (each shape copied into tests/test_streaming.py from the recording named):
- OpenAI family: `stream: true` + `stream_options.include_usage` gives `chat.completion.chunk`
  events, a chunk with `finish_reason`, a last chunk with `choices: []` and `usage`, then
  `data: [DONE]` (fixtures/test_openai/test_openai_moderation_stream.yaml). Groq repeats usage in
  `x_groq.usage`, and reports a failure mid-stream as `event: error` with
  `{"error": {..., "status_code"}}` (fixtures/test_groq/test_tool_use_failed_error_streaming.yaml);
  OpenAI's own ErrorEvent is an `error` object after a 200 (openai/openapi.yaml `ErrorEvent`).
- Anthropic: `stream: true` gives message_start (usage with input tokens), content_block_start /
  content_block_delta (`text_delta`, `input_json_delta` for tool input, `thinking_delta`) /
  content_block_stop, message_delta (stop_reason; usage counts are cumulative), message_stop, and
  `ping` (fixtures/test_anthropic/test_anthropic_model_thinking_part_stream.yaml); a failure after
  the 200 is `event: error` with the usual error body (anthropic/api_errors.md, "error events").
- Gemini: `:streamGenerateContent?alt=sse` gives whole GenerateContentResponse objects, each with
  the running `usageMetadata`; the last one has `finishReason`; thought parts are flagged
  `thought: true` (fixtures/test_google/test_google_model_stream.yaml, *_thinking_part_iter.yaml).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

from ..calls import Call, Usage
from ..errors import ContentBlocked, InvalidProviderResponse, ProviderError, ProviderUnreachable
from ..http import HttpResponse, Plan, loads_bounded
from . import anthropic, gemini, openai_chat

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


# -- requests ---------------------------------------------------------------------------------------
def _streaming(plan: Plan, *, body: dict | None = None, url: str | None = None) -> Plan:
    headers = {k: v for k, v in plan.request.headers.items() if k.lower() not in ("accept", "accept-encoding")}
    # identity: a compressed event stream arrives in compression blocks, not event by event
    headers.update({"Accept": EVENT_STREAM, "Accept-Encoding": "identity"})
    request = replace(plan.request, headers=headers, json=body if body is not None else plan.request.json,
                      url=url or plan.request.url)
    return Plan(request=request, warnings=plan.warnings)


def build_stream_request(call: Call, target) -> Plan | None:
    fmt = target.provider.format
    if fmt == "openai_chat":
        plan = openai_chat.build_request(call, target)
        return _streaming(plan, body={**plan.request.json, "stream": True,
                                      "stream_options": {"include_usage": True}})
    if fmt == "anthropic":
        plan = anthropic.build_request(call, target)
        return _streaming(plan, body={**plan.request.json, "stream": True})
    if fmt == "gemini":
        plan = gemini.build_request(call, target)
        base, sep, method = plan.request.url.rpartition(":")
        if not sep or method != "generateContent":
            raise ValueError(f"unexpected Gemini URL {plan.request.url!r}")
        return _streaming(plan, url=f"{base}:streamGenerateContent?alt=sse")
    return None


def parser_for(call: Call, target):
    fmt = target.provider.format
    if fmt == "openai_chat":
        return OpenAIChatStream(call, target)
    if fmt == "anthropic":
        return AnthropicStream(call, target)
    if fmt == "gemini":
        return GeminiStream(call, target)
    raise ValueError(f"no stream parser for format {fmt!r}")


# -- parsing helpers --------------------------------------------------------------------------------
def _json_object(event: SseEvent, target) -> dict:
    try:
        body = loads_bounded(event.data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise InvalidProviderResponse(f"{target.provider.name} sent a stream event that is not a JSON object: "
                                      f"{event.data[:200]!r}", provider=target.provider.name, retryable=True)
    return body


def _status_in(value, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599 else default


def _error_response(status: int, body: dict) -> HttpResponse:
    """An error that arrived inside a stream, as the adapter's parse_error expects it."""
    return HttpResponse(status=status, body=json.dumps(body).encode(), headers={})


def broke_off(target) -> ProviderError:
    return ProviderUnreachable(f"{target.provider.name} ended its stream before finishing the answer.",
                               provider=target.provider.name)


# -- OpenAI Chat Completions and compatibles ------------------------------------------------------------
class OpenAIChatStream:
    def __init__(self, call: Call, target):
        self.target = target
        self.refusal: list[str] = []
        self.filtered = False
        self.tools = bool(call.tools)

    def feed(self, event: SseEvent) -> Delta:
        if event.data.strip() == "[DONE]":
            return Delta(done=True)
        body = _json_object(event, self.target)
        if "error" in body and not body.get("choices"):
            err = body["error"]
            # No HTTP status comes with an error after the 200: Groq says which it would have been;
            # OpenAI's ErrorEvent is "an internal server error or a timeout" (openapi.yaml), so 500.
            status = _status_in(err.get("status_code") if isinstance(err, dict) else body.get("code"), 500)
            raise openai_chat.parse_error(_error_response(status, body), self.target)
        text, finish = "", None
        choices = body.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            choice = choices[0]
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            content = delta.get("content")
            if isinstance(content, list):   # compatible servers that answer with parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            text = content if isinstance(content, str) else ""
            calls = self._tool_calls(delta.get("tool_calls"), str(body.get("id") or "")) if self.tools else ()
            if isinstance(delta.get("refusal"), str):
                self.refusal.append(delta["refusal"])
            raw = choice.get("finish_reason")
            finish = openai_chat._FINISH.get(raw, "other") if raw else None
            self.filtered = self.filtered or raw == "content_filter"
        else:
            calls = ()
        raw_usage = body.get("usage")
        if not isinstance(raw_usage, dict):
            groq = body.get("x_groq")
            raw_usage = groq.get("usage") if isinstance(groq, dict) else None
        usage = openai_chat._usage(raw_usage, self.target.provider.reasoning_tokens_outside_completion) \
            if isinstance(raw_usage, dict) else None
        model = body.get("model") if isinstance(body.get("model"), str) and body.get("model") else None
        return Delta(text=text, finish_reason=finish, usage=usage, model=model, tool_calls=calls)

    def _tool_calls(self, raw, answer_id: str) -> tuple[ToolCallDelta, ...]:
        """`delta.tool_calls` pieces by `index`; a first piece with `id: ""` (some compatible servers)
        gets the id the whole answer would get."""
        if not isinstance(raw, list):
            return ()
        out = []
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("index"), int):
                raise InvalidProviderResponse(f"{self.target.provider.name} streamed a malformed tool call.",
                                              provider=self.target.provider.name, retryable=True)
            fn = item.get("function") if isinstance(item.get("function"), dict) else {}
            name = fn.get("name") if isinstance(fn.get("name"), str) and fn.get("name") else None
            call_id = item.get("id") if isinstance(item.get("id"), str) and item.get("id") else None
            if name is not None and call_id is None:
                call_id = openai_chat.derived_call_id(answer_id, item["index"])
            arguments = fn.get("arguments") if isinstance(fn.get("arguments"), str) else ""
            out.append(ToolCallDelta(item["index"], call_id, name, arguments))
        return tuple(out)

    def check_end(self, text: str) -> None:
        if self.refusal and not text:
            raise ContentBlocked(f"{self.target.model.id} refused: {''.join(self.refusal)}",
                                 provider=self.target.provider.name)
        if self.filtered and not text:      # as openai_chat.parse_response: a withheld answer
            raise ContentBlocked(f"{self.target.model.id}'s answer was withheld by "
                                 f"{self.target.provider.label}'s content filter.", provider=self.target.provider.name)


# -- Anthropic Messages -------------------------------------------------------------------------------
class AnthropicStream:
    """Text blocks are the answer; so is the input of our own forced answer tool (structured output on
    models without native support), streamed as the JSON text it is. A schema that had to be wrapped
    under "value" is held until its block closes and then sent unwrapped, as the whole answer has it."""

    def __init__(self, call: Call, target):
        self.target = target
        self.structured = anthropic.structured_output(call, target.model)
        self.answer_tool = self.structured.tool["name"] if self.structured.tool else None
        self.blocks: dict[int, str] = {}        # index -> "text" | "answer" | "tool" | "other"
        self.tool_index: dict[int, int] = {}    # block index -> the caller's tool call index
        self.tools = bool(call.tools)
        self.wrapped_json: list[str] = []
        self.usage: dict = {}
        self.answered_by_tool = False
        self.refusal: dict | None = None
        self.thinking: list[dict] = []          # the answer's thinking blocks, as built from the stream
        self.thinking_at: dict[int, dict] = {}  # block index -> its thinking block being built

    def feed(self, event: SseEvent) -> Delta:
        body = _json_object(event, self.target)
        kind = body.get("type") or event.event
        if kind == "error":
            raise anthropic.parse_error(_error_response(200, body), self.target)   # status from error.type
        if kind == "message_start":
            message = body.get("message") if isinstance(body.get("message"), dict) else {}
            self._add_usage(message.get("usage"))
            model = message.get("model") if isinstance(message.get("model"), str) else None
            return Delta(usage=anthropic._usage(self.usage), model=model)
        if kind == "content_block_start":
            return self._block_start(body)
        if kind == "content_block_delta":
            return self._block_delta(body)
        if kind == "content_block_stop":
            return self._block_stop(body)
        if kind == "message_delta":
            return self._message_delta(body)
        if kind == "message_stop":
            return Delta(done=True)
        return Delta()          # ping, and event types added later

    def _add_usage(self, raw) -> None:
        if isinstance(raw, dict):   # cumulative: later counts replace earlier ones, nulls do not
            self.usage.update({k: v for k, v in raw.items() if v is not None})

    def _block_start(self, body: dict) -> Delta:
        block = body.get("content_block") if isinstance(body.get("content_block"), dict) else {}
        index = body.get("index")
        if block.get("type") == "text":
            self.blocks[index] = "text"
            return Delta(text=block.get("text") if isinstance(block.get("text"), str) else "")
        if block.get("type") == "tool_use" and self.answer_tool and block.get("name") == self.answer_tool:
            self.blocks[index] = "answer"
            self.answered_by_tool = True
        elif block.get("type") == "tool_use" and self.tools:
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise InvalidProviderResponse(f"{self.target.provider.name} streamed a malformed tool_use block.",
                                              provider=self.target.provider.name, retryable=True)
            self.blocks[index] = "tool"
            self.tool_index[index] = len(self.tool_index)
            # the thinking blocks streamed before it ride on the first call, as in a whole answer
            kept = anthropic.thinking_blocks({"thinking": self.thinking}) if self.tool_index[index] == 0 else []
            return Delta(tool_calls=(ToolCallDelta(self.tool_index[index], block["id"], block["name"],
                                                   state={"thinking": kept} if kept else None),))
        elif block.get("type") in ("thinking", "redacted_thinking"):
            self.blocks[index] = "thinking"
            self.thinking_at[index] = dict(block)
            self.thinking.append(self.thinking_at[index])
        else:
            self.blocks[index] = "other"
        return Delta()

    def _block_delta(self, body: dict) -> Delta:
        delta = body.get("delta") if isinstance(body.get("delta"), dict) else {}
        kind = self.blocks.get(body.get("index"))
        if kind == "text" and delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
            return Delta(text=delta["text"])
        if kind == "thinking":      # thinking_delta text and the closing signature_delta build the block
            block = self.thinking_at[body.get("index")]
            if delta.get("type") == "thinking_delta" and isinstance(delta.get("thinking"), str):
                block["thinking"] = (block.get("thinking") or "") + delta["thinking"]
            elif delta.get("type") == "signature_delta" and isinstance(delta.get("signature"), str):
                block["signature"] = (block.get("signature") or "") + delta["signature"]
            return Delta()
        if kind == "tool" and delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            return Delta(tool_calls=(ToolCallDelta(self.tool_index[body.get("index")],
                                                   arguments=delta["partial_json"]),))
        if kind == "answer" and delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            if self.structured.wrapped:
                self.wrapped_json.append(delta["partial_json"])
                return Delta()
            return Delta(text=delta["partial_json"])
        return Delta()

    def _block_stop(self, body: dict) -> Delta:
        if self.blocks.get(body.get("index")) != "answer" or not self.structured.wrapped:
            return Delta()
        try:
            value = loads_bounded("".join(self.wrapped_json) or "{}")
        except ValueError:
            raise InvalidProviderResponse(f"{self.target.provider.name} streamed tool input that is not JSON.",
                                          provider=self.target.provider.name, retryable=True) from None
        value = value.get("value") if isinstance(value, dict) else value
        return Delta(text=json.dumps(value, ensure_ascii=False))

    def _message_delta(self, body: dict) -> Delta:
        self._add_usage(body.get("usage"))
        delta = body.get("delta") if isinstance(body.get("delta"), dict) else {}
        raw = delta.get("stop_reason")
        finish = anthropic._FINISH.get(raw, "other") if raw else None
        if raw == "tool_use" and self.answered_by_tool and not self.tool_index:
            finish = "stop"     # our own answer tool: the model finished; no tool call for the caller
        if raw == "refusal":
            self.refusal = delta
        return Delta(finish_reason=finish, usage=anthropic._usage(self.usage))

    def check_end(self, text: str) -> None:
        if self.refusal is not None and not text:
            raise anthropic._refusal(self.refusal, self.target.model.id, self.target.provider.name)


# -- Google Gemini ------------------------------------------------------------------------------------
class GeminiStream:
    """Gemini streams each functionCall whole (its thoughtSignature beside it): one complete tool
    call delta each, with the id the whole answer would give it."""

    def __init__(self, call: Call, target):
        self.target = target
        self.filtered: tuple[str, str | None] | None = None     # (finishReason, finishMessage)
        self.tools = bool(call.tools)
        self.calls = 0

    def feed(self, event: SseEvent) -> Delta:
        body = _json_object(event, self.target)
        if isinstance(body.get("error"), dict):
            status = _status_in(body["error"].get("code"), 500)
            raise gemini.parse_error(_error_response(status, body), self.target)
        usage = gemini._usage(body["usageMetadata"]) if isinstance(body.get("usageMetadata"), dict) else None
        model = body.get("modelVersion") if isinstance(body.get("modelVersion"), str) and body["modelVersion"] else None
        candidates = body.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            feedback = body.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                raise gemini._blocked_prompt(body, self.target, 200)
            return Delta(usage=usage, model=model)      # a usage-only chunk
        candidate = candidates[0] if isinstance(candidates[0], dict) else {}
        raw = candidate.get("finishReason")
        finish = gemini._finish(raw) if raw else None
        if finish == "content_filter":
            self.filtered = (raw, candidate.get("finishMessage"))
        calls = gemini.function_calls(candidate, str(body.get("responseId") or ""), self.target.provider.name,
                                      first=self.calls) if self.tools else ()
        self.calls += len(calls)
        deltas = tuple(ToolCallDelta(self.calls - len(calls) + i, c.id, c.name,
                                     json.dumps(c.arguments, ensure_ascii=False), c.state)
                       for i, c in enumerate(calls))
        return Delta(text=gemini._text(candidate), finish_reason=finish, usage=usage, model=model,
                     tool_calls=deltas)

    def check_end(self, text: str) -> None:
        if self.filtered is not None and not text:
            raw, detail = self.filtered
            raise ContentBlocked(f"Google Gemini withheld the answer ({raw})" + (f": {detail}" if detail else "."),
                                 provider=self.target.provider.name, upstream_status=200)
