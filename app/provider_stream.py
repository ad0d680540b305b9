"""One provider's streamed answer as it arrives, read to the first text the client may see and then
piece by piece: events through the format's parser (app/providers/streams.py), text through the stop
guard, tool call pieces put together again for the finished answer.

Stop sequences are enforced on the stream as `app.postprocess.enforce_stop` does on a whole answer:
text that may be the start of a stop sequence is held back until the next delta settles it, so a
stop string split across deltas is never sent. After a cut the provider's stream is still read to
its end (text discarded) for its usage, so the ledger counts what the provider bills.
"""
from __future__ import annotations

import json
from collections import deque

from app import postprocess
from app.calls import Completion, ToolCall, Usage
from app.errors import InvalidProviderResponse, ProviderError
from app.providers import Target
from app.providers.streams import SseDecoder, StreamParser, ToolCallDelta, broke_off
from app.transport import LineStream


class StopGuard:
    """A stream's stop sequences, cut exactly where `postprocess.enforce_stop` would cut the whole
    text: text is sent only once no stop sequence can still begin in it."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self.longest = max(map(len, self.stops), default=0)
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of `text` (after what was held back) that is safe to send now."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buffer = self.pending + text
        cut = self._earliest(buffer)
        if cut is not None and not self._may_begin_before(buffer, cut):
            self.stopped, self.pending = True, ""
            return buffer[:cut]
        # Beyond this point a stop sequence may still be completing with the next delta.
        safe = max(0, len(buffer) - (self.longest - 1))
        if cut is not None:
            safe = min(safe, cut)
        self.pending = buffer[safe:]
        return buffer[:safe]

    def flush(self) -> str:
        """The end of the stream: what was held back, cut at a stop sequence if it holds one."""
        text, cut = postprocess.enforce_stop(self.pending, self.stops)
        self.pending = ""
        self.stopped = self.stopped or cut
        return text

    def _earliest(self, buffer: str) -> int | None:
        found = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        return min(found) if found else None

    def _may_begin_before(self, buffer: str, cut: int) -> bool:
        """Could a longer stop sequence start before `cut` and complete with text still to come?"""
        for start in range(max(0, len(buffer) - self.longest + 1), cut):
            tail = buffer[start:]
            if any(len(s) > len(tail) and s.startswith(tail) for s in self.stops):
                return True
        return False


Piece = str | ToolCallDelta     # what a stream hands on: text, or a piece of a tool call


class ProviderStream:
    """One provider's answer as it arrives: events through the format's parser, text through the
    stop guard, ready pieces queued for the client. Tool call pieces bypass the stop guard (stop
    sequences apply to text) and are put together again for the finished answer."""

    def __init__(self, target: Target, parser: StreamParser | None, lines: LineStream | None, guard: StopGuard):
        self.target = target
        self.parser = parser
        self.lines = lines
        self.guard = guard
        self.ready: deque[Piece] = deque()
        self.sent: list[str] = []
        self.tool_parts: dict[int, dict] = {}   # index -> {"id", "name", "arguments": [str], "state"}
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.provider_done = False
        self.finished = False
        self.usage_incomplete = False
        self.cost: float | None = None
        self.data = None
        self.warnings: tuple[str, ...] = ()
        self._events = self._read_events() if lines is not None else iter(())

    @classmethod
    def whole(cls, completion: Completion, target: Target, guard: StopGuard) -> ProviderStream:
        """A whole answer (a format streamed as one piece, or a server that ignored stream: true)."""
        stream = cls(target, None, None, guard)
        stream.cost, stream.data, stream.warnings = completion.cost, completion.data, completion.warnings
        calls = tuple(ToolCallDelta(i, c.id, c.name, json.dumps(c.arguments, ensure_ascii=False), c.state)
                      for i, c in enumerate(completion.tool_calls))
        stream._apply(completion.text, completion.finish_reason, completion.usage, completion.model, calls)
        stream.provider_done = True
        stream._end()
        return stream

    def fill(self) -> None:
        """Read until there is text to send, or the answer is over."""
        while not self.ready and not self.finished:
            self._step()

    def next_piece(self) -> Piece | None:
        self.fill()
        return self.ready.popleft() if self.ready else None

    def close(self) -> None:
        if self.lines is not None:
            self.lines.close()

    def completion(self) -> Completion:
        text = "".join(self.sent)
        tool_calls = self._tool_calls()
        finish = "stop" if self.guard.stopped else (self.finish or "stop")
        if tool_calls and finish == "stop":     # Gemini says STOP after a function call
            finish = "tool_calls"
        warnings = list(self.warnings)
        if self.usage_incomplete:
            warnings.append("The provider's stream failed after the stop sequence was reached; "
                            "usage may be incomplete.")
        if finish == "length" and not text:
            warnings.append("The answer is empty because the token limit was reached: raise max_tokens.")
        return Completion(text=text, finish_reason=finish, usage=self.usage or Usage(reported=False),
                          model=self.model or self.target.model.name, data=self.data, cost=self.cost,
                          warnings=tuple(warnings), tool_calls=tool_calls)

    def _tool_calls(self) -> tuple[ToolCall, ...]:
        calls = []
        for index in sorted(self.tool_parts):
            part = self.tool_parts[index]
            raw = "".join(part["arguments"])
            try:
                arguments = json.loads(raw) if raw.strip() else {}
            except ValueError:
                arguments = None
            if not isinstance(arguments, dict) or not part["id"] or not part["name"]:
                raise InvalidProviderResponse(
                    f"{self.target.provider.name} streamed a tool call without an id and name, or whose "
                    "arguments are not a JSON object.", provider=self.target.provider.name, retryable=True)
            calls.append(ToolCall(part["id"], part["name"], arguments, part["state"]))
        return tuple(calls)

    def _read_events(self):
        decoder = SseDecoder()
        for line in self.lines:
            event = decoder.feed(line)
            if event is not None:
                yield event
        event = decoder.flush()
        if event is not None:
            yield event

    def _step(self) -> None:
        try:
            event = next(self._events, None)
            if event is None:
                self._end()
                return
            delta = self.parser.feed(event)
        except ProviderError:
            if not self.guard.stopped:
                raise
            # The answer was complete at the stop sequence; only the usage read-out failed.
            self.usage_incomplete = self.provider_done = True
            self._end()
            return
        self._apply(delta.text, delta.finish_reason, delta.usage, delta.model, delta.tool_calls)
        if delta.done:
            self.provider_done = True
            self._end()

    def _apply(self, text: str, finish: str | None, usage: Usage | None, model: str | None,
               tool_calls: tuple[ToolCallDelta, ...] = ()) -> None:
        if text:
            self._queue(self.guard.feed(text))
        for piece in tool_calls:
            part = self.tool_parts.setdefault(piece.index, {"id": None, "name": None, "arguments": [], "state": None})
            part["id"] = part["id"] or piece.id
            part["name"] = part["name"] or piece.name
            part["state"] = part["state"] or piece.state
            part["arguments"].append(piece.arguments)
            self.ready.append(piece)
        if finish:
            self.finish = finish
        if usage is not None:
            self.usage = usage
        if model:
            self.model = model

    def _queue(self, text: str) -> None:
        if text:
            self.ready.append(text)
            self.sent.append(text)

    def _end(self) -> None:
        if self.finished:
            return
        if not (self.provider_done or self.finish):
            raise broke_off(self.target)
        self._queue(self.guard.flush())
        self.finished = True
        if self.lines is not None:
            self.lines.close(drain=self.provider_done)
        if self.parser is not None:
            self.parser.check_end("".join(self.sent))
