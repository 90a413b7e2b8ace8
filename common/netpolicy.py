"""Which addresses Vitrine may download from on someone else's say-so, and the allowlist that widens it.

The policy, for every URL Vitrine fetches that others chose (a query's image URL, a catalog's image URLs):

- A host is refused when ANY of its addresses is not public: loopback, private (RFC 1918, unique-local
  ``fc00::/7``), link-local (``169.254/16``, ``fe80::/10``), carrier-grade NAT (``100.64/10``), unspecified,
  multicast, broadcast, documentation, benchmarking and other reserved ranges, and the cloud metadata
  services (``169.254.169.254``, ``fd00:ec2::254``, ``100.100.100.200``, ``192.0.0.192``; the names
  ``metadata.google.internal``, ``metadata`` and a few more are refused before any lookup). IPv6 forms that
  carry an IPv4 address (mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) are judged
  by that IPv4 address; IPv6 outside global unicast ``2000::/3`` is refused.
- Unless the operator allows it in ``VITRINE_FETCH__ALLOW_HOSTS``: a hostname (``cdn.internal``), a subdomain
  wildcard (``*.cdn.internal``: the subdomains, not the domain itself), an address or a CIDR network
  (``10.20.0.0/16``). An allowed hostname may resolve to anything; otherwise each address must be public
  or inside an allowed network.

`resolve_checked` returns the addresses a connection may then use; `common.netfetch` connects to those and
no others. This module does no I/O but the DNS lookup, and imports no HTTP library (settings validate the
allowlist with it).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from common.errors import UnsafeURL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> addresses``: how hostnames are looked up (tests pass their own)."""

ALLOW_SETTING = "VITRINE_FETCH__ALLOW_HOSTS"
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
                            "instance-data.ec2.internal"})
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
    "fd00:ec2::254",  # AWS over IPv6
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",  # Oracle Cloud
))
_PRIVATE = "a private address"
_DOCUMENTATION = "a documentation address"
_V4_RANGES: tuple[tuple[IPNetwork, str], ...] = tuple((ipaddress.ip_network(n), reason) for n, reason in (
    ("0.0.0.0/8", "an unspecified ('this network') address"),
    ("10.0.0.0/8", _PRIVATE),
    ("100.64.0.0/10", "a carrier-grade NAT address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", _PRIVATE),
    ("192.0.0.0/24", "a reserved address (IETF protocol assignments)"),
    ("192.0.2.0/24", _DOCUMENTATION),
    ("192.88.99.0/24", "a reserved address (6to4 relay anycast)"),
    ("192.168.0.0/16", _PRIVATE),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", _DOCUMENTATION),
    ("203.0.113.0/24", _DOCUMENTATION),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "the broadcast address"),
    ("240.0.0.0/4", "a reserved address"),
))
_V6_RANGES: tuple[tuple[IPNetwork, str], ...] = tuple((ipaddress.ip_network(n), reason) for n, reason in (
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address"),
    ("64:ff9b:1::/48", "a private address (local-use NAT64)"),
    ("100::/64", "a reserved address (discard-only)"),
    ("2001::/32", "a reserved address (Teredo tunnelling)"),
    ("2001:db8::/32", _DOCUMENTATION),
    ("2001::/23", "a reserved address (IETF protocol assignments)"),
    ("3fff::/20", _DOCUMENTATION),
    ("fc00::/7", "a private (unique-local) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a private (site-local) address"),
    ("ff00::/8", "a multicast address"),
))
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOSTNAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


def address_risk(address: str | IPAddress) -> str | None:
    """Why ``address`` must not be fetched from ("a loopback address", ...), or None for a public address.

    IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4) are judged by the IPv4 address.

    Raises:
        ValueError: ``address`` is not an IP address.
    """
    ip = ipaddress.ip_address(address.split("%")[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).split("%")[0])
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata service address"
    if isinstance(ip, ipaddress.IPv4Address):
        return next((reason for network, reason in _V4_RANGES if ip in network), None)
    embedded, form = _embedded_ipv4(ip)
    if embedded is not None:
        risk = address_risk(embedded)
        return None if risk is None else f"{risk} ({form} {embedded})"
    reason = next((reason for network, reason in _V6_RANGES if ip in network), None)
    if reason is None and ip not in _GLOBAL_UNICAST_V6:
        reason = "a reserved address (outside global unicast 2000::/3)"
    return reason


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, str]:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64 of"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4 of"
    return None, ""


def _normal_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


@dataclass(frozen=True)
class Allowlist:
    """Hosts and networks that may be fetched although they are not public (``VITRINE_FETCH__ALLOW_HOSTS``)."""

    names: frozenset[str] = frozenset()
    """Exact hostnames, lower case, without a trailing dot."""
    suffixes: tuple[str, ...] = ()
    """``.cdn.internal`` for the entry ``*.cdn.internal``: its subdomains."""
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        """The allowlist of ``entries``: hostnames, ``*.`` wildcards, addresses, CIDR networks.

        Raises:
            ValueError: an entry that is none of these; the message names it.
        """
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for entry in entries:
            text = _normal_host(entry)
            try:
                networks.append(ipaddress.ip_network(text.strip("[]")))
                continue
            except ValueError as e:
                if "/" in text or text.replace(".", "").isdigit():
                    raise ValueError(f"allow_hosts entry {entry!r} is not a valid address or network ({e})") from e
            wildcard = text.startswith("*.")
            try:
                name = text.removeprefix("*.").encode("idna").decode("ascii")
            except UnicodeError:
                name = ""
            if not _HOSTNAME.match(name):
                raise ValueError(f"allow_hosts entry {entry!r} is not a hostname, *.domain wildcard, address or "
                                 "CIDR network (examples: cdn.internal, *.cdn.internal, 10.0.0.5, 10.20.0.0/16)")
            if wildcard:
                suffixes.append("." + name)
            else:
                names.add(name)
        return cls(names=frozenset(names), suffixes=tuple(suffixes), networks=tuple(networks))

    def allows_host(self, host: str) -> bool:
        """Whether the hostname ``host`` is allowed whatever it resolves to."""
        name = _normal_host(host)
        return name in self.names or name.endswith(self.suffixes)

    def allows_address(self, address: IPAddress) -> bool:
        """Whether ``address`` lies in an allowed network."""
        return any(address in network for network in self.networks)


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system resolver (``getaddrinfo``), in its order, without repeats.

    Raises:
        OSError: the name cannot be resolved.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_host(host: str, *, allow: Allowlist) -> None:
    """Refuse a host by its name alone (metadata names, non-public address literals); no DNS lookup.

    Raises:
        UnsafeURL: the host is refused; the message names it and the reason.
    """
    if allow.allows_host(host):
        return
    if _normal_host(host) in METADATA_HOSTS:
        raise UnsafeURL(f"host {host!r} is a cloud metadata service name; allow it with {ALLOW_SETTING}")
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return
    risk = None if allow.allows_address(ip) else address_risk(ip)
    if risk is not None:
        raise UnsafeURL(f"host {host!r} is {risk}; allow it with {ALLOW_SETTING}")


def resolve_checked(host: str, port: int, *, allow: Allowlist, resolve: Resolver = system_resolver) -> list[str]:
    """The addresses of ``host``, once each has been checked against the policy; connect to these only.

    Raises:
        UnsafeURL: the host is refused, or one of its addresses is; the message names both and the reason.
        OSError: the name cannot be resolved.
    """
    check_host(host, allow=allow)
    addresses = list(resolve(host, port))
    if not addresses:
        raise OSError(f"host {host!r} has no address")
    if allow.allows_host(host):
        return addresses
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        risk = None if allow.allows_address(ip) else address_risk(ip)
        if risk is not None:
            raise UnsafeURL(f"host {host!r} resolves to {address}, {risk}; allow it with {ALLOW_SETTING}")
    return addresses
