"""Downloading a caller's image URL for providers that cannot fetch it themselves (Gemini, Ollama).

The URL comes from whoever calls our API, and we fetch it from inside the operator's network, so
this is a server-side request forgery surface. The defences, each needed because the one before it
can be sidestepped:

- only http(s), no `user@host` (readers disagree about which part is the host), and every host is
  resolved exactly once; if ANY of its addresses is not public (loopback, private, link-local and
  the cloud metadata address, CGNAT, unique-local, IPv4 hidden inside IPv6, ...) we refuse;
- we connect to the address we checked, never to the name (a second lookup is what DNS rebinding
  exploits), while sending the real Host header and, for https, SNI and a certificate check
  against the name;
- redirects are followed by hand, at most MAX_REDIRECTS, and every hop is checked like the first;
- the body is capped in bytes and in wall-clock time (a server that drips one byte a second must
  not hold a worker), and must really be a JPEG, PNG, GIF or WebP by magic number.

`settings.allow_private_image_hosts` (hostnames or CIDRs) exempts named hosts from the address
check only, for tests and on-premise image servers.
"""
from __future__ import annotations

import functools
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import urllib3.exceptions
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util.ssl_match_hostname import CertificateError

from .errors import ImageRejected
from .images import sniff

MAX_REDIRECTS = 3
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
CHUNK_BYTES = 64 * 1024
FIELD = "image_url.url"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Only these characters can make up the legacy IPv4 spellings inet_aton accepts (2130706433,
# 0177.0.0.1, 0x7f.1); inet_aton also ignores anything after a space, hence the full match.
_LEGACY_IPV4 = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


def _reject(message: str, reason: str) -> ImageRejected:
    return ImageRejected(message, fields={FIELD: reason})


# -- the address check ------------------------------------------------------------------------

def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one routes to (mapped, NAT64, 6to4): the one that must be public."""
    if address.version != 6:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def address_problem(address: IPAddress) -> str | None:
    """Why an address must not be fetched from ("loopback", "private", ...), or None if public.

    Named categories come first so the caller's error message says something useful; the final
    `is_global` test catches what they miss (documentation and benchmark ranges, Teredo, ...).
    """
    inner = embedded_ipv4(address)
    if inner is not None:
        return address_problem(inner)
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("carrier-grade NAT", address in _CGNAT),
        ("unique-local", address in _UNIQUE_LOCAL),
        ("site-local", address.version == 6 and address.is_site_local),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


@dataclass(frozen=True)
class AllowList:
    """Private hosts an operator vouches for: exact hostnames, or networks their addresses are in."""
    hostnames: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def allows_host(self, host: str) -> bool:
        return host.rstrip(".").lower() in self.hostnames

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


@functools.lru_cache(maxsize=32)
def parse_allow_list(entries: tuple[str, ...]) -> AllowList:
    """Addresses and CIDRs become networks, anything else a hostname; a malformed CIDR is an error
    rather than a hostname nobody will ever match."""
    hostnames, networks = set(), []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            if "/" in entry:
                raise ValueError(f"FLOWCALL_ALLOW_PRIVATE_IMAGE_HOSTS: {entry!r} is not a valid "
                                 f"CIDR") from None
            hostnames.add(entry.rstrip(".").lower())
    return AllowList(frozenset(hostnames), tuple(networks))


def literal_address(host: str) -> IPAddress | None:
    """The address a host spells directly, including the legacy IPv4 forms browsers still accept."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def resolve_checked(host: str, port: int, allow: AllowList, resolver: Resolver, *,
                    refuse: Callable[[str, str], Exception] = _reject,
                    subject: str = "image URL host") -> list[IPAddress]:
    """Resolve once and refuse if any address is not public: the list returned is what we dial.
    Shared by image downloads and job callbacks; `refuse(message, reason)` makes their own error."""
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = resolver(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise refuse(f"{subject} {host} could not be resolved", "host not found") from None
        addresses = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise refuse(f"{subject} {host} could not be resolved", "host not found")
    if allow.allows_host(host):
        return addresses
    for address in addresses:
        problem = address_problem(address)
        if problem and not allow.allows_address(address):
            article = "an" if problem == "unspecified" else "a"
            shown = str(address)
            if embedded_ipv4(address) is not None:
                shown += f", which embeds {embedded_ipv4(address)}"
            raise refuse(f"{subject} resolves to {article} {problem} address ({shown})", f"{problem} address")
    return addresses


# -- URLs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    scheme: str
    host: str          # lowercase, IDNA-encoded, no brackets
    port: int
    path: str          # what goes on the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_target(url: str) -> Target:
    if _UNSAFE_URL_CHARS.search(url):
        raise _reject("image URL contains whitespace, control characters or backslashes",
                      "invalid URL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _reject(f"image URL scheme must be http or https, not {scheme or 'none'}",
                      "unsupported scheme")
    if "@" in parts.netloc:
        raise _reject("image URL must not contain a username or password (user@host)",
                      "credentials in URL")
    if not parts.hostname:
        raise _reject("image URL has no host", "no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
        host = parts.hostname if ":" in parts.hostname else parts.hostname.encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise _reject("image URL has an invalid host or port", "invalid host or port") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # Non-ASCII (a Location header, a caller's café.png) as UTF-8 escapes; existing escapes stay.
    return Target(scheme, host.lower(), port, quote(path, safe="!#$%&'()*+,/:;=?@[]~"))


# -- the transfer -----------------------------------------------------------------------------

class Deadline:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.ends = clock() + seconds

    def remaining(self) -> float:
        return self.ends - self.clock()

    def cap(self, seconds: float) -> float:
        """A per-operation socket timeout that cannot outlive the whole download."""
        remaining = self.remaining()
        if remaining <= 0:
            raise _timed_out()
        return min(seconds, remaining)


def _timed_out() -> ImageRejected:
    return _reject("image download timed out", "timed out")


class _Watchdog:
    """Shuts the socket down when the deadline passes, whatever the transfer is blocked on.

    Socket timeouts bound each recv, not their sum: a server can drip the TLS handshake, status
    line or headers a byte at a time inside ssl/http.client, where we cannot check the clock.
    """

    def __init__(self, deadline: Deadline):
        self.conn = None     # while connecting: its socket may appear at any moment
        self.sock = None     # once connected: http.client drops conn.sock when the response begins
        self.fired = False
        self.timer = threading.Timer(max(deadline.remaining(), 0.0), self._fire)
        self.timer.daemon = True

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()

    def _fire(self):
        self.fired = True
        sock = self.sock or getattr(self.conn, "sock", None)
        if sock is not None:
            try:   # the base-class call: SSLSocket.shutdown would drop state the reader still uses
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass


_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException, CertificateError)


def _network_failure(exc: BaseException, deadline: Deadline, target: Target) -> ImageRejected:
    refused = isinstance(exc, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError))
    timed_out = isinstance(exc, (TimeoutError, urllib3.exceptions.TimeoutError)) and not refused
    if timed_out or deadline.remaining() <= 0:
        return _timed_out()
    if isinstance(exc, (ssl.SSLCertVerificationError, CertificateError)):
        return _reject(f"image host's TLS certificate could not be verified for {target.host}",
                       "TLS certificate not valid")
    if refused:
        return _reject(f"could not connect to the image host {target.host}", "connection failed")
    return _reject(f"image download from {target.host} failed ({type(exc).__name__})",
                   "download failed")


def _open_connection(target: Target, address: IPAddress, connect_timeout: float,
                     ca_certs: str | None):
    """A connection to the checked address that still speaks to, and verifies, the hostname."""
    if target.scheme == "https":
        name = target.host.rstrip(".")
        return HTTPSConnection(str(address), target.port, timeout=connect_timeout,
                               server_hostname=name, assert_hostname=name,
                               cert_reqs="CERT_REQUIRED", ca_certs=ca_certs)
    return HTTPConnection(str(address), target.port, timeout=connect_timeout)


def _connect(target: Target, addresses: list[IPAddress], connect_timeout: float, deadline: Deadline,
             ca_certs: str | None, watchdog: _Watchdog):
    """Dial the checked addresses in resolver order; one dead address is no reason to give up."""
    failure: BaseException | None = None
    for address in addresses:
        conn = _open_connection(target, address, deadline.cap(connect_timeout), ca_certs)
        watchdog.conn = conn
        try:
            conn.connect()
            return conn
        except urllib3.exceptions.ConnectTimeoutError as exc:   # includes NewConnectionError
            conn.close()
            failure = exc
        except BaseException:
            conn.close()
            raise
    raise _network_failure(failure, deadline, target)


def _set_read_timeout(sock, seconds: float) -> None:
    # None only for test doubles; fileno -1 once http.client has closed it after the last byte
    if sock is not None and sock.fileno() != -1:
        sock.settimeout(seconds)


def _read_capped(response, sock, max_bytes: int, read_timeout: float, deadline: Deadline) -> bytes:
    declared = (response.headers.get("Content-Length") or "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks, total = [], 0
    while True:
        _set_read_timeout(sock, deadline.cap(read_timeout))
        # read1 returns whatever one recv brings: read(n) would wait for n bytes, which is
        # exactly what a slow-drip server exploits.
        chunk = response.read1(min(CHUNK_BYTES, max_bytes - total + 1))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)


def _too_large(max_bytes: int) -> ImageRejected:
    return _reject(f"image is larger than {max_bytes} bytes (FLOWCALL_MAX_IMAGE_BYTES)",
                   "image too large")


@dataclass(frozen=True)
class _Hop:
    status: int
    location: str | None = None
    body: bytes = b""


def _request(target: Target, addresses: list[IPAddress], *, max_bytes: int, connect_timeout: float,
             read_timeout: float, deadline: Deadline, ca_certs: str | None) -> _Hop:
    with _Watchdog(deadline) as watchdog:
        conn = response = None
        try:
            conn = _connect(target, addresses, connect_timeout, deadline, ca_certs, watchdog)
            # Kept: http.client forgets conn.sock once a `Connection: close` response begins.
            sock = watchdog.sock = conn.sock
            # urllib3 applies conn.timeout to the socket when it starts reading the response.
            conn.timeout = deadline.cap(read_timeout)
            _set_read_timeout(sock, conn.timeout)
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
            body = _read_capped(response, sock, max_bytes, read_timeout, deadline)
        except ImageRejected:
            raise
        except _NETWORK_ERRORS as exc:
            raise _network_failure(exc, deadline, target) from None
        finally:
            if response is not None:
                response.close()
            if conn is not None:
                conn.close()
        if watchdog.fired:   # a body cut short by the watchdog can look like a normal end
            raise _timed_out()
        return _Hop(response.status, body=body)


def _default_ca_certs() -> str | None:
    try:
        import certifi
    except ImportError:   # urllib3 then loads the system store
        return None
    return certifi.where()


def fetch_image(url: str, *, max_bytes: int, allow_private: Iterable[str] = (),
                connect_timeout: float = 5.0, read_timeout: float = 10.0, total_timeout: float = 20.0,
                resolver: Resolver = socket.getaddrinfo, ca_certs: str | None = None) -> tuple[str, bytes]:
    """Download an image URL safely -> (sniffed mime type, bytes). Every refusal is ImageRejected."""
    allow = parse_allow_list(tuple(allow_private))
    deadline = Deadline(total_timeout)
    ca_certs = ca_certs or _default_ca_certs()
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        target = parse_target(current)
        addresses = resolve_checked(target.host, target.port, allow, resolver)
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
    """The dispatcher's `fetch_image`, bound to this process's limits (allow-list checked now)."""
    allow_private = tuple(settings.allow_private_image_hosts)
    parse_allow_list(allow_private)
    return functools.partial(fetch_image, max_bytes=settings.max_image_bytes,
                             allow_private=allow_private,
                             connect_timeout=settings.connect_timeout_s)
