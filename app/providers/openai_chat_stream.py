"""OpenAI Chat Completions (and the compatible providers) as a stream: the streaming request and
the parser of its `chat.completion.chunk` events.

Wire facts relied on: `stream: true` + `stream_options.include_usage` gives `chat.completion.chunk`
events, a chunk with `finish_reason`, a last chunk with `choices: []` and `usage`, then
`data: [DONE]` (fixtures/test_openai/test_openai_moderation_stream.yaml). Groq repeats usage in
`x_groq.usage`, and reports a failure mid-stream as `event: error` with
`{"error": {..., "status_code"}}` (fixtures/test_groq/test_tool_use_failed_error_streaming.yaml);
OpenAI's own ErrorEvent is an `error` object after a 200 (openai/openapi.yaml `ErrorEvent`).
"""
from __future__ import annotations

from app.calls import Call
from app.errors import ContentBlocked, InvalidProviderResponse
from app.http import Plan
from app.providers import openai_chat
from app.providers.streams import Delta, SseEvent, ToolCallDelta, error_response, json_event, status_in, streaming_plan


def stream_request(call: Call, target) -> Plan:
    plan = openai_chat.build_request(call, target)
    return streaming_plan(plan, body={**plan.request.json, "stream": True, "stream_options": {"include_usage": True}})


class OpenAIChatStream:
    def __init__(self, call: Call, target):
        self.target = target
        self.refusal: list[str] = []
        self.filtered = False
        self.tools = bool(call.tools)

    def feed(self, event: SseEvent) -> Delta:
        if event.data.strip() == "[DONE]":
            return Delta(done=True)
        body = json_event(event, self.target)
        if "error" in body and not body.get("choices"):
            err = body["error"]
            # No HTTP status comes with an error after the 200: Groq says which it would have been;
            # OpenAI's ErrorEvent is "an internal server error or a timeout" (openapi.yaml), so 500.
            status = status_in(err.get("status_code") if isinstance(err, dict) else body.get("code"), 500)
            raise openai_chat.parse_error(error_response(status, body), self.target)
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
            finish = openai_chat.FINISH_REASONS.get(raw, "other") if raw else None
            self.filtered = self.filtered or raw == "content_filter"
        else:
            calls = ()
        raw_usage = body.get("usage")
        if not isinstance(raw_usage, dict):
            groq = body.get("x_groq")
            raw_usage = groq.get("usage") if isinstance(groq, dict) else None
        usage = openai_chat.parse_usage(raw_usage, self.target.provider.reasoning_tokens_outside_completion) \
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

