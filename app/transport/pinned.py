"""The pinned-address connection of a guarded fetch (image downloads, job callbacks).

The URL comes from outside, so the host is resolved once and checked (address_policy.py), and we
connect to the address we checked, never to the name (a second lookup is what DNS rebinding
exploits), while still naming the host: the caller sends `Target.host_header`, and https gets SNI
and a certificate check against the name. The connections join the current Cutoff (watchdog.py).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import urllib3.exceptions
from urllib3.connection import HTTPConnection

from app.transport.address_policy import IPAddress, Refuse
from app.transport.watchdog import WatchedHTTPConnection, WatchedHTTPSConnection

# Readers disagree about where a URL with these ends (WHATWG turns "\" into "/"), so none is fetched.
_UNSAFE_URL_CHARS = re.compile(r"[\s\x00-\x20\x7f\\]")


@dataclass(frozen=True)
class Target:
    """Where a guarded fetch goes: the parts of its URL that reach the wire."""
    scheme: str
    host: str          # lowercase, IDNA-encoded, no brackets
    port: int
    path: str          # what goes on the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_target(url: str, *, refuse: Refuse, subject: str) -> Target:
    """An http(s) URL without `user@host` (readers disagree about which part is the host) as a
    Target; otherwise `refuse(message, reason)`, with `subject` naming the URL ("image URL")."""
    if _UNSAFE_URL_CHARS.search(url):
        raise refuse(f"{subject} contains whitespace, control characters or backslashes", "invalid URL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise refuse(f"{subject} scheme must be http or https, not {scheme or 'none'}", "unsupported scheme")
    if "@" in parts.netloc:
        raise refuse(f"{subject} must not contain a username or password (user@host)", "credentials in URL")
    if not parts.hostname:
        raise refuse(f"{subject} has no host", "no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
        host = parts.hostname if ":" in parts.hostname else parts.hostname.encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise refuse(f"{subject} has an invalid host or port", "invalid host or port") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # Non-ASCII (a Location header, a caller's café.png) as UTF-8 escapes; existing escapes stay.
    return Target(scheme, host.lower(), port, quote(path, safe="!#$%&'()*+,/:;=?@[]~"))


def default_ca_certs() -> str | None:
    try:
        import certifi
    except ImportError:   # urllib3 then loads the system store
        return None
    return certifi.where()


def dial(target: Target, addresses: list[IPAddress], *, connect_timeout: float, deadline: float,
         ca_certs: str | None = None) -> HTTPConnection:
    """A connected connection to the first of the checked `addresses` that answers (in resolver
    order: one dead address is no reason to give up), each tried for at most `connect_timeout` and
    none after `deadline` (monotonic). Raises the last failure, urllib3's or TimeoutError."""
    ca_certs = ca_certs or default_ca_certs()
    failure: BaseException | None = None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no time left to connect to {target.host}")
        conn = _connection(target, address, min(connect_timeout, remaining), ca_certs)
        try:
            conn.connect()
            return conn
        except urllib3.exceptions.ConnectTimeoutError as exc:   # includes NewConnectionError
            conn.close()
            failure = exc
        except BaseException:
            conn.close()
            raise
    raise failure or OSError(f"{target.host} has no address to connect to")


def _connection(target: Target, address: IPAddress, timeout: float, ca_certs: str | None) -> HTTPConnection:
    """A connection to the checked address that still speaks to, and verifies, the hostname."""
    if target.scheme == "https":
        name = target.host.rstrip(".")
        return WatchedHTTPSConnection(str(address), target.port, timeout=timeout, server_hostname=name,
                                      assert_hostname=name, cert_reqs="CERT_REQUIRED", ca_certs=ca_certs)
    return WatchedHTTPConnection(str(address), target.port, timeout=timeout)
