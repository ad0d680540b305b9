"""Streamed calls: the same routing, retries, fallbacks, breaker, deadline, limits and ledger as a
whole call, with the answer handed on piece by piece.

The line between retrying and not is the first byte the client gets. Opening a candidate's stream
reads it up to the first text the client may see (after the stop guard); any failure until then
is retried or falls back exactly as `Dispatcher.execute` does for a whole call, and the client has
been sent nothing, so a failure there is still a plain HTTP error. After it, a provider failure
cannot be taken back: the stream ends with an error, and the ledger row keeps the tokens known.

Stop sequences are enforced on the stream as `app.postprocess.enforce_stop` does on a whole answer:
text that may be the start of a stop sequence is held back until the next delta settles it, so a
stop string split across deltas is never sent. After a cut the provider's stream is still read to
its end (text discarded) for its usage, so the ledger counts what the provider bills.
"""
from __future__ import annotations

import json
import logging
from collections import deque
from typing import Callable, Iterator, Union

from . import postprocess
from .calls import Answer, Call, Completion, ToolCall, Usage
from .dispatch import Dispatcher, metric_model
from .errors import FlowcallError, InvalidProviderResponse, ProviderError
from .http import HttpResponse
from .idempotency import Replay
from .observe import Observer
from .providers.streams import SseDecoder, ToolCallDelta, broke_off, build_stream_request, parser_for
from .transport import LineStream, StreamTransport

log = logging.getLogger(__name__)


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


Piece = Union[str, ToolCallDelta]     # what a stream hands on: text, or a piece of a tool call


class ProviderStream:
    """One provider's answer as it arrives: events through the format's parser, text through the
    stop guard, ready pieces queued for the client. Tool call pieces bypass the stop guard (stop
    sequences apply to text) and are put together again for the finished answer."""

    def __init__(self, target, parser, lines: LineStream | None, guard: StopGuard):
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
    def whole(cls, completion: Completion, target, guard: StopGuard) -> "ProviderStream":
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


class StreamingDispatcher(Dispatcher):
    """`Dispatcher.execute` with one attempt redefined: open the candidate's stream and read it up to
    the first text (`_attempt`); what execute returns is then an `OpenStream` (`_answer`). The
    breaker and transport are the whole-call dispatcher's own, so both kinds of call share them."""

    def __init__(self, base: Dispatcher, streams: StreamTransport | None = None):
        super().__init__(base.settings, base.catalog, transport=base.transport, fetch_image=base.fetch_image,
                         breaker=base.breaker, observer=_CompletedAtTheEnd(base.observer), sleep=base.sleep,
                         clock=base.clock)
        self.streams = streams or StreamTransport(base.transport)

    def open(self, call: Call) -> "OpenStream":
        return self.execute(call)

    def _attempt(self, adapter, call: Call, target, remaining: float, trace):
        guard = StopGuard(call.options.stop)
        plan = build_stream_request(call, target)
        if plan is None:
            completion, warnings = super()._attempt(adapter, call, target, remaining, trace)
            return ProviderStream.whole(completion, target, guard), warnings
        sent = self.clock()
        label = metric_model(target.model)
        try:
            opened = self.streams.open(plan.request, provider=target.provider.name,
                                       connect_timeout=min(self.settings.connect_timeout_s, remaining),
                                       read_timeout=remaining)
            if isinstance(opened, HttpResponse):
                if not 200 <= opened.status < 300:
                    raise adapter.parse_error(opened, target)
                whole = ProviderStream.whole(adapter.parse_response(opened, call, target), target, guard)
                self.observer.attempt(target.provider.name, label, "ok", self.clock() - sent)
                return whole, plan.warnings
            stream = ProviderStream(target, parser_for(call, target), opened, guard)
            try:
                stream.fill()
            except BaseException:
                stream.close()
                raise
            self.observer.attempt(target.provider.name, label, "ok", self.clock() - sent)
            return stream, plan.warnings
        except ProviderError as err:
            self.observer.attempt(target.provider.name, label, err.code, self.clock() - sent)
            raise
        finally:
            trace.upstream_s += self.clock() - sent

    def _answer(self, call, route, index, candidate, target, completion, plan_warnings, trace, start):
        return OpenStream(self, call, route, index, candidate, target, completion, plan_warnings, trace, start)


class _CompletedAtTheEnd(Observer):
    """The whole-call dispatcher's observer, except that a streamed call is `completed` (its tokens
    and cost counted) when its stream ends with an answer, not when it opens."""

    def __init__(self, inner: Observer):
        self.inner = inner

    def attempt(self, provider, model, outcome, seconds):
        self.inner.attempt(provider, model, outcome, seconds)

    def retry(self, provider):
        self.inner.retry(provider)

    def fallback(self, from_model, to_model):
        self.inner.fallback(from_model, to_model)

    def circuit(self, provider, state):
        self.inner.circuit(provider, state)

    def completed(self, answer):
        if isinstance(answer, Answer):
            self.inner.completed(answer)


class OpenStream:
    """A streamed call whose provider has begun to answer: iterate its text, then read `answer`."""

    def __init__(self, dispatcher: StreamingDispatcher, call, route, index, candidate, target,
                 stream: ProviderStream, plan_warnings, trace, start: float):
        self.dispatcher = dispatcher
        self.call, self.route, self.index, self.candidate = call, route, index, candidate
        self.target, self.stream, self.plan_warnings = target, stream, plan_warnings
        self.trace, self.start = trace, start
        self.deadline = start + dispatcher.timeout_s(call)
        self.answer: Answer | None = None

    @property
    def model_id(self) -> str:
        return self.candidate.model.id

    @property
    def upstream_ms(self) -> float:
        return self.trace.upstream_s * 1000

    def usage_so_far(self) -> Usage:
        return self.stream.usage or Usage()

    def __iter__(self) -> Iterator[Piece]:
        if self.stream.lines is not None:
            self.stream.lines.expire_in(self.deadline - self.dispatcher.clock())
        try:
            while (piece := self.stream.next_piece()) is not None:
                yield piece
            self.answer = Dispatcher._answer(self.dispatcher, self.call, self.route, self.index, self.candidate,
                                             self.target, self.stream.completion(), self.plan_warnings,
                                             self.trace, self.start)
            self.dispatcher.observer.completed(self.answer)
        except FlowcallError as err:
            err.provider = err.provider or self.target.provider.name    # parsing helpers do not know it
            if isinstance(err, ProviderError):
                self.dispatcher.judge(self.target.provider.name, err, self.dispatcher.cut_short(self.call))
            err.attempts = self.trace.attempts
            err.model_id = self.model_id
            raise
        finally:
            self.stream.close()


# -- metering: what Gateway.run does around a whole call ------------------------------------------------
class ClientGone(FlowcallError):
    status = 499
    code = "client_closed_request"


class MeteredStream:
    """A streamed call as the gateway meters one: iterate the text; however the stream ends (answer,
    error, the client going away) the tokens are counted, the ledger row written and the
    idempotency key settled, once."""

    def __init__(self, gateway, principal, endpoint: str, admitted, opened: OpenStream,
                 render: Callable[[Answer], dict]):
        self.gateway, self.principal, self.endpoint, self.admitted = gateway, principal, endpoint, admitted
        self.call = admitted.call
        self.opened, self.render = opened, render
        self.answer: Answer | None = None
        self._settled = False

    @property
    def model_id(self) -> str:
        return self.opened.model_id

    def close(self) -> None:
        """The response is over: if the text was never read to its end, the client went away."""
        if not self._settled:
            self.opened.stream.close()
            self._settle(ClientGone("The client closed the stream before the answer was complete."))

    def __iter__(self) -> Iterator[Piece]:
        try:
            yield from self.opened
        except GeneratorExit:
            self._settle(ClientGone("The client closed the stream before the answer was complete."))
            raise
        except FlowcallError as err:
            self._settle(err)
            raise
        except Exception:
            self._settle(FlowcallError("Internal error while streaming."))
            raise
        self.answer = self.opened.answer
        self._settle(None)

    def _settle(self, error: FlowcallError | None) -> None:
        if self._settled:
            return
        self._settled = True
        answer = self.opened.answer if error is None else None
        if answer is not None:
            self.gateway.close(self.principal, self.endpoint, self.admitted, answer=answer,
                               rendered=self.render(answer))
            return
        usage = self.opened.usage_so_far()
        model = self.opened.candidate.model
        self.gateway.close(self.principal, self.endpoint, self.admitted, error=error, usage=usage,
                           model_id=model.id, provider=model.provider, cost=model.cost(usage),
                           attempts=self.opened.trace.attempts)


def start(gateway, dispatcher: StreamingDispatcher, principal, endpoint: str, body: dict,
          make_call: Callable[[], Call], render: Callable[[Answer], dict],
          idempotency_key: str | None = None) -> MeteredStream | Replay:
    """`Gateway.run` up to the first text: the gateway admits the call (idempotency, limits, budget),
    then the stream is opened (retries and fallbacks included). A Replay is a stored answer for a
    repeated Idempotency-Key."""
    admitted = gateway.admit(principal, endpoint, body, make_call, idempotency_key)
    if isinstance(admitted, Replay):
        return admitted
    try:
        opened = dispatcher.open(admitted.call)
    except BaseException as exc:
        gateway.close(principal, endpoint, admitted, error=exc)
        raise
    return MeteredStream(gateway, principal, endpoint, admitted, opened, render)
