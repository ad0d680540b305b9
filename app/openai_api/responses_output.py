"""Answers in the Responses API's shapes: the Response object (OutputMessage and FunctionToolCall
items) and its ResponseStreamEvent sequence. Pure (no Flask, no I/O) for nodes/responses.py.
"""
from __future__ import annotations

import json

from app.calls import ToolCall
from app.openai_api.chat_completions import extension, sse
from app.openai_api.responses import ResponsesRequest
from app.openai_api.responses_input import new_id
from app.tool_ids import public_id


def usage_body(usage) -> dict:
    return {"input_tokens": usage.input_tokens, "input_tokens_details": {"cached_tokens": usage.cached_input_tokens},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.total_tokens}


def output_text(answer, structured: bool) -> str:
    """The answer's text; with a JSON format, the parsed JSON re-serialised (fences and chatter gone)."""
    if structured and answer.data is not None:
        return json.dumps(answer.data, ensure_ascii=False)
    return answer.text


def message_output(text: str, item_id: str, status: str = "completed") -> dict:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def function_call_output_item(call: ToolCall, item_id: str | None = None) -> dict:
    return {"type": "function_call", "id": item_id or new_id("fc"), "call_id": public_id(call),
            "name": call.name,
            "arguments": json.dumps(call.arguments, ensure_ascii=False), "status": "completed"}


def output_items(answer, structured: bool) -> list[dict]:
    items = []
    text = output_text(answer, structured)
    if text or not answer.tool_calls:
        items.append(message_output(text, new_id("msg")))
    items.extend(function_call_output_item(c) for c in answer.tool_calls)
    return items


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_object(request: ResponsesRequest, response_id: str, created_at: int, *, model: str,
                    status: str = "completed", output=(), answer=None, usage=None, incomplete: str | None = None,
                    warnings=()) -> dict:
    """The Response object; `answer` None gives the in-progress shell the stream opens with."""
    body = {"id": response_id, "object": "response", "created_at": created_at, "status": status,
            "background": False, "error": None,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": request.instructions, "max_output_tokens": request.max_output_tokens,
            "model": model, "output": list(output), "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id, "reasoning": request.echo["reasoning"],
            "store": request.store, "temperature": request.temperature if request.temperature is not None else 1.0,
            "text": {"format": request.text_format}, "tool_choice": request.tool_choice,
            "tools": list(request.tools), "top_p": request.echo["top_p"], "truncation": request.echo["truncation"],
            "user": request.echo["user"], "metadata": request.echo["metadata"],
            "usage": usage_body(usage) if usage is not None else None}
    if answer is not None:
        body["flowcall"] = extension(answer, warnings)
    return body


def completed_response(request: ResponsesRequest, response_id: str, created_at: int, answer, output=None) -> dict:
    structured = request.text_format["type"] != "text"
    incomplete = _INCOMPLETE.get(answer.finish_reason)
    return response_object(request, response_id, created_at, model=answer.routing.model_chosen,
                           status="incomplete" if incomplete else "completed",
                           output=output if output is not None else output_items(answer, structured),
                           answer=answer, usage=answer.usage, incomplete=incomplete,
                           warnings=request.warnings)


# -- the event stream -----------------------------------------------------------------------------------
class EventWriter:
    """ResponseStreamEvent `data:` lines for one streamed answer, each with its `event:` name and a
    sequence number: created, in_progress, the message item opened at its first text, text deltas,
    then (at the end) the text's done events, one item per function call with its arguments, and
    response.completed (or response.incomplete) with the whole Response."""

    def __init__(self, request: ResponsesRequest, response_id: str, created_at: int, model: str):
        self.request, self.response_id, self.created_at, self.model = request, response_id, created_at, model
        self.sequence = 0
        self.message_id: str | None = None
        self.text: list[str] = []

    def event(self, kind: str, **payload) -> str:
        body = {"type": kind, "sequence_number": self.sequence, **payload}
        self.sequence += 1
        return f"event: {kind}\n{sse(body)}"

    def opening(self) -> list[str]:
        shell = response_object(self.request, self.response_id, self.created_at, model=self.model,
                                status="in_progress")
        return [self.event("response.created", response=shell), self.event("response.in_progress", response=shell)]

    def delta(self, text: str) -> list[str]:
        events = []
        if self.message_id is None:
            self.message_id = new_id("msg")
            item = {"type": "message", "id": self.message_id, "status": "in_progress", "role": "assistant",
                    "content": []}
            events.append(self.event("response.output_item.added", output_index=0, item=item))
            events.append(self.event("response.content_part.added", item_id=self.message_id, output_index=0,
                                     content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
        self.text.append(text)
        events.append(self.event("response.output_text.delta", item_id=self.message_id, output_index=0,
                                 content_index=0, delta=text, logprobs=[]))
        return events

    def closing(self, answer) -> tuple[list[str], dict]:
        """The closing events and the finished Response (stored by the caller)."""
        events, output = [], []
        structured = self.request.text_format["type"] != "text"
        text = "".join(self.text) if self.message_id is not None else output_text(answer, structured)
        if self.message_id is None and (text or not answer.tool_calls):
            events.extend(self.delta(text) if text else self._empty_message())
        if self.message_id is not None:
            message = message_output(text, self.message_id)
            part = message["content"][0]
            events.append(self.event("response.output_text.done", item_id=self.message_id, output_index=0,
                                     content_index=0, text=text, logprobs=[]))
            events.append(self.event("response.content_part.done", item_id=self.message_id, output_index=0,
                                     content_index=0, part=part))
            events.append(self.event("response.output_item.done", output_index=0, item=message))
            output.append(message)
        for call in answer.tool_calls:
            index = len(output)
            item = function_call_output_item(call)
            events.append(self.event("response.output_item.added", output_index=index,
                                     item={**item, "arguments": "", "status": "in_progress"}))
            events.append(self.event("response.function_call_arguments.delta", item_id=item["id"],
                                     output_index=index, delta=item["arguments"]))
            events.append(self.event("response.function_call_arguments.done", item_id=item["id"],
                                     output_index=index, arguments=item["arguments"]))
            events.append(self.event("response.output_item.done", output_index=index, item=item))
            output.append(item)
        final = completed_response(self.request, self.response_id, self.created_at, answer, output)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        events.append(self.event(kind, response=final))
        return events, final

    def _empty_message(self) -> list[str]:
        self.message_id = new_id("msg")
        item = {"type": "message", "id": self.message_id, "status": "in_progress", "role": "assistant", "content": []}
        return [self.event("response.output_item.added", output_index=0, item=item),
                self.event("response.content_part.added", item_id=self.message_id, output_index=0, content_index=0,
                           part={"type": "output_text", "text": "", "annotations": []})]

    def error(self, body: dict) -> str:
        """A failure after the first event: the spec's `error` event, carrying the whole error object
        under `error` as well (what OpenAI's SDKs look for to raise APIError)."""
        err = body["error"]
        return self.event("error", code=err.get("code"), message=err.get("message"), param=err.get("param"),
                          error=err)


def replay_events(request: ResponsesRequest, stored: dict) -> list[str]:
    """A stored (idempotent) Response streamed again: its items whole, then response.completed."""
    writer = EventWriter(request, stored["id"], stored["created_at"], stored["model"])
    events = writer.opening()
    for index, item in enumerate(stored["output"]):
        events.append(writer.event("response.output_item.added", output_index=index, item=item))
        events.append(writer.event("response.output_item.done", output_index=index, item=item))
    kind = "response.completed" if stored["status"] == "completed" else "response.incomplete"
    events.append(writer.event(kind, response=stored))
    return events
