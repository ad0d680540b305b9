"""Google Gemini as a stream: the streaming request and the parser of its events.

Wire facts relied on: `:streamGenerateContent?alt=sse` gives whole GenerateContentResponse objects,
each with the running `usageMetadata`; the last one has `finishReason`; thought parts are flagged
`thought: true` (fixtures/test_google/test_google_model_stream.yaml, *_thinking_part_iter.yaml).
"""
from __future__ import annotations

import json

from app.calls import Call
from app.errors import ContentBlocked
from app.http import Plan
from app.providers import gemini
from app.providers.streams import Delta, SseEvent, ToolCallDelta, error_response, json_event, status_in, streaming_plan


def stream_request(call: Call, target) -> Plan:
    plan = gemini.build_request(call, target)
    base, sep, method = plan.request.url.rpartition(":")
    if not sep or method != "generateContent":
        raise ValueError(f"unexpected Gemini URL {plan.request.url!r}")
    return streaming_plan(plan, url=f"{base}:streamGenerateContent?alt=sse")


class GeminiStream:
    """Gemini streams each functionCall whole (its thoughtSignature beside it): one complete tool
    call delta each, with the id the whole answer would give it."""

    def __init__(self, call: Call, target):
        self.target = target
        self.filtered: tuple[str, str | None] | None = None     # (finishReason, finishMessage)
        self.tools = bool(call.tools)
        self.calls = 0

    def feed(self, event: SseEvent) -> Delta:
        body = json_event(event, self.target)
        if isinstance(body.get("error"), dict):
            status = status_in(body["error"].get("code"), 500)
            raise gemini.parse_error(error_response(status, body), self.target)
        usage = gemini.parse_usage(body["usageMetadata"]) if isinstance(body.get("usageMetadata"), dict) else None
        model = body.get("modelVersion") if isinstance(body.get("modelVersion"), str) and body["modelVersion"] else None
        candidates = body.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            feedback = body.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                raise gemini.blocked_prompt_error(body, self.target, 200)
            return Delta(usage=usage, model=model)      # a usage-only chunk
        candidate = candidates[0] if isinstance(candidates[0], dict) else {}
        raw = candidate.get("finishReason")
        finish = gemini.finish_of(raw) if raw else None
        if finish == "content_filter":
            self.filtered = (raw, candidate.get("finishMessage"))
        calls = gemini.function_calls(candidate, str(body.get("responseId") or ""), self.target.provider.name,
                                      first=self.calls) if self.tools else ()
        self.calls += len(calls)
        deltas = tuple(ToolCallDelta(self.calls - len(calls) + i, c.id, c.name,
                                     json.dumps(c.arguments, ensure_ascii=False), c.state)
                       for i, c in enumerate(calls))
        return Delta(text=gemini.candidate_text(candidate), finish_reason=finish, usage=usage, model=model,
                     tool_calls=deltas)

    def check_end(self, text: str) -> None:
        if self.filtered is not None and not text:
            raw, detail = self.filtered
            raise ContentBlocked(f"Google Gemini withheld the answer ({raw})" + (f": {detail}" if detail else "."),
                                 provider=self.target.provider.name, upstream_status=200)
