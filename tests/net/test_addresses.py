"""Address expansion and link classification, on synthetic interface lists."""

from __future__ import annotations

import ipaddress

import pytest

from meshagent.errors import ConfigError
from meshagent.net.addresses import (
    ConnectionPath,
    LocalAddress,
    concrete_addrs,
    interface_ipv4s,
    ip_of,
    is_on_link,
    is_private,
    is_wildcard,
    link_of,
    local_addresses,
    path_on_link,
)


def _addr(interface: str, cidr: str) -> LocalAddress:
    iface = ipaddress.ip_interface(cidr)
    return LocalAddress(interface=interface, ip=iface.ip, network=iface.network)


LAPTOP = (
    _addr("lo", "127.0.0.1/8"),
    _addr("lo", "::1/128"),
    _addr("wlan0", "192.168.1.23/24"),
    _addr("wlan0", "fd00::23/64"),
    _addr("wlan0", "fe80::23/64"),
    _addr("docker0", "172.17.0.1/16"),
)
LOOPBACK_ONLY = (_addr("lo", "127.0.0.1/8"), _addr("lo", "::1/128"))


def test_ipv4_wildcard_expands_to_every_non_loopback_address() -> None:
    got = concrete_addrs(["/ip4/0.0.0.0/tcp/4737"], local=LAPTOP)
    assert got == ("/ip4/192.168.1.23/tcp/4737", "/ip4/172.17.0.1/tcp/4737")


def test_ipv6_wildcard_skips_link_local_and_loopback() -> None:
    got = concrete_addrs(["/ip6/::/tcp/4737"], local=LAPTOP)
    assert got == ("/ip6/fd00::23/tcp/4737",)


def test_never_advertises_unspecified_addresses() -> None:
    got = concrete_addrs(["/ip4/0.0.0.0/tcp/1", "/ip6/::/tcp/1"], local=LAPTOP)
    assert got
    assert not any(is_wildcard(a) for a in got)
    assert not any("0.0.0.0" in a or "/ip6/::/" in a for a in got)


def test_interface_restricts_expansion() -> None:
    got = concrete_addrs(["/ip4/0.0.0.0/tcp/4737", "/ip6/::/tcp/4737"], interface="wlan0", local=LAPTOP)
    assert got == ("/ip4/192.168.1.23/tcp/4737", "/ip6/fd00::23/tcp/4737")


def test_unknown_interface_yields_nothing() -> None:
    assert concrete_addrs(["/ip4/0.0.0.0/tcp/1"], interface="tun9", local=LAPTOP) == ()


def test_loopback_only_machine_falls_back_to_loopback() -> None:
    got = concrete_addrs(["/ip4/0.0.0.0/tcp/4737"], local=LOOPBACK_ONLY)
    assert got == ("/ip4/127.0.0.1/tcp/4737",)


def test_explicit_loopback_listen_is_kept() -> None:
    got = concrete_addrs(["/ip4/127.0.0.1/tcp/4737"], local=LAPTOP)
    assert got == ("/ip4/127.0.0.1/tcp/4737",)


def test_explicit_addresses_pass_through_and_loopback_goes_last() -> None:
    got = concrete_addrs(
        ["/ip4/127.0.0.1/tcp/1", "/ip4/0.0.0.0/tcp/2", "/dns4/pi.local/tcp/3"],
        local=LAPTOP,
    )
    assert got[-1] == "/ip4/127.0.0.1/tcp/1"
    assert "/dns4/pi.local/tcp/3" in got
    assert "/ip4/192.168.1.23/tcp/2" in got
    # an explicit loopback listen does not pull loopback in for the wildcard
    assert "/ip4/127.0.0.1/tcp/2" not in got


def test_duplicates_removed_and_port_zero_dropped() -> None:
    got = concrete_addrs(
        ["/ip4/0.0.0.0/tcp/5", "/ip4/192.168.1.23/tcp/5", "/ip4/0.0.0.0/tcp/0"],
        local=LAPTOP,
    )
    assert got == ("/ip4/192.168.1.23/tcp/5", "/ip4/172.17.0.1/tcp/5")


@pytest.mark.parametrize("bad", ["garbage", "/ip4/1.2.3/tcp/1", "/ip4/1.2.3.4/tcp/99999"])
def test_bad_listen_address_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError):
        concrete_addrs([bad], local=LAPTOP)


def test_ip_of_and_wildcard() -> None:
    assert ip_of("/ip4/10.1.2.3/tcp/1") == ipaddress.ip_address("10.1.2.3")
    assert ip_of("/dns4/x.local/tcp/1") is None
    assert ip_of("not a multiaddr") is None
    assert is_wildcard("/ip6/::/tcp/1")
    assert not is_wildcard("/ip4/10.0.0.1/tcp/1")


def test_link_classification_uses_netmask() -> None:
    assert link_of("192.168.1.200", LAPTOP) == LAPTOP[2]
    assert is_on_link("/ip4/192.168.1.200/tcp/4737", LAPTOP)
    assert not is_on_link("/ip4/192.168.2.200/tcp/4737", LAPTOP)
    assert is_on_link("fe80::99%wlan0", LAPTOP)
    assert is_on_link("/ip6/fd00::99/tcp/1", LAPTOP)
    assert not is_on_link("/ip4/8.8.8.8/tcp/1", LAPTOP)
    assert not is_on_link("nonsense", LAPTOP)


def test_is_private() -> None:
    assert is_private("/ip4/10.77.0.2/tcp/1")
    assert is_private("192.168.0.1")
    assert is_private("fe80::1%eth0")
    assert is_private("127.0.0.1")
    assert not is_private("/ip4/1.1.1.1/tcp/1")
    assert not is_private("nonsense")


def test_real_machine_addresses_parse() -> None:
    """psutil output (including IPv6 masks and %zones) is understood."""
    local = local_addresses()
    assert any(a.is_loopback for a in local)
    for a in local:
        assert a.ip in a.network
    lo4 = interface_ipv4s("lo", local)
    assert "127.0.0.1" in lo4


def _path(remote: str | None, local: str | None, relayed: bool = False) -> ConnectionPath:
    ip = ipaddress.ip_address
    return ConnectionPath(remote=None if remote is None else ip(remote), local=None if local is None else ip(local),
                          relayed=relayed)


@pytest.mark.parametrize(
    ("remote", "local", "relayed", "lan"),
    [
        ("192.168.1.200", "192.168.1.23", False, True),   # a neighbour on the wifi
        ("fe80::99", "fe80::23", False, True),             # IPv6 link-local neighbour
        ("fd00::99", "fd00::23", False, True),
        ("::ffff:192.168.1.200", "::ffff:192.168.1.23", False, True),  # IPv4-mapped on a dual-stack socket
        ("127.0.0.1", "127.0.0.1", False, True),           # both ends on this host
        ("::1", "::1", False, True),
        ("192.168.1.23", "192.168.1.23", False, True),     # this host through its own LAN address
        ("192.168.1.200", "192.168.1.23", True, False),    # relayed: the relay's address says nothing
        ("127.0.0.1", "127.0.0.1", True, False),
        ("127.0.0.1", None, False, False),                 # loopback needs our end seen as loopback too
        ("127.0.0.1", "192.168.1.23", False, False),       # loopback to non-loopback
        ("192.168.1.200", "127.0.0.1", False, False),      # non-loopback to loopback
        ("172.17.0.5", "192.168.1.23", False, False),      # in one of our subnets, but not our end's
        ("8.8.8.8", "192.168.1.23", False, False),         # routed from elsewhere
        ("192.168.2.9", "192.168.1.23", False, False),
        ("172.17.0.5", None, False, True),                  # our end unknown: any of our subnets
        ("8.8.8.8", None, False, False),
        (None, "192.168.1.23", False, False),
        ("0.0.0.0", "192.168.1.23", False, False),
        ("224.0.0.251", "192.168.1.23", False, False),
    ],
)
def test_link_is_judged_from_the_connection(remote: str | None, local: str | None, relayed: bool, lan: bool) -> None:
    assert path_on_link(_path(remote, local, relayed), LAPTOP) is lan
