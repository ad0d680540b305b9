"""Job callbacks: the finished job POSTed to the caller's URL, signed, and SSRF-guarded.

The URL comes from whoever submits a job and we POST to it from inside the operator's network, so
it gets the image downloads' guard (app/transport/address_policy.py, pinned.py): http(s) only, no
`user@host`, the host resolved once and refused if any address is not public (unless
FLOWCALL_ALLOW_PRIVATE_CALLBACK_HOSTS names it), and the connection made to the address we checked,
never to the name again (DNS rebinding), all of it under one Cutoff (watchdog.py). Redirects are
not followed: a receiver that answers 3xx has not taken the result.

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
from collections.abc import Callable, Iterable

from app.errors import ValidationError
from app.transport.address_policy import IPAddress, Resolver, parse_allow_list, resolve_checked
from app.transport.pinned import Target, dial, parse_target
from app.transport.watchdog import Cutoff

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


def _refuse(message: str, reason: str) -> ValidationError:
    return ValidationError(f"callback_url refused: {message}.", fields={FIELD: reason})


def check_url(url: str, allow_private: Iterable[str] = (),
              resolver: Resolver = socket.getaddrinfo) -> tuple[Target, list[IPAddress]]:
    """Where a callback may go, and the checked addresses to dial; ValidationError (callback_url)
    otherwise."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise _refuse(f"it must be an http(s) URL of at most {MAX_URL_CHARS} characters", "not a URL")
    target = parse_target(url, refuse=_refuse, subject="the URL")
    return target, resolve_checked(target.host, target.port, parse_allow_list(tuple(allow_private)), resolver,
                                   refuse=_refuse, subject="the host")


def post(url: str, body: bytes, *, secret: str, job_id: str, allow_private: Iterable[str] = (),
         timeout_s: float = TIMEOUT_S, resolver: Resolver = socket.getaddrinfo,
         clock: Callable[[], float] = time.time) -> int:
    """One signed delivery attempt -> the receiver's 2xx status; CallbackFailed otherwise.
    `timeout_s` bounds the whole attempt (every address, connect to the last byte read): a
    receiver that drips its status line or headers is cut off like a silent one."""
    try:
        target, addresses = check_url(url, allow_private, resolver)
    except ValidationError as err:
        raise CallbackFailed(err.message, retryable=err.fields.get(FIELD) == "host not found") from None
    timestamp = int(clock())
    headers = {"Host": target.host_header, "Content-Type": "application/json", "User-Agent": "flowcall-callback/1",
               TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body),
               JOB_HEADER: job_id, "Connection": "close"}
    deadline = time.monotonic() + timeout_s
    with Cutoff(timeout_s) as cutoff:
        conn = None
        try:
            conn = dial(target, addresses, connect_timeout=timeout_s, deadline=deadline)
            conn.request("POST", target.path, body=body, headers=headers)
            response = conn.getresponse()
            status = response.status
            response.read(64 * 1024)
        except Exception as exc:  # noqa: BLE001 - any transport failure is one failed attempt
            failure = (f"{target.host} did not answer within {timeout_s:g} s"
                       if cutoff.expired or time.monotonic() >= deadline
                       else f"{type(exc).__name__} connecting to {target.host}")
            raise CallbackFailed(f"could not deliver: {failure}", retryable=True) from None
        finally:
            if conn is not None:
                conn.close()
    if 200 <= status < 300:
        return status
    # 408/425/429/5xx may pass; any other answer (3xx, 4xx: a deleted hook) will not change.
    raise CallbackFailed(f"the receiver answered HTTP {status}",
                         retryable=status in (408, 425, 429) or status >= 500)
