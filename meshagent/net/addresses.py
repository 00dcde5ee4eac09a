"""Concrete, dialable addresses of this machine, and where a peer's address lies.

A libp2p host listens on wildcard addresses (``/ip4/0.0.0.0/tcp/P``,
``/ip6/::/tcp/P``) but must never *advertise* them: no peer can dial
``0.0.0.0``. :func:`concrete_addrs` expands wildcards into the addresses of
this machine's interfaces (read with psutil), optionally restricted to one
interface (``--interface``, for hosts with docker or VPN interfaces).

Rules for wildcard expansion:

* interfaces that are down are skipped;
* IPv6 link-local addresses (``fe80::/10``) are skipped: their zone is the
  *dialer's* interface, which we cannot know, so they are only advertised
  when the listen address names one explicitly (``/ip6zone/...``);
* loopback is included only when no other address exists (a machine or a
  network namespace with nothing but ``lo``) or when the listen address is a
  loopback address itself;
* explicit (non-wildcard) listen addresses are kept as they are.

:func:`link_of` and :func:`is_on_link` tell whether a peer's IP lies in one of
our own subnets (by netmask). :func:`path_on_link` decides the ``lan`` privacy
class — "peer reached directly on the local link" — from a live connection
(:class:`ConnectionPath`: the remote and local IPs the kernel reports, and
whether the connection is relayed), never from addresses a peer wrote about
itself:

* a relayed connection is never on the link (the relay's address says nothing
  of where the peer is);
* a loopback peer is on the link only when our end is loopback too (both ends
  on this host);
* otherwise the remote IP must lie in the subnet of the interface our end of
  the connection is on (any of our subnets when our end is unknown).

A process on this host that forwards a remote peer's connection (a tunnel, a
local proxy) makes that peer look local; that is the host owner's choice.

The functions that decide take the list of local addresses as an argument
(defaulting to :func:`local_addresses`), so they can be tested without a
network.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

import psutil
from multiaddr import Multiaddr
from multiaddr.exceptions import Error as MultiaddrError

from meshagent.errors import ConfigError

__all__ = [
    "IPAddress",
    "LocalAddress",
    "ConnectionPath",
    "path_on_link",
    "local_addresses",
    "interface_names",
    "check_interface",
    "interface_ipv4s",
    "concrete_addrs",
    "ip_of",
    "is_wildcard",
    "link_of",
    "is_on_link",
    "is_private",
]

logger = logging.getLogger(__name__)

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

_IP_PROTOCOLS: Final = ("ip4", "ip6")


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """One IP address of one of this machine's interfaces."""

    interface: str
    ip: IPAddress
    network: IPNetwork
    """The subnet the address is on, from its netmask (``/32`` or ``/128`` when unknown)."""

    @property
    def is_loopback(self) -> bool:
        return self.ip.is_loopback

    @property
    def is_link_local(self) -> bool:
        return self.ip.is_link_local


def _parse_local(interface: str, address: str, netmask: str | None) -> LocalAddress | None:
    # psutil writes IPv6 link-local addresses with their zone: "fe80::1%eth0".
    bare = address.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(bare)
        # ipaddress takes dotted IPv4 masks but not IPv6 ones ("ffff:ffff::"):
        # count the mask's bits instead.
        prefix = bin(int(ipaddress.ip_address(netmask))).count("1") if netmask else ip.max_prefixlen
        network = ipaddress.ip_network(f"{bare}/{prefix}", strict=False)
    except ValueError:
        logger.debug("ignoring unparsable address %r/%r on %s", address, netmask, interface)
        return None
    return LocalAddress(interface=interface, ip=ip, network=network)


def local_addresses(*, include_down: bool = False) -> tuple[LocalAddress, ...]:
    """The IPv4 and IPv6 addresses of this machine's interfaces that are up."""
    stats = psutil.net_if_stats()
    result: list[LocalAddress] = []
    for name, addrs in psutil.net_if_addrs().items():
        if not include_down and not (name in stats and stats[name].isup):
            continue
        for snic in addrs:
            if snic.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            local = _parse_local(name, snic.address, snic.netmask)
            if local is not None:
                result.append(local)
    return tuple(result)


def interface_names() -> tuple[str, ...]:
    """Names of every network interface of this machine, up or down."""
    return tuple(psutil.net_if_addrs())


def check_interface(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is an interface of this machine."""
    names = interface_names()
    if name not in names:
        raise ConfigError(f"no network interface named {name!r} (have: {', '.join(sorted(names))})")


def interface_ipv4s(name: str, local: Sequence[LocalAddress] | None = None) -> tuple[str, ...]:
    """The IPv4 addresses of interface ``name`` (what zeroconf's ``interfaces=`` takes)."""
    local = local_addresses() if local is None else local
    return tuple(str(a.ip) for a in local if a.interface == name and a.ip.version == 4)


def _split(addr: str) -> tuple[str, IPAddress, str] | None:
    """``/ip4/1.2.3.4/tcp/5`` -> ("ip4", 1.2.3.4, "/tcp/5").

    ``None`` for a valid multiaddr that does not start with an IP (``/dns4``,
    ``/ip6zone``); raises ValueError for anything that is not a multiaddr.
    """
    try:
        Multiaddr(addr)
    except (MultiaddrError, ValueError, TypeError) as exc:
        raise ValueError(f"not a multiaddr: {addr!r}") from exc
    parts = addr.split("/")
    if len(parts) < 3 or parts[1] not in _IP_PROTOCOLS:
        return None
    rest = "/" + "/".join(parts[3:]) if len(parts) > 3 else ""
    return parts[1], ipaddress.ip_address(parts[2]), rest


def ip_of(addr: str) -> IPAddress | None:
    """The IP address a multiaddr starts with (``/ip4`` or ``/ip6``), else ``None``."""
    try:
        split = _split(addr)
    except ValueError:
        return None
    return None if split is None else split[1]


def _is_loopback(addr: str) -> bool:
    ip = ip_of(addr)
    return ip is not None and ip.is_loopback


def is_wildcard(addr: str) -> bool:
    """Whether a multiaddr listens on every interface (``0.0.0.0`` or ``::``)."""
    ip = ip_of(addr)
    return ip is not None and ip.is_unspecified


def _has_zero_port(rest: str) -> bool:
    parts = rest.split("/")
    return len(parts) >= 3 and parts[1] in ("tcp", "udp") and parts[2] == "0"


def concrete_addrs(
    listen: Iterable[str],
    *,
    interface: str = "",
    local: Sequence[LocalAddress] | None = None,
) -> tuple[str, ...]:
    """The dialable multiaddrs for ``listen`` (the *bound* listen addresses).

    Wildcards are expanded to this machine's addresses (only those of
    ``interface`` when it is given); explicit addresses are kept. The result
    never holds ``0.0.0.0``, ``::`` or port 0, has no duplicates and puts
    loopback addresses last. Unparsable listen addresses raise
    :class:`ConfigError`.
    """
    local = local_addresses() if local is None else local
    if interface:
        local = [a for a in local if a.interface == interface]
    explicit: list[str] = []
    expanded: list[str] = []
    expanded_loopback: list[str] = []
    for addr in listen:
        try:
            split = _split(addr)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if split is None:
            explicit.append(addr)
            continue
        proto, ip, rest = split
        if _has_zero_port(rest):
            logger.warning("not advertising %s: port 0 is not dialable (pass the bound address)", addr)
            continue
        if not ip.is_unspecified:
            explicit.append(addr)
            continue
        for a in local:
            if a.ip.version != ip.version or a.is_link_local:
                continue
            concrete = f"/{proto}/{a.ip}{rest}"
            (expanded_loopback if a.is_loopback else expanded).append(concrete)
    if not expanded and all(_is_loopback(a) for a in explicit):
        # Nothing but loopback here (a bare namespace, a laptop offline):
        # loopback is then the only address anyone on this machine can dial.
        expanded = expanded_loopback
    ordered = sorted(explicit + expanded, key=_is_loopback)  # stable: loopback last
    return tuple(dict.fromkeys(ordered))


def link_of(ip: IPAddress | str, local: Sequence[LocalAddress] | None = None) -> LocalAddress | None:
    """Our address whose subnet holds ``ip`` (the peer is on that link), else ``None``.

    IPv6 link-local peers are on-link when we have a link-local address too.
    Loopback peers are on the loopback link (same machine). Host-only
    networks (``/32``, ``/128``) only match our own address.
    """
    if isinstance(ip, str):
        try:
            ip = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return None
    local = local_addresses() if local is None else local
    for a in local:
        if a.ip.version == ip.version and ip in a.network:
            return a
    return None


def is_on_link(addr: str, local: Sequence[LocalAddress] | None = None) -> bool:
    """Whether a peer's multiaddr (or bare IP) lies in one of our subnets."""
    ip = ip_of(addr) if addr.startswith("/") else None
    target: IPAddress | str = ip if ip is not None else addr
    return link_of(target, local) is not None


@dataclass(frozen=True, slots=True)
class ConnectionPath:
    """How one live connection reaches a peer, as this machine's kernel and libp2p report it."""

    remote: IPAddress | None
    """The peer's end of the connection (None when unknown)."""
    local: IPAddress | None
    """Our end of the connection (None when unknown)."""
    relayed: bool
    """Carried by a relay (circuit v2), or of a kind libp2p cannot call direct."""


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def path_on_link(path: ConnectionPath, local: Sequence[LocalAddress] | None = None) -> bool:
    """Whether this connection reaches its peer directly on one of our links (see the module docstring)."""
    if path.relayed or path.remote is None:
        return False
    remote = _unmapped(path.remote)
    ours = None if path.local is None else _unmapped(path.local)
    if remote.is_unspecified or remote.is_multicast:
        return False
    if remote.is_loopback:
        return ours is not None and ours.is_loopback
    if ours is not None and ours.is_loopback:
        return False  # a non-loopback peer on our loopback end: not a path the kernel makes
    local = local_addresses() if local is None else local
    if ours is None:
        return link_of(remote, local) is not None
    return any(a.ip == ours and remote in a.network for a in local)


def is_private(ip: IPAddress | str) -> bool:
    """Whether an IP (or multiaddr) is not globally routable: RFC 1918, ULA, loopback, link-local."""
    if isinstance(ip, str):
        parsed = ip_of(ip) if ip.startswith("/") else None
        if parsed is None:
            try:
                parsed = ipaddress.ip_address(ip.split("%", 1)[0])
            except ValueError:
                return False
        ip = parsed
    return ip.is_private or ip.is_loopback or ip.is_link_local
