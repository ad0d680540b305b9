"""The SSRF-guarded image downloader: the address check as tables, then real transfers against
threaded servers on 127.0.0.1 (http, and https with a throwaway CA), never the outside network.

Slow responses end early when the client hangs up or when a threading.Event is set at teardown,
and by themselves after ~5 s. The slow-server tests assert that the server SAW the client hang up
mid-response: a client without the defence under test sits the slow response out instead, and
the assertion fails (no wall-clock measurement involved).
"""
from __future__ import annotations

import datetime
import http.server
import io
import ipaddress
import select
import socket
import ssl
import threading
from urllib.parse import parse_qs, quote

import pytest
import urllib3

from app.config import Settings
from app.errors import ImageRejected
from app.image_fetch import fetch_image, make_fetcher
from app.transport import pinned, watchdog
from app.transport.address_policy import address_problem, embedded_ipv4, literal_address, parse_allow_list

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(17)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(20)
LOOPBACK_ONLY = ("127.0.0.0/8",)
DRIP_STEPS = 100          # x 50 ms: slow responses end by themselves after ~5 s
BOUNDED_WAIT_S = 10.0     # longer than any slow response: only reached when a test fails


# -- the servers ------------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.close_connection = True
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        path, _, query = self.path.partition("?")
        if path.startswith("/redirect/"):
            return self._redirect_chain(int(path.rsplit("/", 1)[1]))
        route = getattr(self, "route_" + path.strip("/").replace("-", "_").replace(".", "_"), None)
        if route is None:
            return self._send(404, b"not found", "text/plain")
        try:
            route(parse_qs(query))
        except OSError:      # writing to a client that already left
            self.server.hung_up.set()

    # plumbing
    def _raw(self, data: bytes):
        self.wfile.write(data)
        self.wfile.flush()

    def _head(self, status: int, headers: dict):
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()] + ["Connection: close"]
        self._raw(("\r\n".join(lines) + "\r\n\r\n").encode())

    def _send(self, status: int, body: bytes, content_type: str = "image/png", **extra):
        self._head(status, {"Content-Type": content_type, "Content-Length": len(body), **extra})
        self._raw(body)

    def _pause(self) -> bool:
        """One 50 ms beat of a slow response; True once the client has hung up (or at teardown).

        A hang-up is seen as end-of-file on the connection while we are still being slow: the
        tests assert it happened, which a client that sat out the whole slow response cannot fake.
        """
        if self.server.release.is_set():
            return True
        readable, _, _ = select.select([self.connection], [], [], 0.05)
        if not readable:
            return False
        try:
            gone = self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            gone = True
        if gone:
            self.server.hung_up.set()
            return True
        return self.server.release.wait(0.05)

    def _stall(self) -> bool:
        """Wait (bounded) for the client to give up; True if it did."""
        return any(self._pause() for _ in range(DRIP_STEPS))

    # routes
    def route_img_png(self, q):
        self._send(200, PNG, "image/png")

    def route_img_jpg(self, q):
        self._send(200, JPEG, "text/plain")     # the declared type is ignored: bytes decide

    def route_page_html(self, q):
        self._send(200, b"<html><body>not an image</body></html>", "image/png")

    def route_missing(self, q):
        self._send(404, b"gone", "text/plain")

    def route_redirect_to(self, q):
        self._head(302, {"Location": q["url"][0], "Content-Length": 0})

    def route_no_location(self, q):
        self._head(302, {"Content-Length": 0})

    def _redirect_chain(self, left: int):
        if left == 0:
            return self._send(200, PNG)
        # alternate absolute and relative Location headers: both must be re-checked and resolved
        port = self.server.server_address[1]
        location = f"http://127.0.0.1:{port}/redirect/{left - 1}" if left % 2 else f"{left - 1}"
        self._head(302, {"Location": location, "Content-Length": 0})

    def route_big_declared(self, q):
        """Declares 5000 bytes, sends 108, stalls: only a Content-Length check refuses it quickly."""
        self._head(200, {"Content-Type": "image/png", "Content-Length": 5000})
        self._raw(PNG[:8] + bytes(100))
        if not self._stall():
            self._raw(bytes(5000 - 108))

    def route_big_chunked(self, q):
        """No Content-Length; 1500 bytes, then a stall: only counting while streaming refuses it."""
        self._head(200, {"Content-Type": "image/png", "Transfer-Encoding": "chunked"})
        for i in range(15):
            self._raw(b"64\r\n" + (PNG[:8] + bytes(92) if i == 0 else bytes(100)) + b"\r\n")
        if not self._stall():
            self._raw(b"0\r\n\r\n")

    def route_slow_headers(self, q):
        if not self._stall():
            self._send(200, PNG)

    def route_slow_body(self, q):
        self._head(200, {"Content-Type": "image/png", "Content-Length": len(PNG)})
        self._raw(PNG[:8])
        if not self._stall():
            self._raw(PNG[8:])

    def route_drip_body(self, q):
        """One byte every 50 ms: no single read ever times out, only the total deadline can."""
        self._head(200, {"Content-Type": "image/png", "Transfer-Encoding": "chunked"})
        self._raw(b"8\r\n" + PNG[:8] + b"\r\n")
        for _ in range(DRIP_STEPS):
            if self._pause():
                return
            self._raw(b"1\r\n\x00\r\n")
        self._raw(b"0\r\n\r\n")

    def route_drip_headers(self, q):
        """The same drip inside a header line, where the client cannot look at the clock."""
        self._raw(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        for _ in range(DRIP_STEPS):
            if self._pause():
                return
            self._raw(b"a")
        self._raw(f"\r\nContent-Type: image/png\r\nContent-Length: {len(PNG)}\r\n"
                  f"Connection: close\r\n\r\n".encode() + PNG)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, dict]] = []
        self.release = threading.Event()     # set at teardown: every stalled handler returns
        self.hung_up = threading.Event()     # a client left in the middle of a slow response

    def handle_error(self, request, client_address):
        pass   # clients that gave up leave broken pipes behind; that is the point of those tests

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def server():
    srv = _Server()
    thread = _serve(srv)
    yield srv
    srv.release.set()
    srv.shutdown()
    thread.join()
    srv.server_close()


class FakeResolver:
    """getaddrinfo-shaped answers from a table; each host's answers are used in turn (rebinding)."""

    def __init__(self, table: dict[str, list[list[str]] | list[str]]):
        self.table = {host: answers if isinstance(answers[0], list) else [answers]
                      for host, answers in table.items()}
        self.calls: list[str] = []

    def __call__(self, host, port, *args, **kwargs):
        self.calls.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = self.table[host]
        addresses = answers[min(self.calls.count(host), len(answers)) - 1]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]


def refused(url: str, **kwargs) -> ImageRejected:
    kwargs.setdefault("max_bytes", 1000)
    with pytest.raises(ImageRejected) as info:
        fetch_image(url, **kwargs)
    err = info.value
    assert err.status == 400 and err.code == "image_rejected"
    assert list(err.fields) == ["image_url.url"]
    return err


@pytest.fixture
def no_connections(monkeypatch):
    """For refusals that must happen before any socket is opened."""
    def forbidden(*args, **kwargs):
        raise AssertionError(f"connection attempted: {args}")
    monkeypatch.setattr(pinned, "WatchedHTTPConnection", forbidden)
    monkeypatch.setattr(pinned, "WatchedHTTPSConnection", forbidden)


# -- the address check, as tables -------------------------------------------------------------

@pytest.mark.parametrize("address, problem", [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("10.0.0.5", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),            # cloud metadata
    ("169.254.0.1", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),                     # is_global says True on 3.11: checked by name
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("64:ff9b::a00:1", "private"),                 # NAT64 of 10.0.0.1
    ("64:ff9b::7f00:1", "loopback"),
    ("2002:0a00:0001::", "private"),               # 6to4 of 10.0.0.1
    ("2002:7f00:1::1", "loopback"),
    ("2002:a9fe:a9fe::", "link-local"),            # 6to4 of 169.254.169.254
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    # public
    ("8.8.8.8", None),
    ("93.184.216.34", None),
    ("100.63.255.255", None),                      # just below CGNAT
    ("172.32.0.1", None),                          # just above 172.16/12
    ("2606:4700:4700::1111", None),
    ("::ffff:8.8.8.8", None),
    ("64:ff9b::808:808", None),                    # NAT64 of a public address
    ("2002:808:808::", None),                      # 6to4 of a public address
])
def test_address_problem(address, problem):
    assert address_problem(ipaddress.ip_address(address)) == problem


@pytest.mark.parametrize("address", [
    "0.1.2.3", "192.0.2.1", "198.18.0.1", "240.0.0.1", "255.255.255.255",
    "2001:db8::1", "2001::1", "::7f00:1", "64:ff9b:1::a00:1", "100::1",
])
def test_other_non_public_ranges_are_refused_too(address):
    assert address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address, inner", [
    ("::ffff:127.0.0.1", "127.0.0.1"),
    ("64:ff9b::a00:1", "10.0.0.1"),
    ("2002:0a00:0001::", "10.0.0.1"),
    ("2606:4700::1", None),
    ("10.0.0.1", None),
])
def test_embedded_ipv4(address, inner):
    found = embedded_ipv4(ipaddress.ip_address(address))
    assert (str(found) if found else None) == inner


@pytest.mark.parametrize("host, address", [
    ("2130706433", "127.0.0.1"),       # decimal
    ("0177.0.0.1", "127.0.0.1"),       # octal
    ("0x7f.0.0.1", "127.0.0.1"),       # hex
    ("0x7f000001", "127.0.0.1"),
    ("127.1", "127.0.0.1"),            # short form
    ("0", "0.0.0.0"),
    ("::1", "::1"),
    ("example.com", None),
    ("deadbeef", None),
])
def test_literal_address_normalises_legacy_spellings(host, address):
    found = literal_address(host)
    assert (str(found) if found else None) == address


@pytest.mark.parametrize("url, host, port, path, host_header", [
    ("http://Example.COM/a.png", "example.com", 80, "/a.png", "example.com"),
    ("https://example.com/a.png?x=1#frag", "example.com", 443, "/a.png?x=1", "example.com"),
    ("https://example.com:8443", "example.com", 8443, "/", "example.com:8443"),
    ("http://[::1]:8080/a.png", "::1", 8080, "/a.png", "[::1]:8080"),
    ("http://[2606:4700::1]/a.png", "2606:4700::1", 80, "/a.png", "[2606:4700::1]"),
    ("http://bücher.example/a.png", "xn--bcher-kva.example", 80, "/a.png", "xn--bcher-kva.example"),
    ("http://example.com/caf\u00e9%20x.png?q=\u00e9", "example.com", 80, "/caf%C3%A9%20x.png?q=%C3%A9", "example.com"),
])
def test_parse_target(url, host, port, path, host_header):
    target = pinned.parse_target(url, refuse=lambda message, reason: ValueError(message), subject="image URL")
    assert (target.host, target.port, target.path, target.host_header) == (host, port, path, host_header)


@pytest.mark.parametrize("url, says", [
    ("ftp://example.com/a.png", "scheme must be http or https, not ftp"),
    ("file:///etc/passwd", "scheme must be http or https, not file"),
    ("gopher://example.com/", "not gopher"),
    ("//example.com/a.png", "not none"),
    ("http://user:pass@example.com/a.png", "username or password"),
    ("http://public.example@127.0.0.1/a.png", "username or password"),
    ("http://@127.0.0.1/a.png", "username or password"),
    ("http:///a.png", "no host"),
    ("http://example.com:99999/a.png", "invalid host or port"),
    ("http://exa mple.com/a.png", "whitespace"),
    ("http://example.com\\@127.0.0.1/", "backslash"),
])
def test_malformed_urls_are_refused_before_any_lookup(url, says, no_connections):
    resolver = FakeResolver({})
    err = refused(url, resolver=resolver)
    assert says in err.message
    assert resolver.calls == []


def test_allow_list_parsing():
    allow = parse_allow_list(("127.0.0.1", "10.0.0.0/8", " Images.Internal. ", "::1", "192.168.1.7/24"))
    assert allow.hostnames == frozenset({"images.internal"})
    assert [str(n) for n in allow.networks] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "192.168.1.0/24"]
    assert allow.allows_host("IMAGES.internal") and not allow.allows_host("other.internal")
    assert allow.allows_address(ipaddress.ip_address("10.9.8.7"))
    assert not allow.allows_address(ipaddress.ip_address("11.0.0.1"))


def test_a_malformed_cidr_is_a_configuration_error():
    with pytest.raises(ValueError, match="10.0.0.0/33"):
        make_fetcher(Settings(allow_private_image_hosts=("10.0.0.0/33",)))


# -- refusals decided by resolution (fake resolver, no connection) ----------------------------

@pytest.mark.parametrize("address, says", [
    ("127.0.0.1", "a loopback address (127.0.0.1)"),
    ("::1", "a loopback address (::1)"),
    ("10.0.0.5", "a private address (10.0.0.5)"),
    ("172.16.0.1", "a private address (172.16.0.1)"),
    ("192.168.0.1", "a private address (192.168.0.1)"),
    ("169.254.169.254", "a link-local address (169.254.169.254)"),
    ("100.64.0.1", "a carrier-grade NAT address (100.64.0.1)"),
    ("fc00::1", "a unique-local address (fc00::1)"),
    ("fe80::1", "a link-local address (fe80::1)"),
    ("fec0::1", "a site-local address (fec0::1)"),
    ("::ffff:127.0.0.1", "a loopback address (::ffff:127.0.0.1, which embeds 127.0.0.1)"),
    ("::ffff:10.0.0.1", "a private address (::ffff:10.0.0.1, which embeds 10.0.0.1)"),
    ("64:ff9b::a00:1", "a private address (64:ff9b::a00:1, which embeds 10.0.0.1)"),
    ("2002:a00:1::", "a private address (2002:a00:1::, which embeds 10.0.0.1)"),
    ("0.0.0.0", "an unspecified address (0.0.0.0)"),
    ("::", "an unspecified address (::)"),
    ("224.0.0.1", "a multicast address (224.0.0.1)"),
])
def test_public_looking_host_resolving_to_a_non_public_address(address, says, no_connections):
    resolver = FakeResolver({"images.example.com": [address]})
    err = refused("https://images.example.com/cat.png", resolver=resolver)
    # an address prints as this Python prints it (3.11: ::ffff:7f00:1, 3.13: ::ffff:127.0.0.1)
    shown = says.replace(address, str(ipaddress.ip_address(address)))
    assert err.message == f"image URL host resolves to {shown}"
    assert resolver.calls == ["images.example.com"]


def test_any_bad_address_among_several_is_enough(no_connections):
    resolver = FakeResolver({"mixed.example.com": ["8.8.8.8", "10.0.0.1"]})
    err = refused("http://mixed.example.com/cat.png", resolver=resolver)
    assert "private address (10.0.0.1)" in err.message


def test_unresolvable_host(no_connections):
    err = refused("http://nowhere.example/cat.png", resolver=FakeResolver({}))
    assert err.message == "image URL host nowhere.example could not be resolved"


def _no_resolver(*args, **kwargs):
    raise AssertionError("an IP literal must not be looked up")


@pytest.mark.parametrize("resolver", [_no_resolver, socket.getaddrinfo], ids=["literal", "getaddrinfo"])
@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "127.1",
                                  "127.0.0.1", "[::1]", "[::ffff:127.0.0.1]"])
def test_loopback_in_every_spelling_is_refused(host, resolver, no_connections):
    err = refused(f"http://{host}/cat.png", resolver=resolver)
    assert "a loopback address" in err.message


def test_zero_spelling_is_the_unspecified_address(no_connections):
    assert "an unspecified address (0.0.0.0)" in refused("http://0/", resolver=_no_resolver).message


# -- real transfers ---------------------------------------------------------------------------

def test_a_loopback_server_is_refused_by_default(server):
    err = refused(server.url("/img.png"))
    assert err.message == "image URL host resolves to a loopback address (127.0.0.1)"
    assert server.seen == []


@pytest.mark.parametrize("allow", [("127.0.0.1",), ("127.0.0.0/8",), ("10.0.0.0/8", "127.0.0.1/32")])
def test_allow_list_by_address_or_cidr(server, allow):
    assert fetch_image(server.url("/img.png"), max_bytes=1000, allow_private=allow) == ("image/png", PNG)
    assert server.seen[0][1]["host"] == f"127.0.0.1:{server.port}"


@pytest.mark.parametrize("allow", [("localhost",), ("LocalHost",)])
def test_allow_list_by_hostname(server, allow):
    url = server.url("/img.png", host="localhost")
    assert fetch_image(url, max_bytes=1000, allow_private=allow) == ("image/png", PNG)
    assert server.seen[0][1]["host"] == f"localhost:{server.port}"


def test_an_allowed_hostname_does_not_allow_its_address(server):
    err = refused(server.url("/img.png"), allow_private=("localhost",))
    assert "loopback address (127.0.0.1)" in err.message


def test_the_sniffed_type_wins_over_content_type(server):
    assert fetch_image(server.url("/img.jpg"), max_bytes=1000, allow_private=LOOPBACK_ONLY) == ("image/jpeg", JPEG)


def test_a_non_image_body_is_refused_whatever_it_claims(server):
    err = refused(server.url("/page.html"), allow_private=LOOPBACK_ONLY)
    assert "Only JPEG, PNG, GIF and WebP" in err.message
    assert err.fields == {"image_url.url": "not a JPEG, PNG, GIF or WebP image"}


def test_404_is_refused_with_its_status(server):
    err = refused(server.url("/missing"), allow_private=LOOPBACK_ONLY)
    assert err.message == "image URL returned HTTP 404"


def test_three_redirects_are_followed(server):
    assert fetch_image(server.url("/redirect/3"), max_bytes=1000, allow_private=LOOPBACK_ONLY) == ("image/png", PNG)
    assert server.paths == ["/redirect/3", "/redirect/2", "/redirect/1", "/redirect/0"]


def test_a_fourth_redirect_is_refused_without_being_followed(server):
    err = refused(server.url("/redirect/4"), allow_private=LOOPBACK_ONLY)
    assert err.message == "image URL redirected more than 3 times"
    assert server.paths == ["/redirect/4", "/redirect/3", "/redirect/2", "/redirect/1"]


def test_redirect_without_location(server):
    err = refused(server.url("/no-location"), allow_private=LOOPBACK_ONLY)
    assert "HTTP 302 without a Location" in err.message


def test_redirect_to_a_private_address_is_refused_before_connecting(server):
    resolver = FakeResolver({"images.test": ["127.0.0.1"], "internal.test": ["10.0.0.1"]})
    url = server.url("/redirect-to?url=" + quote("http://internal.test/secret", safe=""), host="images.test")
    err = refused(url, allow_private=("images.test",), resolver=resolver)
    assert err.message == "image URL host resolves to a private address (10.0.0.1)"
    assert resolver.calls == ["images.test", "internal.test"]


def test_redirect_to_loopback_is_rechecked_even_when_the_first_host_was_allowed(server):
    resolver = FakeResolver({"images.test": ["127.0.0.1"]})
    target = server.url("/img.png")
    url = server.url("/redirect-to?url=" + quote(target, safe=""), host="images.test")
    err = refused(url, allow_private=("images.test",), resolver=resolver)
    assert "loopback address (127.0.0.1)" in err.message
    assert server.paths == ["/redirect-to?url=" + quote(target, safe="")]


def test_redirect_to_another_scheme_is_refused(server):
    err = refused(server.url("/redirect-to?url=" + quote("file:///etc/passwd", safe="")),
                  allow_private=LOOPBACK_ONLY)
    assert "not file" in err.message


def test_dns_rebinding_connects_to_the_address_that_was_checked(server, monkeypatch):
    """The second answer is private: a client that looked the name up again would get it."""
    resolver = FakeResolver({"rebind.test": [["127.0.0.1"], ["10.0.0.1"]]})
    system_lookups = []
    real_getaddrinfo = socket.getaddrinfo

    def recording_getaddrinfo(host, *args, **kwargs):
        system_lookups.append(host)
        return real_getaddrinfo(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)

    url = server.url("/img.png", host="rebind.test")
    assert fetch_image(url, max_bytes=1000, allow_private=LOOPBACK_ONLY, resolver=resolver) == ("image/png", PNG)
    assert resolver.calls == ["rebind.test"]
    assert "rebind.test" not in system_lookups
    assert server.seen[0][1]["host"] == f"rebind.test:{server.port}"


def test_dns_rebinding_is_caught_on_the_next_hop(server):
    """Each hop is resolved once and checked: the relative redirect's lookup gets 10.0.0.1."""
    resolver = FakeResolver({"rebind.test": [["127.0.0.1"], ["10.0.0.1"]]})
    err = refused(server.url("/redirect/2", host="rebind.test"), allow_private=LOOPBACK_ONLY, resolver=resolver)
    assert "private address (10.0.0.1)" in err.message
    assert resolver.calls == ["rebind.test", "rebind.test"]
    assert server.paths == ["/redirect/2"]


def test_a_dead_address_falls_back_to_the_next_checked_one(server):
    """Nothing listens on 127.0.0.2 (the server is bound to 127.0.0.1 only)."""
    resolver = FakeResolver({"multi.test": ["127.0.0.2", "127.0.0.1"]})
    url = server.url("/img.png", host="multi.test")
    assert fetch_image(url, max_bytes=1000, allow_private=LOOPBACK_ONLY, resolver=resolver) == ("image/png", PNG)


def test_connection_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))       # bound, never listening: connections are refused
        err = refused(f"http://127.0.0.1:{sock.getsockname()[1]}/img.png", allow_private=LOOPBACK_ONLY)
    assert err.message == "could not connect to the image host 127.0.0.1"


def test_oversize_refused_from_content_length_before_reading(server):
    err = refused(server.url("/big-declared"), allow_private=LOOPBACK_ONLY)
    assert err.message == "image is larger than 1000 bytes (FLOWCALL_MAX_IMAGE_BYTES)"
    assert err.fields == {"image_url.url": "image too large"}
    assert server.hung_up.wait(BOUNDED_WAIT_S)      # left while the body was stalled


def test_oversize_refused_while_streaming_a_chunked_body(server):
    err = refused(server.url("/big-chunked"), allow_private=LOOPBACK_ONLY)
    assert err.message == "image is larger than 1000 bytes (FLOWCALL_MAX_IMAGE_BYTES)"
    assert server.hung_up.wait(BOUNDED_WAIT_S)      # left before the body ended


@pytest.mark.parametrize("path", ["/slow-headers", "/slow-body", "/drip-body", "/drip-headers"])
def test_a_slow_server_is_cut_off_by_the_total_deadline(server, path):
    err = refused(server.url(path), allow_private=LOOPBACK_ONLY, read_timeout=30.0, total_timeout=0.3)
    assert err.message == "image download timed out"
    assert err.fields == {"image_url.url": "timed out"}
    assert server.hung_up.wait(BOUNDED_WAIT_S)


@pytest.mark.parametrize("path", ["/slow-headers", "/slow-body", "/drip-body"])
def test_the_deadline_holds_without_the_watchdog(server, path, monkeypatch):
    """Two layers: per-read socket timeouts capped by the time left, and the clock checked between
    chunks; the watchdog thread is the backstop for what those cannot see (a drip inside headers
    or the TLS handshake)."""
    monkeypatch.setattr(watchdog.Cutoff, "_fire", lambda self: None)
    err = refused(server.url(path), allow_private=LOOPBACK_ONLY, read_timeout=30.0, total_timeout=0.3)
    assert err.message == "image download timed out"
    assert server.hung_up.wait(BOUNDED_WAIT_S)


@pytest.mark.parametrize("path", ["/slow-headers", "/slow-body"])
def test_an_idle_server_is_cut_off_by_the_read_timeout(server, path):
    err = refused(server.url(path), allow_private=LOOPBACK_ONLY, read_timeout=0.2, total_timeout=30.0)
    assert err.message == "image download timed out"
    assert server.hung_up.wait(BOUNDED_WAIT_S)


def test_make_fetcher_uses_the_settings(server):
    fetch = make_fetcher(Settings(max_image_bytes=1000, allow_private_image_hosts=("127.0.0.1",),
                                  connect_timeout_s=1.0))
    assert fetch(server.url("/img.png")) == ("image/png", PNG)
    with pytest.raises(ImageRejected, match="larger than 1000 bytes"):
        fetch(server.url("/big-chunked"))
    with pytest.raises(ImageRejected, match="loopback"):
        make_fetcher(Settings())(server.url("/img.png"))


# -- what goes on the wire, through a recording connection class ------------------------------

class RecordingConnection:
    made: list[RecordingConnection]

    def __init__(self, host, port=None, **kwargs):
        self.host, self.port, self.kwargs = host, port, kwargs
        self.sock = None
        self.made.append(self)

    def connect(self):
        pass

    def request(self, method, url, body=None, headers=None, **kwargs):
        self.sent = (method, url, dict(headers or {}))

    def getresponse(self):
        return urllib3.response.HTTPResponse(body=io.BytesIO(PNG), headers={"Content-Type": "image/png"},
                                             status=200, preload_content=False, decode_content=False)

    def close(self):
        pass


@pytest.fixture
def recording(monkeypatch):
    made: list[RecordingConnection] = []
    monkeypatch.setattr(RecordingConnection, "made", made, raising=False)
    monkeypatch.setattr(pinned, "WatchedHTTPConnection", RecordingConnection)
    monkeypatch.setattr(pinned, "WatchedHTTPSConnection", RecordingConnection)
    return made


@pytest.mark.parametrize("url, resolved, dialled, host_header", [
    ("http://v6.example/cat.png", ["2606:4700::1"], ("2606:4700::1", 80), "v6.example"),
    ("http://[2606:4700::1]:8080/cat.png?s=1", None, ("2606:4700::1", 8080), "[2606:4700::1]:8080"),
    ("http://cdn.example:81/cat.png", ["93.184.216.34"], ("93.184.216.34", 81), "cdn.example:81"),
])
def test_dials_the_checked_address_and_sends_the_real_host(recording, url, resolved, dialled, host_header):
    resolver = FakeResolver({"v6.example": resolved, "cdn.example": resolved} if resolved else {})
    assert fetch_image(url, max_bytes=1000, resolver=resolver) == ("image/png", PNG)
    [conn] = recording
    assert (conn.host, conn.port) == dialled
    method, path, headers = conn.sent
    assert (method, path) == ("GET", "/" + url.split("/", 3)[3])
    assert headers["Host"] == host_header
    assert headers["Accept-Encoding"] == "identity"


def test_https_verifies_the_hostname_not_the_address(recording):
    resolver = FakeResolver({"images.example.com": ["93.184.216.34"]})
    fetch_image("https://images.example.com/cat.png", max_bytes=1000, resolver=resolver, ca_certs="/ca.pem")
    [conn] = recording
    assert conn.host == "93.184.216.34"
    assert conn.kwargs["server_hostname"] == conn.kwargs["assert_hostname"] == "images.example.com"
    assert conn.kwargs["cert_reqs"] == "CERT_REQUIRED" and conn.kwargs["ca_certs"] == "/ca.pem"


# -- real TLS against a throwaway CA ----------------------------------------------------------

def _issue_certificates(directory, hostname: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject, issuer, public_key, signing_key, *, ca: bool, san=None):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowcall test CA")])
    ca = build(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    leaf = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]), ca_name,
                 leaf_key.public_key(), ca_key, ca=False, san=hostname)
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (directory / "leaf.key").write_bytes(leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return directory / "ca.pem", directory / "leaf.pem", directory / "leaf.key"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    pytest.importorskip("cryptography")
    return _issue_certificates(tmp_path_factory.mktemp("tls"), "images.test")


@pytest.fixture
def tls_server(certificates):
    ca, leaf, key = certificates
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf, key)
    srv = _Server()
    srv.sni: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: srv.sni.append(name)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    thread = _serve(srv)
    yield srv, str(ca)
    srv.release.set()
    srv.shutdown()
    thread.join()
    srv.server_close()


def test_https_to_the_checked_address_with_sni_and_verification(tls_server):
    srv, ca = tls_server
    resolver = FakeResolver({"images.test": ["127.0.0.1"]})
    url = f"https://images.test:{srv.port}/img.png"
    assert fetch_image(url, max_bytes=1000, allow_private=LOOPBACK_ONLY, resolver=resolver,
                       ca_certs=ca) == ("image/png", PNG)
    assert srv.sni == ["images.test"]
    assert srv.seen[0][1]["host"] == f"images.test:{srv.port}"


def test_https_certificate_for_another_name_is_refused(tls_server):
    srv, ca = tls_server
    resolver = FakeResolver({"other.test": ["127.0.0.1"]})
    err = refused(f"https://other.test:{srv.port}/img.png", allow_private=LOOPBACK_ONLY,
                  resolver=resolver, ca_certs=ca)
    assert err.message == "image host's TLS certificate could not be verified for other.test"
    assert srv.seen == []


def test_https_from_an_untrusted_ca_is_refused(tls_server):
    srv, _ = tls_server
    resolver = FakeResolver({"images.test": ["127.0.0.1"]})
    err = refused(f"https://images.test:{srv.port}/img.png", allow_private=LOOPBACK_ONLY, resolver=resolver)
    assert "TLS certificate could not be verified" in err.message
