"""The only place flowcall talks to providers: one pooled `requests.Session` per provider.

Contract: `send(request, timeout) -> HttpResponse` for any HTTP status; network failures become
ProviderTimeout / ProviderUnreachable, mapped once from the table below. The transport knows
nothing of providers' formats, and it never retries: dispatch decides that, within the deadline.
"""
from __future__ import annotations

import threading
import time

import requests

from .cutoff import Cutoff, WatchedHTTPAdapter
from .config import env_number
from .errors import InvalidProviderResponse, ProviderError, ProviderTimeout, ProviderUnreachable, redact
from .http import HttpRequest, HttpResponse

MAX_RESPONSE_BYTES = 16 * 1024 * 1024   # a provider answer larger than this is garbage, not text
READ_SIZE = 64 * 1024                    # one read of an answer body
                                        # (and 1,000 calls in flight per worker may each hold one)
# Keep-alive connections per provider per worker: as many as calls a worker holds at once
# (gunicorn.conf.py: 1,000 gevent connections), else every call past the pool opens a new TLS
# connection and urllib3 discards it afterwards with a warning.
POOL_SIZE = 1000
POOL_SIZE_ENV = "FLOWCALL_PROVIDER_POOL_SIZE"


def pool_size(env) -> int:
    """FLOWCALL_PROVIDER_POOL_SIZE, parsed at start (a malformed value stops the start)."""
    return env_number(env, POOL_SIZE_ENV, POOL_SIZE, 1)

_EXCEPTIONS = (   # checked in order: the first match wins
    (requests.exceptions.ConnectTimeout, ProviderTimeout, "connecting to {p} timed out"),
    (requests.exceptions.ReadTimeout, ProviderTimeout, "{p} did not answer in time"),
    (requests.exceptions.SSLError, ProviderUnreachable, "TLS error talking to {p}"),
    (requests.exceptions.ConnectionError, ProviderUnreachable, "could not connect to {p}"),
    (requests.exceptions.ChunkedEncodingError, ProviderUnreachable, "{p} broke off its answer"),
    (requests.exceptions.ContentDecodingError, ProviderUnreachable, "{p} sent an undecodable answer"),
    (requests.exceptions.RequestException, ProviderUnreachable, "request to {p} failed"),
)


class Transport:
    def __init__(self, pool_size: int = POOL_SIZE):
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
            with cutoff, self.session(provider).request(
                    request.method, request.url, headers=request.headers, json=request.json,
                    timeout=(connect_timeout, read_timeout), stream=True, allow_redirects=False) as r:
                return read_whole(r, provider, deadline, cutoff)
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped from the table, anything else re-raised
            if cutoff.expired:
                raise late(provider) from None
            for exc_type, err_type, message in _EXCEPTIONS:
                if isinstance(exc, exc_type):
                    raise err_type(redact(message.format(p=provider), request.secrets),
                                   provider=provider) from None
            raise

    def close(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()


def late(provider: str) -> ProviderTimeout:
    return ProviderTimeout(f"{provider} was still sending its answer at the deadline", provider=provider)


def read_whole(response: requests.Response, provider: str, deadline: float, cutoff: Cutoff) -> HttpResponse:
    """The whole answer of `response`: at most MAX_RESPONSE_BYTES, all of it by `deadline`. The
    cutoff is disarmed before the connection can go back to the pool (it must never cut the next
    call's exchange); a body without a length that the cutoff ended counts as late, not as whole."""
    body = bytearray()
    try:
        for chunk in response.iter_content(READ_SIZE):
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise InvalidProviderResponse(f"{provider} sent an answer larger than {MAX_RESPONSE_BYTES} bytes",
                                              provider=provider, retryable=False)
            if time.monotonic() > deadline:
                raise late(provider)
    finally:
        cutoff.disarm()
    if cutoff.expired:
        raise late(provider)
    headers = {k.lower(): v for k, v in response.headers.items()}
    return HttpResponse(status=response.status_code, body=bytes(body), headers=headers)
