"""mDNS discovery: the TXT codec (pure) and two live services on loopback.

The live tests bind zeroconf to ``lo`` only (``interface="lo"``), so their
multicast never leaves the machine. Other processes on this machine may be
announcing too, so they only look at the peer ids they created.
"""

from __future__ import annotations

import math

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from meshagent.errors import DecodeError
from meshagent.net.mdns import (
    MAX_ADDRS_PER_PEER,
    MAX_ANNOUNCE_BYTES,
    MAX_TXT_BYTES,
    MdnsDiscovery,
    MdnsEvent,
    PeerFound,
    PeerGone,
    build_txt,
    parse_txt,
    random_instance_name,
)
from meshagent.protocol.signed import PeerId, peer_id_from_public_key


def new_peer_id() -> PeerId:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return peer_id_from_public_key(raw)


def txt(*strings: bytes) -> bytes:
    return b"".join(bytes([len(s)]) + s for s in strings)


# --- TXT codec ------------------------------------------------------------------


def test_build_follows_the_spec_and_parses_back() -> None:
    pid = new_peer_id()
    addrs = ("/ip4/10.77.0.2/tcp/4737", "/ip6/fd00::2/tcp/4737")
    record = build_txt(pid, addrs)
    # one TXT string per address, each "dnsaddr=<addr>/p2p/<id>"
    assert record == txt(*(f"dnsaddr={a}/p2p/{pid}".encode() for a in addrs))
    assert parse_txt(record) == (pid, addrs)


def test_build_caps_address_count_and_skips_overlong_entries() -> None:
    pid = new_peer_id()
    many = [f"/ip4/10.77.0.{i}/tcp/4737" for i in range(1, 40)]
    record = build_txt(pid, many)
    assert len(record) <= MAX_ANNOUNCE_BYTES
    kept = parse_txt(record)[1]
    assert 10 <= len(kept) <= MAX_ADDRS_PER_PEER
    assert kept == tuple(many[: len(kept)])  # the first ones, in order
    overlong = "/dns4/" + "a" * 240 + ".local/tcp/1"
    record = build_txt(pid, [overlong, "/ip4/10.77.0.9/tcp/1"])
    assert parse_txt(record) == (pid, ("/ip4/10.77.0.9/tcp/1",))


def test_malformed_strings_are_dropped_good_ones_kept() -> None:
    pid = new_peer_id()
    record = txt(
        b"dnsaddr=/ip4/10.77.0.2/tcp/1/p2p/" + pid.encode(),
        b"dnsaddr=/ip4/999.1.1.1/tcp/1/p2p/" + pid.encode(),  # bad multiaddr
        b"dnsaddr=/ip4/10.77.0.3/tcp/1",  # no peer id
        b"dnsaddr=/ip4/10.77.0.4/tcp/1/p2p/notapeerid0OIl",  # bad peer id
        b"dnsaddr=/dns4/evil.example/tcp/1/p2p/" + pid.encode(),  # not a direct address
        b"dnsaddr=\xff\xfe/p2p/" + pid.encode(),  # not ascii
        b"other=thing",
        b"novalue",
    )
    assert parse_txt(record) == (pid, ("/ip4/10.77.0.2/tcp/1",))


def test_two_peer_ids_in_one_record_are_rejected() -> None:
    record = txt(
        b"dnsaddr=/ip4/10.77.0.2/tcp/1/p2p/" + new_peer_id().encode(),
        b"dnsaddr=/ip4/10.77.0.3/tcp/1/p2p/" + new_peer_id().encode(),
    )
    with pytest.raises(DecodeError, match="two peer ids"):
        parse_txt(record)


@pytest.mark.parametrize(
    "record",
    [
        b"",
        txt(b"hello=world"),
        b"\x40dnsaddr=/ip4/1.2.3.4",  # length byte runs past the end
        txt(b"dnsaddr=/ip4/10.0.0.1/tcp/1/p2p/x") * (MAX_TXT_BYTES // 30),  # oversized
    ],
)
def test_unusable_records_raise_decode_error(record: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_txt(record)


def test_wildcard_announcement_is_repaired_from_a_records() -> None:
    """py-libp2p 0.8 announces 0.0.0.0 under numbered keys; we use its A records."""
    pid = new_peer_id()
    record = txt(
        b"dnsaddr=/ip4/0.0.0.0/tcp/4001/p2p/" + pid.encode(),
        b"dnsaddr2=/ip4/10.77.0.5/tcp/4002/p2p/" + pid.encode(),
    )
    got = parse_txt(record, host_ips=["10.77.0.5", "10.77.0.6", "fd00::5"])
    assert got == (pid, ("/ip4/10.77.0.5/tcp/4001", "/ip4/10.77.0.6/tcp/4001", "/ip4/10.77.0.5/tcp/4002"))
    only_wildcard = txt(b"dnsaddr=/ip4/0.0.0.0/tcp/4001/p2p/" + pid.encode())
    with pytest.raises(DecodeError):
        parse_txt(only_wildcard)  # no A records: nothing dialable


@given(st.binary(max_size=2 * MAX_TXT_BYTES), st.lists(st.text(max_size=50), max_size=4))
def test_random_bytes_raise_only_decode_error(record: bytes, host_ips: list[str]) -> None:
    try:
        pid, addrs = parse_txt(record, host_ips)
    except DecodeError:
        return
    assert addrs and all(a.startswith(("/ip4/", "/ip6/")) for a in addrs)
    assert len(addrs) <= MAX_ADDRS_PER_PEER


def test_instance_names_are_random_and_within_spec() -> None:
    names = {random_instance_name() for _ in range(50)}
    assert len(names) == 50
    assert all(32 <= len(n) <= 63 and n.isalnum() for n in names)


# --- live, on loopback --------------------------------------------------------------


async def next_about(receive: trio.MemoryReceiveChannel[MdnsEvent], peer_id: PeerId) -> MdnsEvent:
    """The next event about ``peer_id``; events about other announcers on this host are skipped."""
    async for event in receive:
        if event.peer_id == peer_id:
            return event
    raise AssertionError("event channel closed")


def loopback_service(
    peer_id: PeerId, addrs: list[str], send: trio.MemorySendChannel[MdnsEvent], **kwargs: float
) -> MdnsDiscovery:
    return MdnsDiscovery(peer_id, lambda: tuple(addrs), send, interface="lo", **kwargs)


async def test_two_services_discover_each_other_and_see_goodbye() -> None:
    a_id, b_id = new_peer_id(), new_peer_id()
    a_send, a_receive = trio.open_memory_channel[MdnsEvent](math.inf)
    b_send, b_receive = trio.open_memory_channel[MdnsEvent](math.inf)
    a = loopback_service(a_id, ["/ip4/127.0.0.1/tcp/40001"], a_send)
    b = loopback_service(b_id, ["/ip4/127.0.0.1/tcp/40002"], b_send)
    with trio.fail_after(20):  # generous: registration probing alone takes ~1.7 s
        async with trio.open_nursery() as outer:
            await outer.start(a.run)
            async with trio.open_nursery() as inner:
                await inner.start(b.run)
                assert await next_about(a_receive, b_id) == PeerFound(b_id, ("/ip4/127.0.0.1/tcp/40002",))
                assert await next_about(b_receive, a_id) == PeerFound(a_id, ("/ip4/127.0.0.1/tcp/40001",))
                inner.cancel_scope.cancel()  # b stops: it must say goodbye
            # PeerGone arrives from b's goodbye packet, long before any TTL (120 s) expiry
            assert await next_about(a_receive, b_id) == PeerGone(b_id)
            outer.cancel_scope.cancel()
    # a never reported itself
    a_send.close()
    leftover = [event async for event in a_receive]
    assert all(event.peer_id != a_id for event in leftover)


async def test_address_change_is_reannounced() -> None:
    a_id, b_id = new_peer_id(), new_peer_id()
    a_send, a_receive = trio.open_memory_channel[MdnsEvent](math.inf)
    b_send, _b_receive = trio.open_memory_channel[MdnsEvent](math.inf)
    b_addrs = ["/ip4/127.0.0.1/tcp/40012"]
    a = loopback_service(a_id, ["/ip4/127.0.0.1/tcp/40011"], a_send)
    b = loopback_service(b_id, b_addrs, b_send, refresh_s=0.2)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            assert await next_about(a_receive, b_id) == PeerFound(b_id, ("/ip4/127.0.0.1/tcp/40012",))
            b_addrs[:] = ["/ip4/127.0.0.1/tcp/40013", "/ip4/127.0.0.2/tcp/40013"]
            assert await next_about(a_receive, b_id) == PeerFound(
                b_id, ("/ip4/127.0.0.1/tcp/40013", "/ip4/127.0.0.2/tcp/40013")
            )
            nursery.cancel_scope.cancel()


async def test_run_returns_when_the_receiver_is_closed() -> None:
    a_id, b_id = new_peer_id(), new_peer_id()
    a_send, a_receive = trio.open_memory_channel[MdnsEvent](0)
    b_send, _b_receive = trio.open_memory_channel[MdnsEvent](math.inf)
    a = loopback_service(a_id, ["/ip4/127.0.0.1/tcp/40021"], a_send)
    b = loopback_service(b_id, ["/ip4/127.0.0.1/tcp/40022"], b_send)
    a_receive.close()  # nobody will ever read a's events
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(b.run)
            await a.run()  # returns once it has something to report and no one to tell
            nursery.cancel_scope.cancel()


async def test_foreign_announcements_are_filtered_and_repaired() -> None:
    """Junk and our own id are dropped; a py-libp2p-style 0.0.0.0 announcement is repaired."""
    import socket

    from zeroconf import ServiceInfo, Zeroconf

    from meshagent.net.mdns import SERVICE_TYPE

    a_id, libp2p_id, junk1, junk2 = new_peer_id(), new_peer_id(), new_peer_id(), new_peer_id()

    def info(name: str, text: bytes) -> ServiceInfo:
        return ServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            port=40031,
            properties=text,
            server=f"{name}.local.",
            addresses=[socket.inet_aton("127.0.0.1")],
        )

    foreign = [
        # py-libp2p 0.8.1: wildcard address, numbered keys, real IP only in the A record
        info("libp2plike" + "x" * 30, txt(b"dnsaddr=/ip4/0.0.0.0/tcp/40031/p2p/" + libp2p_id.encode())),
        # claims two identities at once
        info("junk" + "y" * 30, txt(
            b"dnsaddr=/ip4/127.0.0.1/tcp/1/p2p/" + junk1.encode(),
            b"dnsaddr=/ip4/127.0.0.1/tcp/2/p2p/" + junk2.encode(),
        )),
        # another process announcing *our* peer id (a copied identity)
        info("twin" + "z" * 30, txt(b"dnsaddr=/ip4/127.0.0.1/tcp/3/p2p/" + a_id.encode())),
    ]
    a_send, a_receive = trio.open_memory_channel[MdnsEvent](math.inf)
    a = loopback_service(a_id, ["/ip4/127.0.0.1/tcp/40030"], a_send)
    zc = await trio.to_thread.run_sync(lambda: Zeroconf(interfaces=["127.0.0.1"]))
    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                await nursery.start(a.run)
                async with trio.open_nursery() as registering:
                    for service in foreign:
                        registering.start_soon(trio.to_thread.run_sync, zc.register_service, service)
                assert await next_about(a_receive, libp2p_id) == PeerFound(libp2p_id, ("/ip4/127.0.0.1/tcp/40031",))
                # give the other two announcements the same time to (not) show up
                await trio.sleep(1.0)
                nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(zc.close)
    a_send.close()
    reported = {event.peer_id async for event in a_receive}
    assert not reported & {a_id, junk1, junk2}
