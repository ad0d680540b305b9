"""Provider calls: one pooled `requests.Session` per provider, and the mapping of network failures.

Contract: `Transport.send(request, *, provider, connect_timeout, read_timeout) -> HttpResponse` for
any HTTP status; network failures become ProviderTimeout / ProviderUnreachable, mapped once from
the table below (streams use it too). The transport knows nothing of providers' formats, and it
never retries: dispatch decides that, within the deadline.
"""
from __future__ import annotations

import socket
import threading
import time

import requests
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError
from urllib3.exceptions import SSLError as Urllib3SSLError

from app.errors import InvalidProviderResponse, ProviderError, ProviderTimeout, ProviderUnreachable, redact
from app.http import HttpRequest, HttpResponse
from app.transport.capped_read import CappedRead
from app.transport.watchdog import Cutoff, WatchedHTTPAdapter

MAX_RESPONSE_BYTES = 16 * 1024 * 1024   # a provider answer larger than this is garbage, not text

_EXCEPTIONS = (   # checked in order: the first match wins
    (requests.exceptions.ConnectTimeout, ProviderTimeout, "connecting to {p} timed out"),
    (requests.exceptions.ReadTimeout, ProviderTimeout, "{p} did not answer in time"),
    (requests.exceptions.SSLError, ProviderUnreachable, "TLS error talking to {p}"),
    (requests.exceptions.ConnectionError, ProviderUnreachable, "could not connect to {p}"),
    (requests.exceptions.ChunkedEncodingError, ProviderUnreachable, "{p} broke off its answer"),
    (requests.exceptions.ContentDecodingError, ProviderUnreachable, "{p} sent an undecodable answer"),
    (requests.exceptions.RequestException, ProviderUnreachable, "request to {p} failed"),
)


def mapped(exc: Exception, provider: str, secrets: tuple[str, ...]) -> Exception:
    """A network failure as our error, through the table (first match wins); anything else as is."""
    for exc_type, err_type, message in _EXCEPTIONS:
        if isinstance(exc, exc_type):
            return err_type(redact(message.format(p=provider), secrets), provider=provider)
    return exc


def as_requests_error(exc: Exception) -> Exception:
    """Reading the raw body raises urllib3's exceptions; the table speaks requests' (as iter_content
    would translate them, except that a read timeout stays a timeout)."""
    if isinstance(exc, requests.exceptions.RequestException):   # already requests' (an OSError too)
        return exc
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


class Transport:
    def __init__(self, pool_size: int):
        """`pool_size`: keep-alive connections per provider (Settings.http_pool_size)."""
        self._sessions: dict[str, requests.Session] = {}
        self._lock = threading.Lock()
        self._pool_size = pool_size

    def session(self, provider: str) -> requests.Session:
        session = self._sessions.get(provider)
        if session is None:
            with self._lock:
                session = self._sessions.get(provider)
                if session is None:
                    session = requests.Session()
                    adapter = WatchedHTTPAdapter(pool_connections=4, pool_maxsize=self._pool_size, max_retries=0)
                    session.mount("http://", adapter)
                    session.mount("https://", adapter)
                    session.trust_env = False   # no ~/.netrc or proxy surprises adding credentials
                    self._sessions[provider] = session
        return session

    def send(self, request: HttpRequest, *, provider: str, connect_timeout: float,
             read_timeout: float) -> HttpResponse:
        """One exchange; `read_timeout` (dispatch's attempt budget) bounds all of it: connecting,
        the status line, the headers and the body. Every byte of a slow drip resets the socket's own
        timeout, so a Cutoff shuts the connection down at the deadline, whatever is being read."""
        deadline = time.monotonic() + read_timeout
        cutoff = Cutoff(read_timeout)
        try:
            with cutoff, self.start(request, provider=provider, connect_timeout=connect_timeout,
                                    read_timeout=read_timeout) as r:
                return read_whole(r, provider, deadline, cutoff)
        except Exception as exc:  # noqa: BLE001 - mapped from the table, anything else re-raised
            raise failure(exc, provider, request.secrets, cutoff) from None

    def start(self, request: HttpRequest, *, provider: str, connect_timeout: float,
              read_timeout: float) -> requests.Response:
        """Send `request`; back once the status line and headers are in, the body not yet read
        (requests' exceptions as they are: the caller maps them, knowing whether its cutoff fired)."""
        return self.session(provider).request(
            request.method, request.url, headers=request.headers, json=request.json,
            timeout=(connect_timeout, read_timeout), stream=True, allow_redirects=False)

    def close(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()


def failure(exc: Exception, provider: str, secrets: tuple[str, ...], cutoff: Cutoff) -> Exception:
    """What a failed exchange raises: our own errors as they are, a timeout when the cutoff ended
    the exchange, else the network failure mapped from the table."""
    if isinstance(exc, ProviderError):
        return exc
    if cutoff.expired:
        return late(provider)
    return mapped(as_requests_error(exc), provider, secrets)


def late(provider: str) -> ProviderTimeout:
    return ProviderTimeout(f"{provider} was still sending its answer at the deadline", provider=provider)


def read_whole(response: requests.Response, provider: str, deadline: float, cutoff: Cutoff) -> HttpResponse:
    """The whole answer of `response`, decoded: at most MAX_RESPONSE_BYTES, all of it by `deadline`.
    The cutoff is disarmed before the connection can go back to the pool (it must never cut the next
    call's exchange); a body without a length that the cutoff ended counts as late, not as whole."""
    def too_large() -> ProviderError:
        return InvalidProviderResponse(f"{provider} sent an answer larger than {MAX_RESPONSE_BYTES} bytes",
                                       provider=provider, retryable=False)
    try:
        body = CappedRead(lambda n: response.raw.read1(n, decode_content=True), max_bytes=MAX_RESPONSE_BYTES,
                          deadline=deadline, too_large=too_large, late=lambda: late(provider),
                          sock=connection_socket(response)).whole()
    finally:
        cutoff.disarm()
    if cutoff.expired:
        raise late(provider)
    headers = {k.lower(): v for k, v in response.headers.items()}
    return HttpResponse(status=response.status_code, body=body, headers=headers)


def connection_socket(response: requests.Response) -> socket.socket | None:
    """The socket under `response` while urllib3 holds its connection (None once released)."""
    return getattr(getattr(response.raw, "connection", None), "sock", None)
