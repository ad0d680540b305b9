"""Anthropic Messages as a stream: the streaming request and the parser of its events.

Wire facts relied on: `stream: true` gives message_start (usage with input tokens),
content_block_start / content_block_delta (`text_delta`, `input_json_delta` for tool input,
`thinking_delta`) / content_block_stop, message_delta (stop_reason; usage counts are cumulative),
message_stop, and `ping` (fixtures/test_anthropic/test_anthropic_model_thinking_part_stream.yaml);
a failure after the 200 is `event: error` with the usual error body (anthropic/api_errors.md,
"error events").
"""
from __future__ import annotations

import json

from app.calls import Call
from app.errors import InvalidProviderResponse
from app.http import Plan, loads_bounded
from app.providers import anthropic
from app.providers.streams import Delta, SseEvent, ToolCallDelta, error_response, json_event, streaming_plan


def stream_request(call: Call, target) -> Plan:
    plan = anthropic.build_request(call, target)
    return streaming_plan(plan, body={**plan.request.json, "stream": True})


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
        body = json_event(event, self.target)
        kind = body.get("type") or event.event
        if kind == "error":
            raise anthropic.parse_error(error_response(200, body), self.target)   # status from error.type
        if kind == "message_start":
            message = body.get("message") if isinstance(body.get("message"), dict) else {}
            self._add_usage(message.get("usage"))
            model = message.get("model") if isinstance(message.get("model"), str) else None
            return Delta(usage=anthropic.parse_usage(self.usage), model=model)
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
        finish = anthropic.FINISH_REASONS.get(raw, "other") if raw else None
        if raw == "tool_use" and self.answered_by_tool and not self.tool_index:
            finish = "stop"     # our own answer tool: the model finished; no tool call for the caller
        if raw == "refusal":
            self.refusal = delta
        return Delta(finish_reason=finish, usage=anthropic.parse_usage(self.usage))

    def check_end(self, text: str) -> None:
        if self.refusal is not None and not text:
            raise anthropic.refusal_error(self.refusal, self.target.model.id, self.target.provider.name)

