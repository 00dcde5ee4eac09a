"""The libp2p host: TCP + Noise + Yamux, identify, ping and gossipsub.

:func:`open_host` builds a py-libp2p host from the node's identity, listens on
the requested addresses (falling back to the next free port when the default
is taken), announces concrete dialable addresses (never ``0.0.0.0``) and runs
gossipsub. It yields a :class:`MeshHost`, the small surface the rest of
meshagent uses: open a stream, serve a protocol, publish and subscribe, dial,
ping. py-libp2p types stay behind this module.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Final

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.connection_types import ConnectionType
from libp2p.crypto.ed25519 import Ed25519PrivateKey as Libp2pEd25519
from libp2p.crypto.keys import KeyPair
from libp2p.host.ping import PingService
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service.context import background_trio_service

from meshagent.errors import DecodeError, FrameTooLarge, NodeError
from meshagent.net.addresses import ConnectionPath, LocalAddress, concrete_addrs, local_addresses, path_on_link
from meshagent.node.identity import Identity
from meshagent.protocol.signed import PeerId

__all__ = [
    "GOSSIP_PROTOCOLS",
    "GossipMessage",
    "PublisherRate",
    "MeshHost",
    "Stream",
    "open_host",
    "pick_listen_addrs",
    "split_p2p_addr",
]

log = logging.getLogger(__name__)

GOSSIP_PROTOCOLS: Final = ("/meshsub/1.1.0", "/meshsub/1.0.0")
_PORT_FALLBACKS: Final = 10
_DIAL_TIMEOUT_S: Final = 10.0
_LISTEN_ATTEMPTS: Final = 5
_LOCAL_ADDRS_TTL_S: Final = 2.0
"""How long the list of this machine's addresses is reused when judging links (interfaces change rarely)."""

StreamHandler = Callable[["Stream"], Awaitable[None]]


def _keypair(identity: Identity) -> KeyPair:
    private = Libp2pEd25519.new(identity.seed())
    return KeyPair(private, private.get_public_key())


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_listen_addrs(listen: Sequence[str]) -> list[multiaddr.Multiaddr]:
    """Resolve the listen multiaddrs, moving a taken TCP port to the next free one."""
    out = []
    for text in listen:
        try:
            ma = multiaddr.Multiaddr(text)
            ip = ma.value_for_protocol("ip4") if "ip4" in text else ma.value_for_protocol("ip6")
            port = int(ma.value_for_protocol("tcp"))
        except Exception as exc:  # multiaddr raises many unrelated types for bad input
            raise NodeError(f"cannot listen on {text!r}: not a /ip4|ip6/.../tcp/PORT multiaddr ({exc})") from exc
        if port != 0 and not _port_free(ip, port):
            for candidate in range(port + 1, port + 1 + _PORT_FALLBACKS):
                if _port_free(ip, candidate):
                    log.info("port %d is taken; listening on %d", port, candidate)
                    port = candidate
                    break
            else:
                port = 0
        if port == 0:
            family = socket.AF_INET6 if "ip6" in text else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((ip, 0))
                port = s.getsockname()[1]
        proto = "ip6" if "ip6" in text else "ip4"
        out.append(multiaddr.Multiaddr(f"/{proto}/{ip}/tcp/{port}"))
    return out


def _ip(endpoint: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of a ``(host, port, ...)`` socket address, else None."""
    if not isinstance(endpoint, tuple) or not endpoint or not isinstance(endpoint[0], str):
        return None
    try:
        return ipaddress.ip_address(endpoint[0].split("%", 1)[0])
    except ValueError:
        return None


def _local_end(conn: INetConn) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Our end of a TCP connection. py-libp2p 0.8 exposes only the remote end, so follow its
    layers (Noise over the raw TCP stream) down to the socket; None when the layout differs."""
    layer: object = getattr(getattr(conn, "muxed_conn", None), "secured_conn", None)
    for attr in ("conn", "read_writer", "read_write_closer", "stream", "stream", "socket"):
        layer = getattr(layer, attr, None)
        if layer is None:
            return None
    try:
        return _ip(layer.getsockname())  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


def connection_path(conn: INetConn) -> ConnectionPath:
    """How ``conn`` reaches its peer: relayed or direct, and the IPs of both ends."""
    try:
        kind = conn.get_connection_type()
        circuit = any("p2p-circuit" in str(a) for a in conn.get_transport_addresses())
        remote = _ip(conn.muxed_conn.get_remote_address())  # type: ignore[attr-defined]
    except (AttributeError, OSError) as exc:
        log.debug("cannot tell how a connection is made: %s", exc)
        return ConnectionPath(remote=None, local=None, relayed=True)
    return ConnectionPath(remote=remote, local=_local_end(conn), relayed=kind is not ConnectionType.DIRECT or circuit)


def split_p2p_addr(addr: str) -> tuple[PeerId, str]:
    """``/ip4/1.2.3.4/tcp/5/p2p/ID`` → (ID, ``/ip4/1.2.3.4/tcp/5``)."""
    try:
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    except Exception as exc:  # multiaddr/libp2p raise assorted types on bad input
        raise NodeError(f"not a dialable /p2p/ multiaddr: {addr!r} ({exc})") from exc
    return PeerId(info.peer_id.to_base58()), str(info.addrs[0])


@dataclass(frozen=True, slots=True)
class GossipMessage:
    publisher: PeerId
    """The peer that published the message (gossipsub verified its signature)."""
    data: bytes


@dataclass(frozen=True, slots=True)
class PublisherRate:
    """How many messages one publisher may have delivered on a topic: ``burst`` at once, ``per_s`` after."""

    per_s: float
    burst: float


class _PublisherLimit:
    """A gossipsub topic validator: a token bucket per publisher (bounded; the least recently heard
    publisher is forgotten first)."""

    def __init__(self, rate: PublisherRate, clock: Callable[[], float], max_publishers: int = 4096) -> None:
        self._rate = rate
        self._clock = clock
        self._max = max_publishers
        self._buckets: dict[bytes, tuple[float, float]] = {}

    def __call__(self, forwarder: ID, msg: object) -> bool:
        publisher = bytes(getattr(msg, "from_id", b""))
        now = self._clock()
        tokens, stamp = self._buckets.pop(publisher, (self._rate.burst, now))
        tokens = min(self._rate.burst, tokens + (now - stamp) * self._rate.per_s)
        allowed = tokens >= 1.0
        self._buckets[publisher] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self._max:
            self._buckets.pop(next(iter(self._buckets)))
        return allowed


@dataclass(slots=True)
class Stream:
    """A libp2p stream with framed reads, hiding py-libp2p's stream type."""

    raw: INetStream
    peer: PeerId

    async def send(self, data: bytes) -> None:
        await self.raw.write(data)

    async def receive_exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = await self.raw.read(min(n - len(buf), 1 << 20))
            if not chunk:
                raise DecodeError(f"stream from {self.peer} ended after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    async def send_frame(self, payload: bytes) -> None:
        await self.raw.write(len(payload).to_bytes(4, "big") + payload)

    async def receive_frame_or_eof(self, max_size: int) -> bytes | None:
        """The next frame, or None when the peer closed the stream cleanly between frames."""
        first = await self.raw.read(4)
        if not first:
            return None
        header = first if len(first) == 4 else first + await self.receive_exactly(4 - len(first))
        size = int.from_bytes(header, "big")
        if size > max_size:
            raise FrameTooLarge(f"{self.peer} declared a frame of {size} bytes; the limit is {max_size}")
        return await self.receive_exactly(size)

    async def receive_frame(self, max_size: int) -> bytes:
        size = int.from_bytes(await self.receive_exactly(4), "big")
        if size > max_size:
            raise FrameTooLarge(f"{self.peer} declared a frame of {size} bytes; the limit is {max_size}")
        return await self.receive_exactly(size)

    async def close(self) -> None:
        try:
            await self.raw.close()
        except Exception as exc:  # closing a broken stream: nothing left to do but log
            log.debug("closing stream to %s: %s", self.peer, exc)

    async def reset(self) -> None:
        try:
            await self.raw.reset()
        except Exception as exc:  # same as close
            log.debug("resetting stream to %s: %s", self.peer, exc)


class MeshHost:
    """The subset of a libp2p host that meshagent uses."""

    def __init__(self, host: IHost, pubsub: Pubsub, identity: Identity, addrs: tuple[str, ...]) -> None:
        self._host = host
        self._pubsub = pubsub
        self._ping = PingService(host)
        self.peer_id: PeerId = identity.peer_id
        self.addrs = addrs
        """Concrete, dialable addresses (without the /p2p suffix)."""
        self._local: tuple[float, tuple[LocalAddress, ...]] = (-_LOCAL_ADDRS_TTL_S, ())

    @property
    def p2p_addrs(self) -> tuple[str, ...]:
        return tuple(f"{a}/p2p/{self.peer_id}" for a in self.addrs)

    def connected_peers(self) -> list[PeerId]:
        return [PeerId(p.to_base58()) for p in self._host.get_connected_peers()]

    def is_connected(self, peer: PeerId) -> bool:
        return peer in self.connected_peers()

    def connection_paths(self, peer: PeerId) -> tuple[ConnectionPath, ...]:
        """How each live connection to ``peer`` reaches it (none when not connected)."""
        try:
            conns = self._host.get_network().get_connections(ID.from_base58(peer))  # type: ignore[attr-defined]
        except ValueError:  # not a peer id
            return ()
        return tuple(connection_path(c) for c in conns)

    def on_link(self, peer: PeerId) -> bool:
        """Whether ``peer`` is reached directly on one of this machine's links, judged from the
        live connections to it (:func:`~meshagent.net.addresses.path_on_link`), never from what
        it advertises. Not connected: False."""
        paths = self.connection_paths(peer)
        if not paths:
            return False
        stamp, local = self._local
        now = time.monotonic()
        if now - stamp >= _LOCAL_ADDRS_TTL_S:
            local = local_addresses()
            self._local = (now, local)
        return any(path_on_link(p, local) for p in paths)

    def set_handler(self, protocol: str, handler: StreamHandler) -> None:
        async def wrapper(raw: INetStream) -> None:
            peer = PeerId(raw.muxed_conn.peer_id.to_base58())
            stream = Stream(raw, peer)
            try:
                await handler(stream)
            except Exception as exc:  # task boundary: one bad peer must not stop the node
                log.warning("%s handler for %s failed: %s", protocol, peer, exc, exc_info=log.isEnabledFor(logging.DEBUG))
                await stream.reset()

        self._host.set_stream_handler(protocol, wrapper)  # type: ignore[arg-type]

    async def open_stream(self, peer: PeerId, protocol: str) -> Stream:
        raw = await self._host.new_stream(ID.from_base58(peer), [protocol])  # type: ignore[list-item]
        return Stream(raw, peer)

    async def dial(self, peer: PeerId, addrs: Sequence[str], *, timeout: float = _DIAL_TIMEOUT_S) -> bool:
        """Connect to ``peer`` at one of ``addrs``; True when connected."""
        if peer == self.peer_id:
            return False
        if self.is_connected(peer):
            return True
        maddrs = []
        for a in addrs:
            try:
                maddrs.append(multiaddr.Multiaddr(a.split("/p2p/")[0]))
            except Exception:  # a peer may advertise an address we cannot parse
                log.debug("skipping unparseable address %r of %s", a, peer)
        if not maddrs:
            return False
        # Dial exactly these addresses, afresh: an address from an unauthenticated source (an mDNS
        # announcement anyone can spoof) that failed Noise must not stay in the peerstore ahead of
        # the genuine one, nor keep the peer in the negative dial cache.
        self._host.get_peerstore().clear_addrs(ID.from_base58(peer))
        self.forget_failures(peer)
        with trio.move_on_after(timeout):
            try:
                await self._host.connect(PeerInfo(ID.from_base58(peer), maddrs))
                return True
            except Exception as exc:  # py-libp2p raises many types on dial failure
                log.debug("dial %s at %s failed: %s", peer, addrs, exc)
        return False

    async def ping(self, peer: PeerId) -> float | None:
        """Round-trip time in milliseconds over the libp2p ping protocol, or None."""
        start = time.perf_counter()
        with trio.move_on_after(5):
            try:
                await self._ping.ping(ID.from_base58(peer), ping_amt=1)
                return (time.perf_counter() - start) * 1000.0
            except Exception as exc:  # ping failures are expected when peers vanish
                log.debug("ping %s failed: %s", peer, exc)
        return None

    async def publish(self, topic: str, data: bytes) -> None:
        await self._pubsub.publish(topic, data)

    @asynccontextmanager
    async def subscribe(
        self, topic: str, *, per_publisher: PublisherRate | None = None
    ) -> AsyncIterator[Callable[[], Awaitable[GossipMessage]]]:
        """Subscribe to a topic; yields ``receive()`` returning the next message (publisher and data).

        With ``per_publisher``, messages a publisher sends faster than that rate are
        dropped before they are queued or forwarded: py-libp2p holds at most 32
        undelivered messages per topic and drops the rest, so one flooding publisher
        would otherwise crowd every other publisher's messages out.
        """
        if per_publisher is not None:
            self._pubsub.set_topic_validator(topic, _PublisherLimit(per_publisher, trio.current_time), False)
        sub = await self._pubsub.subscribe(topic)

        async def receive() -> GossipMessage:
            msg = await sub.get()
            # gossipsub checks the publisher's signature over every message (strict signing).
            return GossipMessage(PeerId(ID(msg.from_id).to_base58()), bytes(msg.data))

        try:
            yield receive
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await self._pubsub.unsubscribe(topic)
                except Exception as exc:  # shutting down: log and go on
                    log.debug("unsubscribe %s: %s", topic, exc)

    def forget_failures(self, peer: PeerId) -> None:
        """Let ``peer`` be dialled again at once (it restarted, or came back on a healed link).

        py-libp2p keeps a peer whose addresses all failed in a 60 s negative dial
        cache; a peer that restarts after a crash (handoff recovery, results relay)
        must not wait that long.
        """
        unblock = getattr(self._host.get_network(), "unblock_peer", None)
        if unblock is None:  # a py-libp2p without the negative cache
            return
        try:
            unblock(ID.from_base58(peer))
        except ValueError as exc:  # not a peer id: nothing was cached for it
            log.debug("forget_failures(%r): %s", peer, exc)

    async def disconnect(self, peer: PeerId) -> None:
        try:
            await self._host.disconnect(ID.from_base58(peer))
        except Exception as exc:  # already gone
            log.debug("disconnect %s: %s", peer, exc)


@asynccontextmanager
async def open_host(identity: Identity, listen: Sequence[str], *, interface: str = "") -> AsyncIterator[MeshHost]:
    """Run a libp2p host for ``identity`` until the context exits.

    A port picked free can be taken by another process before libp2p binds it;
    then the ports are picked again (a few times) rather than failing.
    """
    # py-libp2p's yamux by default answers every read with a WINDOW_UPDATE frame, which
    # doubles the frames (and Noise encryptions) of every small request/response; go-yamux
    # batches credit until half the window is consumed. Use go-yamux's behaviour unless the
    # operator set py-libp2p's own tuning variable.
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
    for attempt in range(_LISTEN_ATTEMPTS):
        listen_addrs = pick_listen_addrs(listen)
        announce = concrete_addrs([str(a) for a in listen_addrs], interface=interface)
        host = new_host(
            key_pair=_keypair(identity),
            listen_addrs=listen_addrs,
            announce_addrs=[multiaddr.Multiaddr(a) for a in announce],
        )
        stack = AsyncExitStack()
        taken: OSError | None = None
        try:
            await stack.enter_async_context(host.run(listen_addrs))
        except* OSError as group:
            await stack.aclose()
            taken = group.exceptions[0]  # type: ignore[assignment]
        if taken is None:
            break
        if taken.errno != errno.EADDRINUSE or attempt == _LISTEN_ATTEMPTS - 1:
            raise NodeError(f"cannot listen on {', '.join(map(str, listen_addrs))}: {taken.strerror or taken}") from taken
        log.info("listen address taken meanwhile (%s); picking again", taken)
    gossip = GossipSub(
        protocols=list(GOSSIP_PROTOCOLS),  # type: ignore[arg-type]
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=1,
    )
    pubsub = Pubsub(host, gossip)
    async with stack:
        async with background_trio_service(pubsub), background_trio_service(gossip):
            await pubsub.wait_until_ready()
            yield MeshHost(host, pubsub, identity, tuple(announce))
