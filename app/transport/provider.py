"""Provider calls: one pooled requests adapter per provider, and the mapping of network failures.

Contract: `Transport.send(request, *, provider, connect_timeout, read_timeout) -> HttpResponse` for
any HTTP status; network failures become ProviderTimeout / ProviderUnreachable, mapped once from
the table below (streams use it too). The transport knows nothing of providers' formats, and it
never retries: dispatch decides that, within the deadline.

Requests go straight to the adapter, not through a `requests.Session`: a session's per-call work
(merging environment settings, cookies and hooks, the redirect look-ahead) does nothing for a provider
call and cost about a tenth of flowcall's CPU per call. The headers and body are what a session
with `trust_env = False` and no cookies would send: requests' default headers, then ours.
"""
from __future__ import annotations

import functools
import json
import socket
import threading
import time

import requests
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
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


class ProviderAdapter(WatchedHTTPAdapter):
    """requests' adapter without two per-call costs that do nothing for a provider call (no proxies,
    default TLS verification, no client certificate, no session to keep cookies in): finding the
    connection pool (the URL parsed for proxies and the pool key, on every call) and copying the
    answer's cookies into a jar. Anything else goes the adapter's own way."""

    def __init__(self, *args, **kwargs):
        self._pools: dict[str, object] = {}     # origin -> pool; at most pool_connections, as the manager
        super().__init__(*args, **kwargs)

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        if proxies or verify is not True or cert is not None:
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        origin = origin_of(request.url)
        pool = self._pools.get(origin)
        if pool is None or pool.pool is None:    # first use, or closed (urllib3 releases that close evicted pools)
            pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
            if origin in self._pools or len(self._pools) < self._pool_connections:
                self._pools[origin] = pool
        return pool

    def close(self):
        self._pools.clear()
        super().close()

    def build_response(self, req, resp):
        """What HTTPAdapter.build_response builds, but for the cookies (left in the empty jar)."""
        response = requests.Response()
        response.status_code = getattr(resp, "status", None)
        response.headers = CaseInsensitiveDict(getattr(resp, "headers", {}))
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url.decode("utf-8") if isinstance(req.url, bytes) else req.url
        response.request = req
        response.connection = self
        return response


def origin_of(url: str) -> str:
    """`scheme://authority` of a URL as requests prepares it (which always has a path)."""
    end = url.find("/", url.find("//") + 2)
    return url if end < 0 else url[:end]


class Transport:
    def __init__(self, pool_size: int):
        """`pool_size`: keep-alive connections per provider (Settings.http_pool_size)."""
        self._adapters: dict[str, ProviderAdapter] = {}
        self._lock = threading.Lock()
        self._pool_size = pool_size

    def adapter(self, provider: str) -> ProviderAdapter:
        adapter = self._adapters.get(provider)
        if adapter is None:
            with self._lock:
                adapter = self._adapters.get(provider)
                if adapter is None:
                    adapter = ProviderAdapter(pool_connections=4, pool_maxsize=self._pool_size, max_retries=0)
                    self._adapters[provider] = adapter
        return adapter

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
        (requests' exceptions as they are: the caller maps them, knowing whether its cutoff fired).
        Redirects are not followed: a 3xx is the provider's answer like any other status."""
        return self.adapter(provider).send(prepared(request), stream=True, timeout=(connect_timeout, read_timeout),
                                           verify=True, cert=None, proxies={})

    def close(self) -> None:
        with self._lock:
            for adapter in self._adapters.values():
                adapter.close()
            self._adapters.clear()


_DEFAULT_HEADERS = requests.utils.default_headers()
_JSON = json.JSONEncoder(allow_nan=False)     # what requests' json.dumps(body, allow_nan=False) builds per call


def prepared(request: HttpRequest) -> requests.PreparedRequest:
    """`request` as requests would prepare it: its headers over requests' defaults (a None value
    drops a default), the JSON body as requests encodes it, credentials in the URL as Basic auth."""
    headers = CaseInsensitiveDict(_DEFAULT_HEADERS)
    headers.update(request.headers)
    p = requests.PreparedRequest()
    p.prepare_method(request.method)
    p.url, url_auth = prepared_url(request.url)
    p.prepare_headers({k: v for k, v in headers.items() if v is not None})
    if request.json is None:
        p.prepare_body(None, None, None)
    else:
        try:
            p.body = _JSON.encode(request.json).encode("utf-8")
        except ValueError as exc:            # NaN or infinity: requests' own error, as prepare_body raises
            raise requests.exceptions.InvalidJSONError(exc, request=p) from None
        p.headers["Content-Length"] = str(len(p.body))
        if "content-type" not in p.headers:
            p.headers["Content-Type"] = "application/json"
    if url_auth:
        p.prepare_auth(url_auth)
    return p


@functools.lru_cache(maxsize=256)
def prepared_url(url: str) -> tuple[str, tuple[str, str] | None]:
    """`url` as requests sends it, and the credentials in it if any, parsed once per URL rather than
    on every call. Bounded: URLs that name a caller's unlisted models only evict one another."""
    p = requests.PreparedRequest()
    p.prepare_url(url, None)
    url_auth = requests.utils.get_auth_from_url(p.url)
    return p.url, url_auth if any(url_auth) else None


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
