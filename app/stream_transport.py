"""The I/O of a streamed call: one streaming POST on the provider's pooled session, read line by line.

Same contract as `app.transport` (whose sessions and exception table this reuses): any HTTP status
comes back, network failures become ProviderTimeout / ProviderUnreachable, nothing is retried here.
`open` answers a non-2xx status, or a 2xx that is not an event stream (a server that ignored
`stream: true`), as a whole `HttpResponse`, so the adapter's own parse_error / parse_response apply.

Every read is bounded by the call's deadline, not by a fixed idle time: a reasoning model may be
silent for minutes before its first token. Until the status line and headers are in (and through a
whole non-stream answer), a Cutoff (app/cutoff.py) shuts the connection down at the attempt's
deadline, however slowly they drip; an event stream's reads then get the time left as their socket
timeout, and the deadline is checked after each, so a slow drip cannot outlive the call either.
"""
from __future__ import annotations

import re
import socket
import time
from typing import Iterator

import requests
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError
from urllib3.exceptions import SSLError as Urllib3SSLError

from .cutoff import Cutoff
from .errors import InvalidProviderResponse, ProviderError, ProviderTimeout, redact
from .http import HttpRequest, HttpResponse
from .transport import _EXCEPTIONS, MAX_RESPONSE_BYTES, READ_SIZE, Transport, late, read_whole


DRAIN_GRACE_S = 0.5
MAX_LINE_BYTES = 16 * 1024 * 1024
_NEWLINE = re.compile(rb"\r\n|\r|\n")


def _mapped(exc: Exception, provider: str, secrets: tuple[str, ...]) -> Exception:
    """A network failure as our error, through app.transport's table (first match wins)."""
    for exc_type, err_type, message in _EXCEPTIONS:
        if isinstance(exc, exc_type):
            return err_type(redact(message.format(p=provider), secrets), provider=provider)
    return exc


def _as_requests_error(exc: Exception) -> Exception:
    """Reading the raw body raises urllib3's exceptions; the table speaks requests' (as iter_content
    would translate them, except that a read timeout stays a timeout)."""
    if isinstance(exc, (ReadTimeoutError, socket.timeout, TimeoutError)):
        return requests.exceptions.ReadTimeout(exc)
    if isinstance(exc, Urllib3SSLError):
        return requests.exceptions.SSLError(exc)
    if isinstance(exc, ProtocolError):
        return requests.exceptions.ChunkedEncodingError(exc)
    if isinstance(exc, DecodeError):
        return requests.exceptions.ContentDecodingError(exc)
    if isinstance(exc, OSError):
        return requests.exceptions.ConnectionError(exc)
    return exc


class LineStream:
    """An open event stream: its lines, decoded, until the provider closes it or the deadline."""

    def __init__(self, response: requests.Response, *, provider: str, secrets: tuple[str, ...], time_left: float):
        self.response = response
        self.provider = provider
        self.secrets = secrets
        self.deadline = time.monotonic() + time_left
        self._lines = self._read_lines()

    def expire_in(self, seconds: float) -> None:
        """Move the deadline: the attempt's share of time while opening, the call's afterwards."""
        self.deadline = time.monotonic() + seconds

    def __iter__(self) -> Iterator[str]:
        return self._lines

    def close(self, *, drain: bool = False) -> None:
        """`drain`: the provider said it is done, so only the end of the HTTP body should be left;
        reading it (briefly) puts the connection back in the pool instead of closing it."""
        if drain:
            self.deadline = min(self.deadline, time.monotonic() + DRAIN_GRACE_S)
            try:
                for _ in self._lines:
                    pass
            except Exception:  # noqa: BLE001 - a lingering or broken end costs the connection only
                pass
        self.response.close()

    def _read_lines(self) -> Iterator[str]:
        pending = b""
        received = 0
        while True:
            chunk = self._read()
            if not chunk:
                break
            received += len(chunk)
            if received > MAX_RESPONSE_BYTES:
                raise InvalidProviderResponse(f"{self.provider} streamed more than {MAX_RESPONSE_BYTES} bytes",
                                              provider=self.provider, retryable=False)
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

    def _read(self) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ProviderTimeout(f"{self.provider} was still streaming its answer at the deadline",
                                  provider=self.provider)
        self._bound_next_read(remaining)
        try:
            chunk = self.response.raw.read1(READ_SIZE)
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped from the table, anything else re-raised
            raise _mapped(_as_requests_error(exc), self.provider, self.secrets) from None
        if chunk and time.monotonic() > self.deadline:
            raise ProviderTimeout(f"{self.provider} was still streaming its answer at the deadline",
                                  provider=self.provider)
        return chunk

    def _bound_next_read(self, seconds: float) -> None:
        """The socket's read timeout becomes the time left (the request's own read timeout was the
        attempt's share when the stream opened)."""
        sock = getattr(getattr(self.response.raw, "connection", None), "sock", None)
        if sock is not None:
            try:
                sock.settimeout(max(seconds, 0.001))
            except OSError:
                pass                # the socket is closing: the read below reports it


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
                response = self.transport.session(provider).request(
                    request.method, request.url, headers=request.headers, json=request.json,
                    timeout=(connect_timeout, read_timeout), stream=True, allow_redirects=False)
            except Exception as exc:  # noqa: BLE001 - mapped from the table, anything else re-raised
                if cutoff.expired:
                    raise late(provider) from None
                raise _mapped(exc, provider, request.secrets) from None
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
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001
            if cutoff.expired:
                raise late(provider) from None
            raise _mapped(exc, provider, secrets) from None


