"""Streamed calls: the same routing, retries, fallbacks, breaker, deadline, limits and ledger as a
whole call, with the answer handed on piece by piece.

A streamed call is the dispatcher's own loop (`Dispatcher.run`) in the streamed mode: an attempt
opens the candidate's stream and reads it up to the first text the client may see (after the stop
guard, app/provider_stream.py); any failure until then is retried or falls back exactly as for a
whole call, and the client has been sent nothing, so a failure there is still a plain HTTP error.
After it, a provider failure cannot be taken back: the stream ends with an error, and the ledger
row keeps the tokens known. A format the registry does not stream (Perplexity, the mock) is
answered whole and handed on as one piece.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from app.calls import Answer, Call, Usage
from app.dispatch import WHOLE, Dispatcher, Exchange, Served, Trace
from app.errors import FlowcallError, ProviderError
from app.tenancy.gateway import Admission, Gateway
from app.http import HttpResponse
from app.tenancy.idempotency import Replay
from app.provider_stream import Piece, ProviderStream, StopGuard
from app.providers import Adapter, Target
from app.transport import StreamTransport


class Streamed:
    """The streamed mode of dispatch: an attempt opens the stream and reads it to the first text;
    the caller gets the stream open (`OpenStream`)."""

    def __init__(self, streams: StreamTransport):
        self.streams = streams

    def attempt(self, dispatcher: Dispatcher, adapter: Adapter, call: Call, target: Target, seconds: float,
                trace: Trace) -> tuple[ProviderStream, tuple[str, ...]]:
        guard = StopGuard(call.options.stop)
        stream = adapter.stream
        if stream is None:
            completion, warnings = WHOLE.attempt(dispatcher, adapter, call, target, seconds, trace)
            return ProviderStream.whole(completion, target, guard), warnings
        plan = stream.request(call, target)
        with Exchange(dispatcher, target, trace, seconds) as exchange:
            exchange.start()
            opened = self.streams.open(plan.request, provider=target.provider.name,
                                       connect_timeout=exchange.connect_timeout, read_timeout=seconds)
            if isinstance(opened, HttpResponse):    # an error status, or a server that ignored stream: true
                return ProviderStream.whole(stream.whole(opened, call, target), target, guard), plan.warnings
            reading = ProviderStream(target, stream.parser(call, target), opened, guard)
            try:
                reading.fill()
            except BaseException:
                reading.close()
                raise
            return reading, plan.warnings

    def served(self, dispatcher: Dispatcher, served: Served, result: ProviderStream) -> OpenStream:
        return OpenStream(dispatcher, served, result)


class StreamingDispatcher:
    """A dispatcher's calls in the streamed mode: its own loop, breaker, transport and observer (read
    from it, never copied), plus the transport that reads event streams."""

    def __init__(self, dispatcher: Dispatcher, streams: StreamTransport | None = None):
        self.dispatcher = dispatcher
        self.mode = Streamed(streams or StreamTransport(dispatcher.transport))

    def open(self, call: Call) -> OpenStream:
        return self.dispatcher.run(call, self.mode)


class OpenStream:
    """A streamed call whose provider has begun to answer: iterate its pieces, then read `answer`."""

    def __init__(self, dispatcher: Dispatcher, served: Served, stream: ProviderStream):
        self.dispatcher, self.served, self.stream = dispatcher, served, stream
        self.call, self.candidate, self.target, self.trace = served.call, served.candidate, served.target, served.trace
        self.deadline = served.start + dispatcher.timeout_s(served.call)
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
            self.answer = self.dispatcher.finish(self.served, self.stream.completion())
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

    def __init__(self, gateway: Gateway, principal, endpoint: str, admitted: Admission, opened: OpenStream,
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


def start(gateway: Gateway, dispatcher: StreamingDispatcher, principal, endpoint: str, body: dict,
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

