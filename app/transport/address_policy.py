"""Which addresses a guarded fetch (image downloads, job callbacks) may connect to: the SSRF policy.

A URL from whoever calls our API is fetched from inside the operator's network, so every host is
resolved exactly once and refused if ANY of its addresses is not public (loopback, private,
link-local and the cloud metadata address, CGNAT, unique-local, IPv4 hidden inside IPv6, ...);
the addresses returned are the ones to dial (pinned.py), never the name again. An operator's
allow-list (hostnames or CIDRs) exempts named hosts from the address check only.
"""
from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list]
Refuse = Callable[[str, str], Exception]    # (message, reason) -> the caller's own error

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Only these characters can make up the legacy IPv4 spellings inet_aton accepts (2130706433,
# 0177.0.0.1, 0x7f.1); inet_aton also ignores anything after a space, hence the full match.
_LEGACY_IPV4 = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)


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
    """Addresses and CIDRs become networks, anything else a hostname; a malformed CIDR is a
    ValueError (the caller names its setting) rather than a hostname nobody will ever match."""
    hostnames, networks = set(), []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            if "/" in entry:
                raise ValueError(f"{entry!r} is not a valid CIDR") from None
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


def resolve_checked(host: str, port: int, allow: AllowList, resolver: Resolver, *, refuse: Refuse,
                    subject: str) -> list[IPAddress]:
    """Resolve once and refuse if any address is not public: the list returned is what we dial.
    `subject` names the host in messages ("image URL host"); `refuse` makes the caller's error."""
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
