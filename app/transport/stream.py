"""Streamed provider calls: one streaming POST on the provider's pooled session, read line by line.

Same contract as `Transport.send` (whose sessions, exception table and whole-answer read this
reuses): any HTTP status comes back, network failures become ProviderTimeout / ProviderUnreachable,
nothing is retried here. `open` answers a non-2xx status, or a 2xx that is not an event stream (a
server that ignored `stream: true`), as a whole `HttpResponse`, so the adapter's own parse_error /
parse_response apply.

Every read is bounded by the call's deadline, not by a fixed idle time: a reasoning model may be
silent for minutes before its first token. Until the status line and headers are in (and through a
whole non-stream answer), a Cutoff (watchdog.py) shuts the connection down at the attempt's
deadline, however slowly they drip; an event stream's body is then read by CappedRead
(capped_read.py), whose reads get the time left as their socket timeout and check the clock after
each, so a slow drip cannot outlive the call either.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator

import requests

from app.errors import InvalidProviderResponse, ProviderError, ProviderTimeout
from app.http import HttpRequest, HttpResponse
from app.transport.capped_read import CappedRead
from app.transport.provider import (MAX_RESPONSE_BYTES, Transport, as_requests_error, connection_socket, failure, late, mapped,
                       read_whole)
from app.transport.watchdog import Cutoff

DRAIN_GRACE_S = 0.5
MAX_LINE_BYTES = 16 * 1024 * 1024
_NEWLINE = re.compile(rb"\r\n|\r|\n")


class LineStream:
    """An open event stream: its lines, decoded, until the provider closes it or the deadline."""

    def __init__(self, response: requests.Response, *, provider: str, secrets: tuple[str, ...], time_left: float):
        self.response = response
        self.provider = provider
        self.secrets = secrets
        self._body = CappedRead(self._read, max_bytes=MAX_RESPONSE_BYTES, deadline=time.monotonic() + time_left,
                                too_large=self._too_large, late=self._late, sock=connection_socket(response))
        self._lines = self._read_lines()

    def expire_in(self, seconds: float) -> None:
        """Move the deadline: the attempt's share of time while opening, the call's afterwards."""
        self._body.deadline = time.monotonic() + seconds

    def __iter__(self) -> Iterator[str]:
        return self._lines

    def close(self, *, drain: bool = False) -> None:
        """`drain`: the provider said it is done, so only the end of the HTTP body should be left;
        reading it (briefly) puts the connection back in the pool instead of closing it."""
        if drain:
            self._body.deadline = min(self._body.deadline, time.monotonic() + DRAIN_GRACE_S)
            try:
                for _ in self._lines:
                    pass
            except Exception:  # noqa: BLE001 - a lingering or broken end costs the connection only
                pass
        self.response.close()

    def _read_lines(self) -> Iterator[str]:
        pending = b""
        for chunk in self._body:
            buffer = pending + chunk
            # A CR at the end may be the first half of a CRLF split across two reads.
            held = b"\r" if buffer.endswith(b"\r") else b""
            lines = _NEWLINE.split(buffer[:-1] if held else buffer)
            pending = lines.pop() + held
            if len(pending) > MAX_LINE_BYTES:
                raise InvalidProviderResponse(f"{self.provider} streamed a line longer than {MAX_LINE_BYTES} bytes",
                                              provider=self.provider, retryable=False)
            for line in lines:
                yield line.decode("utf-8", "replace")
        if pending:     # the last line, unterminated, or ended by a CR held back above
            yield (pending[:-1] if pending.endswith(b"\r") else pending).decode("utf-8", "replace")

    def _read(self, size: int) -> bytes:
        try:
            return self.response.raw.read1(size)
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped from the table, anything else re-raised
            raise mapped(as_requests_error(exc), self.provider, self.secrets) from None

    def _too_large(self) -> ProviderError:
        return InvalidProviderResponse(f"{self.provider} streamed more than {MAX_RESPONSE_BYTES} bytes",
                                       provider=self.provider, retryable=False)

    def _late(self) -> ProviderError:
        return ProviderTimeout(f"{self.provider} was still streaming its answer at the deadline",
                               provider=self.provider)


class StreamTransport:
    def __init__(self, transport: Transport):
        self.transport = transport

    def open(self, request: HttpRequest, *, provider: str, connect_timeout: float,
             read_timeout: float) -> LineStream | HttpResponse:
        """A streaming exchange: a LineStream for a 2xx event stream, else the whole answer.
        `read_timeout` bounds connecting, the status line and headers, and a whole answer's body."""
        deadline = time.monotonic() + read_timeout
        with Cutoff(read_timeout) as cutoff:
            try:
                response = self.transport.start(request, provider=provider, connect_timeout=connect_timeout,
                                                read_timeout=read_timeout)
            except Exception as exc:  # noqa: BLE001 - mapped from the table, anything else re-raised
                raise failure(exc, provider, request.secrets, cutoff) from None
            content_type = (response.headers.get("content-type") or "").lower()
            if not (200 <= response.status_code < 300 and content_type.startswith("text/event-stream")):
                return self._whole(response, provider, request.secrets, deadline, cutoff)
            cutoff.disarm()
        if cutoff.expired:
            response.close()
            raise late(provider)
        return LineStream(response, provider=provider, secrets=request.secrets,
                          time_left=deadline - time.monotonic())

    @staticmethod
    def _whole(response: requests.Response, provider: str, secrets: tuple[str, ...],
               deadline: float, cutoff: Cutoff) -> HttpResponse:
        try:
            with response:
                return read_whole(response, provider, deadline, cutoff)
        except Exception as exc:  # noqa: BLE001 - mapped from the table, anything else re-raised
            raise failure(exc, provider, secrets, cutoff) from None
