"""Job callbacks: the finished job POSTed to the caller's URL, signed, and SSRF-guarded.

The URL comes from whoever submits a job and we POST to it from inside the operator's network, so
it gets the image downloader's guard (app/image_fetch.py): http(s) only, no `user@host`, the host
resolved once and refused if any address is not public (unless FLOWCALL_ALLOW_PRIVATE_CALLBACK_HOSTS
names it), and the connection made to the address we checked, never to the name again (DNS
rebinding). Redirects are not followed: a receiver that answers 3xx has not taken the result.

Signature, so the receiver knows the POST is ours and fresh (Stripe's scheme):

    X-Flowcall-Timestamp: <unix seconds>
    X-Flowcall-Signature: sha256=<hex HMAC-SHA256(FLOWCALL_CALLBACK_SECRET, "<timestamp>.<raw body>")>

The timestamp is inside the signed text, so a captured POST cannot be replayed later with a new
one; `verify` is the receiver's recipe.
"""
from __future__ import annotations

import hashlib
import hmac
import socket
import time
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urlsplit

from .cutoff import Cutoff, WatchedHTTPConnection, WatchedHTTPSConnection
from .errors import ValidationError
from .image_fetch import parse_allow_list, resolve_checked

SIGNATURE_HEADER = "X-Flowcall-Signature"
TIMESTAMP_HEADER = "X-Flowcall-Timestamp"
JOB_HEADER = "X-Flowcall-Job-Id"
MAX_URL_CHARS = 2048
TIMEOUT_S = 10.0
REPLAY_TOLERANCE_S = 300
FIELD = "callback_url"


class CallbackFailed(Exception):
    """A delivery attempt that did not land; `retryable` says whether another attempt may."""

    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, *,
           now: float | None = None, tolerance_s: int = REPLAY_TOLERANCE_S) -> bool:
    """The receiver's check: the signature matches the raw body and the timestamp is recent."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.scheme == "https" else 80) else f"{host}:{self.port}"


def _refuse(message: str, reason: str) -> ValidationError:
    return ValidationError(f"callback_url refused: {message}.", fields={FIELD: reason})


def check_url(url: str, allow_private: Iterable[str] = (),
              resolver: Callable[..., list] = socket.getaddrinfo) -> Destination:
    """Where a callback may go, resolved and checked; ValidationError (callback_url) otherwise."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise _refuse(f"it must be an http(s) URL of at most {MAX_URL_CHARS} characters", "not a URL")
    if any(c.isspace() or ord(c) < 32 or c == "\\" for c in url):
        raise _refuse("it contains whitespace, control characters or backslashes", "invalid URL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _refuse(f"the scheme must be http or https, not {scheme or 'none'}", "unsupported scheme")
    if "@" in parts.netloc:
        raise _refuse("it must not contain a username or password", "credentials in URL")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
        host = parts.hostname or ""
        host = host if ":" in host else host.encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise _refuse("the host or port is invalid", "invalid host or port") from None
    if not host:
        raise _refuse("it has no host", "no host")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(scheme, host.lower(), port, path, _resolve_checked(host.lower(), port, allow_private, resolver))


def _resolve_checked(host: str, port: int, allow_private: Iterable[str], resolver) -> tuple:
    """The image downloads' SSRF check, with callback wording."""
    return tuple(resolve_checked(host, port, parse_allow_list(tuple(allow_private)), resolver,
                                 refuse=_refuse, subject="the host"))


def _connection(dest: Destination, address, timeout_s: float):
    """A connection to the checked address that still names (and, for https, verifies) the host;
    it joins the current Cutoff, which bounds the whole delivery."""
    if dest.scheme == "https":
        try:
            import certifi
            ca_certs = certifi.where()
        except ImportError:
            ca_certs = None
        return WatchedHTTPSConnection(str(address), dest.port, timeout=timeout_s, server_hostname=dest.host,
                               assert_hostname=dest.host, cert_reqs="CERT_REQUIRED", ca_certs=ca_certs)
    return WatchedHTTPConnection(str(address), dest.port, timeout=timeout_s)


def post(url: str, body: bytes, *, secret: str, job_id: str, allow_private: Iterable[str] = (),
         timeout_s: float = TIMEOUT_S, resolver: Callable[..., list] = socket.getaddrinfo,
         clock: Callable[[], float] = time.time) -> int:
    """One signed delivery attempt -> the receiver's 2xx status; CallbackFailed otherwise.
    `timeout_s` bounds the whole attempt (every address, connect to the last byte read): a
    receiver that drips its status line or headers is cut off like a silent one."""
    try:
        dest = check_url(url, allow_private, resolver)
    except ValidationError as err:
        raise CallbackFailed(err.message, retryable=err.fields.get(FIELD) == "host not found") from None
    timestamp = int(clock())
    headers = {"Host": dest.host_header, "Content-Type": "application/json", "User-Agent": "flowcall-callback/1",
               TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body),
               JOB_HEADER: job_id, "Connection": "close"}
    with Cutoff(timeout_s) as cutoff:
        return _deliver(dest, body, headers, timeout_s, cutoff)


def _deliver(dest: Destination, body: bytes, headers: dict, timeout_s: float, cutoff: Cutoff) -> int:
    failure = "no address"
    for address in dest.addresses:
        if cutoff.expired:
            break
        conn = _connection(dest, address, timeout_s)
        try:
            conn.request("POST", dest.path, body=body, headers=headers)
            response = conn.getresponse()
            status = response.status
            response.read(64 * 1024)
        except Exception as exc:  # noqa: BLE001 - any transport failure is one failed attempt
            failure = (f"{dest.host} did not answer within {timeout_s:g} s" if cutoff.expired
                       else f"{type(exc).__name__} connecting to {dest.host}")
            continue
        finally:
            conn.close()
        if 200 <= status < 300:
            return status
        # 408/425/429/5xx may pass; any other answer (3xx, 4xx: a deleted hook) will not change.
        raise CallbackFailed(f"the receiver answered HTTP {status}",
                             retryable=status in (408, 425, 429) or status >= 500)
    raise CallbackFailed(f"could not deliver: {failure}", retryable=True)
