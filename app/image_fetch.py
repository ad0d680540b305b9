"""Downloading a caller's image URL for providers that cannot fetch it themselves (Gemini, Ollama).

The URL comes from whoever calls our API, and we fetch it from inside the operator's network, so
this is a server-side request forgery surface. The defences, each needed because the one before it
can be sidestepped:

- only http(s), no `user@host`, and every host is resolved exactly once; if ANY of its addresses
  is not public we refuse (app/transport/address_policy.py);
- we connect to the address we checked, never to the name, while sending the real Host header
  and, for https, SNI and a certificate check against the name (app/transport/pinned.py);
- redirects are followed by hand, at most MAX_REDIRECTS, and every hop is checked like the first;
- the body is capped in bytes and in wall-clock time (a server that drips one byte a second must
  not hold a worker: app/transport/capped_read.py, and the Cutoff of app/transport/watchdog.py for
  a drip inside the TLS handshake or headers), and must really be a JPEG, PNG, GIF or WebP by
  magic number.

`settings.allow_private_image_hosts` (hostnames or CIDRs) exempts named hosts from the address
check only, for tests and on-premise image servers.
"""
from __future__ import annotations

import functools
import http.client
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urljoin

import urllib3.exceptions
from urllib3.util.ssl_match_hostname import CertificateError

from app.errors import ImageRejected
from app.images import sniff
from app.transport.address_policy import IPAddress, Resolver, parse_allow_list, resolve_checked
from app.transport.capped_read import CappedRead
from app.transport.pinned import Target, dial, parse_target
from app.transport.watchdog import Cutoff

MAX_REDIRECTS = 3
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
FIELD = "image_url.url"


def _reject(message: str, reason: str) -> ImageRejected:
    return ImageRejected(message, fields={FIELD: reason})


def _timed_out() -> ImageRejected:
    return _reject("image download timed out", "timed out")


def _too_large(max_bytes: int) -> ImageRejected:
    return _reject(f"image is larger than {max_bytes} bytes (FLOWCALL_MAX_IMAGE_BYTES)",
                   "image too large")


_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException, CertificateError)


def _network_failure(exc: BaseException, deadline: float, target: Target) -> ImageRejected:
    refused = isinstance(exc, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError))
    timed_out = isinstance(exc, (TimeoutError, urllib3.exceptions.TimeoutError)) and not refused
    if timed_out or time.monotonic() >= deadline:
        return _timed_out()
    if isinstance(exc, (ssl.SSLCertVerificationError, CertificateError)):
        return _reject(f"image host's TLS certificate could not be verified for {target.host}",
                       "TLS certificate not valid")
    if refused:
        return _reject(f"could not connect to the image host {target.host}", "connection failed")
    return _reject(f"image download from {target.host} failed ({type(exc).__name__})",
                   "download failed")


@dataclass(frozen=True)
class _Hop:
    status: int
    location: str | None = None
    body: bytes = b""


def _request(target: Target, addresses: list[IPAddress], *, max_bytes: int, connect_timeout: float,
             read_timeout: float, deadline: float, ca_certs: str | None) -> _Hop:
    """One GET of one hop; `deadline` (monotonic) bounds all of it, `read_timeout` each read."""
    with Cutoff(deadline - time.monotonic()) as cutoff:
        conn = response = None
        try:
            conn = dial(target, addresses, connect_timeout=connect_timeout, deadline=deadline, ca_certs=ca_certs)
            # Kept: http.client forgets conn.sock once a `Connection: close` response begins.
            sock = conn.sock
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timed_out()
            # urllib3 applies conn.timeout to the socket when it sends and starts reading the response.
            conn.timeout = min(read_timeout, remaining)
            conn.request("GET", target.path, headers={
                "Host": target.host_header,
                "Accept": "image/*",
                "Accept-Encoding": "identity",   # decompressing would happen before the byte cap
                "User-Agent": "flowcall-image-fetch/1",
                "Connection": "close",
            }, preload_content=False, decode_content=False)
            response = conn.getresponse()
            if response.status in REDIRECT_STATUSES:
                return _Hop(response.status, location=response.headers.get("Location"))
            if not 200 <= response.status < 300:
                return _Hop(response.status)
            body = CappedRead(response.read1, max_bytes=max_bytes, deadline=deadline,
                              too_large=lambda: _too_large(max_bytes), late=_timed_out, sock=sock,
                              read_timeout=read_timeout,
                              declared_length=response.headers.get("Content-Length")).whole()
        except ImageRejected:
            raise
        except _NETWORK_ERRORS as exc:
            raise _network_failure(exc, deadline, target) from None
        finally:
            if response is not None:
                response.close()
            if conn is not None:
                conn.close()
    if cutoff.expired:   # a body cut short by the watchdog can look like a normal end
        raise _timed_out()
    return _Hop(response.status, body=body)


def fetch_image(url: str, *, max_bytes: int, allow_private: Iterable[str] = (),
                connect_timeout: float = 5.0, read_timeout: float = 10.0, total_timeout: float = 20.0,
                resolver: Resolver = socket.getaddrinfo, ca_certs: str | None = None) -> tuple[str, bytes]:
    """Download an image URL safely -> (sniffed mime type, bytes). Every refusal is ImageRejected."""
    allow = parse_allow_list(tuple(allow_private))
    deadline = time.monotonic() + total_timeout
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        target = parse_target(current, refuse=_reject, subject="image URL")
        addresses = resolve_checked(target.host, target.port, allow, resolver, refuse=_reject,
                                    subject="image URL host")
        hop = _request(target, addresses, max_bytes=max_bytes, connect_timeout=connect_timeout,
                       read_timeout=read_timeout, deadline=deadline, ca_certs=ca_certs)
        if hop.status in REDIRECT_STATUSES:
            if not hop.location:
                raise _reject(f"image URL returned HTTP {hop.status} without a Location",
                              f"HTTP {hop.status}")
            current = urljoin(current, hop.location.strip())
            continue
        if not 200 <= hop.status < 300:
            raise _reject(f"image URL returned HTTP {hop.status}", f"HTTP {hop.status}")
        mime = sniff(hop.body[:16])
        if mime is None:
            raise _reject("Only JPEG, PNG, GIF and WebP images are accepted (checked by content); "
                          "the image URL returned something else",
                          "not a JPEG, PNG, GIF or WebP image")
        return mime, hop.body
    raise _reject(f"image URL redirected more than {MAX_REDIRECTS} times", "too many redirects")


def make_fetcher(settings) -> Callable[[str], tuple[str, bytes]]:
    """The dispatcher's `fetch_image`, bound to this process's limits (allow-list checked now:
    ValueError naming the setting)."""
    allow_private = tuple(settings.allow_private_image_hosts)
    try:
        parse_allow_list(allow_private)
    except ValueError as exc:
        raise ValueError(f"FLOWCALL_ALLOW_PRIVATE_IMAGE_HOSTS: {exc}") from None
    return functools.partial(fetch_image, max_bytes=settings.max_image_bytes,
                             allow_private=allow_private,
                             connect_timeout=settings.connect_timeout_s)
