"""LAN discovery by mDNS, following the libp2p mDNS spec, as a trio service.

Spec: https://github.com/libp2p/specs/blob/master/discovery/mdns.md

* service type ``_p2p._udp.local.``;
* instance (peer) name: a random string of 32–63 characters, new on every
  start, so it reveals nothing and never collides with a previous run;
* one TXT string per address: ``dnsaddr=<multiaddr>/p2p/<peer id>``; A/AAAA
  records carry the same IPs for implementations that look at them.

Unlike py-libp2p 0.8.1's module (which announces the listen address as
given — ``/ip4/0.0.0.0/...`` — and packs addresses into ``dnsaddr``,
``dnsaddr2``, … keys), we announce only concrete addresses (from the
``addrs`` callable, normally :func:`meshagent.net.addresses.concrete_addrs`)
and repeat the ``dnsaddr`` key as the spec says. When *another* peer
announces a wildcard address, we substitute the IPs of its A/AAAA records.

Threads: python-zeroconf runs its own asyncio loop thread and calls browser
handlers on a browser thread. Those handlers only *forward* the change into
trio (``trio.from_thread.run_sync(send.send_nowait, ...)``); resolving,
parsing and bookkeeping happen in trio, and blocking zeroconf calls go
through ``trio.to_thread``. On exit — cancellation, Ctrl-C, or SIGTERM
turned into cancellation by the node — the service is unregistered, which
multicasts a goodbye so that peers drop us at once.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import secrets
import socket
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import base58
import trio
from multiaddr import Multiaddr
from multiaddr.exceptions import Error as MultiaddrError
from zeroconf import (
    Error as ZeroconfError,
    InterfaceChoice,
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from meshagent.errors import ConfigError, DecodeError, NodeError
from meshagent.net.addresses import interface_ipv4s, ip_of, local_addresses
from meshagent.protocol.signed import PeerId

__all__ = [
    "SERVICE_TYPE",
    "MAX_TXT_BYTES",
    "MAX_ADDRS_PER_PEER",
    "MAX_PEERS",
    "MAX_ANNOUNCE_BYTES",
    "MdnsUnavailable",
    "PeerFound",
    "PeerGone",
    "MdnsEvent",
    "MdnsDiscovery",
    "build_txt",
    "parse_txt",
    "random_instance_name",
]

logger = logging.getLogger(__name__)

SERVICE_TYPE: Final = "_p2p._udp.local."

MAX_TXT_BYTES: Final = 4096
"""A TXT record larger than this is dropped without being parsed."""
MAX_ADDRS_PER_PEER: Final = 16
"""Addresses beyond this many (announced or received) are ignored."""
MAX_PEERS: Final = 256
"""Announcements beyond this many live instances are ignored until some leave."""
MAX_ANNOUNCE_BYTES: Final = 1300
"""Our own TXT record stays below this, so that the answer fits one Ethernet frame."""
_MAX_PEER_ID_CHARS: Final = 128
_NAME_ALPHABET: Final = string.ascii_lowercase + string.digits
_CHANGE_QUEUE: Final = 512


class MdnsUnavailable(NodeError):
    """mDNS could not start (no multicast socket, port 5353 unusable, no such interface).

    The node can run on without it, discovering peers by bootstrap only.
    """


@dataclass(frozen=True, slots=True)
class PeerFound:
    """A peer announced itself (again, or with new addresses) on the LAN.

    ``addrs`` are transport multiaddrs without the ``/p2p/<id>`` suffix,
    e.g. ``/ip4/10.77.0.3/tcp/4737``; dial ``addr + "/p2p/" + peer_id``.
    mDNS is unauthenticated: anyone on the LAN can claim any peer id, so this
    is only a hint where to dial — Noise proves the id when connecting.
    """

    peer_id: PeerId
    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PeerGone:
    """A peer said goodbye on mDNS (clean shutdown) or its records expired.

    Emitted only when no other live announcement carries the same peer id (a
    restarted peer is back under a new instance name). Like every mDNS
    message a goodbye can be forged, so treat it as a hint: drop a peer at
    once only if it is not otherwise proven alive (an open connection,
    fresh adverts).
    """

    peer_id: PeerId


MdnsEvent: TypeAlias = PeerFound | PeerGone


@dataclass(frozen=True, slots=True)
class _Change:
    """A browser callback, as forwarded into trio."""

    name: str
    removed: bool


def random_instance_name() -> str:
    """A fresh random instance name of 32–63 characters (the spec's peer name)."""
    length = 32 + secrets.randbelow(32)
    return "".join(secrets.choice(_NAME_ALPHABET) for _ in range(length))


def _valid_peer_id(text: str) -> bool:
    """Whether ``text`` looks like a base58 libp2p peer id (identity or sha2-256 multihash)."""
    if not 1 <= len(text) <= _MAX_PEER_ID_CHARS:
        return False
    try:
        raw = base58.b58decode(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    return len(raw) >= 2 and raw[0] in (0x00, 0x12) and len(raw) == 2 + raw[1]


def build_txt(peer_id: str, addrs: Sequence[str]) -> bytes:
    """Our TXT record: one ``dnsaddr=<addr>/p2p/<peer id>`` string per address.

    Addresses that would not fit in one TXT string (255 bytes), or past
    :data:`MAX_ADDRS_PER_PEER` or the packet budget, are left out.
    """
    out = bytearray()
    count = 0
    for addr in addrs:
        entry = f"dnsaddr={addr}/p2p/{peer_id}".encode()
        if len(entry) > 255:
            logger.warning("not announcing %s over mDNS: longer than a TXT string", addr)
            continue
        if count == MAX_ADDRS_PER_PEER or len(out) + 1 + len(entry) > MAX_ANNOUNCE_BYTES:
            logger.warning("announcing only the first %d of %d addresses over mDNS", count, len(addrs))
            break
        out += bytes([len(entry)]) + entry
        count += 1
    return bytes(out)


def _txt_strings(text: bytes) -> list[bytes]:
    strings: list[bytes] = []
    i = 0
    while i < len(text):
        n = text[i]
        if i + 1 + n > len(text):
            raise DecodeError("TXT string runs past the end of the record")
        strings.append(text[i + 1 : i + 1 + n])
        i += 1 + n
    return strings


def _repair_wildcard(addr: str, host_ips: Sequence[str]) -> list[str]:
    """``/ip4/0.0.0.0/tcp/P`` -> one address per host IP of that family; others unchanged."""
    ip = ip_of(addr)
    if ip is None or not ip.is_unspecified:
        return [addr]
    _, proto, _, *tail = addr.split("/")
    rest = "/" + "/".join(tail) if tail else ""
    repaired = []
    for host in host_ips:
        try:
            host_ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        if host_ip.version == ip.version and not host_ip.is_unspecified and not host_ip.is_link_local:
            repaired.append(f"/{proto}/{host_ip}{rest}")
    return repaired


def parse_txt(text: bytes, host_ips: Sequence[str] = ()) -> tuple[PeerId, tuple[str, ...]]:
    """The peer id and transport addresses in a libp2p mDNS TXT record.

    Every ``dnsaddr=`` string must be a valid ``/ip4`` or ``/ip6`` multiaddr
    ending in the same ``/p2p/<peer id>``; strings that are not are skipped
    (and logged); other keys are ignored. A wildcard IP is replaced by the
    announcement's A/AAAA addresses (``host_ips``). Raises
    :class:`DecodeError` when nothing usable is left, the record is too
    large, or two peer ids are claimed.
    """
    if len(text) > MAX_TXT_BYTES:
        raise DecodeError(f"TXT record of {len(text)} bytes exceeds {MAX_TXT_BYTES}")
    peer_id: str | None = None
    addrs: list[str] = []
    for raw in _txt_strings(text):
        key, sep, value = raw.partition(b"=")
        # "dnsaddr2", "dnsaddr3", ...: py-libp2p 0.8 numbers repeated keys
        if key.lower().rstrip(b"0123456789") != b"dnsaddr" or not sep:
            continue
        try:
            full = value.decode("ascii")
            Multiaddr(full)
        except (UnicodeDecodeError, MultiaddrError, ValueError, TypeError):
            logger.debug("skipping malformed dnsaddr %r", value[:80])
            continue
        transport, marker, pid = full.rpartition("/p2p/")
        if not marker or not _valid_peer_id(pid) or not transport.startswith(("/ip4/", "/ip6/")):
            logger.debug("skipping dnsaddr without a direct address and peer id: %r", full[:120])
            continue
        if peer_id is None:
            peer_id = pid
        elif pid != peer_id:
            raise DecodeError(f"TXT record claims two peer ids: {peer_id} and {pid}")
        if len(addrs) < MAX_ADDRS_PER_PEER:
            addrs.extend(_repair_wildcard(transport, host_ips))
    usable = tuple(dict.fromkeys(addrs))[:MAX_ADDRS_PER_PEER]
    if peer_id is None or not usable:
        raise DecodeError("TXT record holds no usable dnsaddr")
    return PeerId(peer_id), usable


@dataclass(slots=True)
class _Instance:
    """What we know about one announced instance name (trio side only)."""

    generation: int = 0
    resolving: bool = False
    again: bool = False
    found: PeerFound | None = None


@dataclass(slots=True)
class _State:
    instances: dict[str, _Instance] = field(default_factory=dict)


class MdnsDiscovery:
    """Announce this node and report peers found or gone on the LAN.

    Run it in a nursery::

        send, receive = trio.open_memory_channel[MdnsEvent](64)
        mdns = MdnsDiscovery(peer_id, lambda: concrete_addrs(host_listen_addrs), send)
        await nursery.start(mdns.run)
        async for event in receive:
            match event:
                case PeerFound(peer_id, addrs): ...
                case PeerGone(peer_id): ...

    ``addrs`` is called in trio every ``refresh_s`` seconds; when its answer
    changes the announcement is updated. ``interface`` (``--interface``)
    restricts mDNS to that interface's sockets. Nothing starts before
    :meth:`run`; ``run`` returns when the receiver of ``events`` is closed.
    It raises :class:`MdnsUnavailable` (before ``task_status.started()``)
    when multicast sockets cannot be opened, and :class:`ConfigError` when
    ``interface`` has no address.
    """

    def __init__(
        self,
        peer_id: str,
        addrs: Callable[[], Sequence[str]],
        events: trio.MemorySendChannel[MdnsEvent],
        *,
        interface: str = "",
        service_type: str = SERVICE_TYPE,
        refresh_s: float = 10.0,
        resolve_timeout_s: float = 3.0,
        shutdown_timeout_s: float = 3.0,
    ) -> None:
        self.peer_id = PeerId(peer_id)
        self.instance_name = random_instance_name()
        self._addrs = addrs
        self._events = events
        self._interface = interface
        self._type = service_type
        self._refresh_s = refresh_s
        self._resolve_timeout_ms = int(resolve_timeout_s * 1000)
        self._shutdown_timeout_s = shutdown_timeout_s
        self._limiter = trio.CapacityLimiter(4)

    @property
    def service_name(self) -> str:
        return f"{self.instance_name}.{self._type}"

    # --- zeroconf side -----------------------------------------------------

    def _zeroconf_interfaces(self) -> tuple[list[str | int] | InterfaceChoice, IPVersion]:
        if not self._interface:
            return InterfaceChoice.All, IPVersion.V4Only
        local = local_addresses()
        ipv4s = interface_ipv4s(self._interface, local)
        if ipv4s:
            return list(ipv4s), IPVersion.V4Only
        if any(a.interface == self._interface and a.ip.version == 6 for a in local):
            try:
                return [socket.if_nametoindex(self._interface)], IPVersion.V6Only
            except OSError as exc:
                raise ConfigError(f"interface {self._interface!r}: {exc}") from exc
        raise ConfigError(f"interface {self._interface!r} has no IP address for mDNS")

    def _open(self) -> Zeroconf:
        interfaces, version = self._zeroconf_interfaces()
        try:
            return Zeroconf(interfaces=interfaces, ip_version=version)  # type: ignore[arg-type]
        except (OSError, RuntimeError, ValueError) as exc:
            raise MdnsUnavailable(f"cannot start mDNS: {exc}") from exc

    def _service_info(self, addrs: Sequence[str]) -> ServiceInfo:
        ips: list[bytes] = []
        for addr in addrs:
            ip = ip_of(addr)
            if ip is not None and not ip.is_unspecified and ip.packed not in ips:
                ips.append(ip.packed)
        port = 0
        for addr in addrs:
            parts = addr.split("/")
            if len(parts) > 4 and parts[3] in ("tcp", "udp") and parts[4].isdigit():
                port = int(parts[4])
                break
        return ServiceInfo(
            type_=self._type,
            name=self.service_name,
            port=port,
            properties=build_txt(self.peer_id, addrs),
            server=f"{self.instance_name}.local.",
            addresses=ips,
        )

    def _forwarder(
        self, send: trio.MemorySendChannel[_Change], token: trio.lowlevel.TrioToken
    ) -> Callable[..., None]:
        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            # Runs on zeroconf's browser thread: forward, nothing else.
            change = _Change(name=name, removed=state_change is ServiceStateChange.Removed)
            try:
                trio.from_thread.run_sync(send.send_nowait, change, trio_token=token)
            except (trio.RunFinishedError, trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                logger.debug("mDNS change for %s dropped (service stopping or queue full)", name)

        return on_change

    @staticmethod
    def _close(zc: Zeroconf, browser: ServiceBrowser | None, info: ServiceInfo | None) -> None:
        """Blocking: goodbye, then stop the browser and zeroconf's threads."""
        try:
            if info is not None:
                zc.unregister_service(info)  # multicasts the goodbye (TTL 0)
        except Exception:  # noqa: BLE001 - shutdown must go on; zeroconf raises broadly
            logger.exception("mDNS goodbye failed")
        if browser is not None:
            browser.cancel()
        zc.close()

    # --- trio side ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Announce, browse and report until cancelled; says goodbye on the way out."""
        token = trio.lowlevel.current_trio_token()
        change_send, change_receive = trio.open_memory_channel[_Change](_CHANGE_QUEUE)
        zc = await trio.to_thread.run_sync(self._open)
        browser: ServiceBrowser | None = None
        registered: list[ServiceInfo] = []
        try:
            try:
                browser = await trio.to_thread.run_sync(
                    functools.partial(ServiceBrowser, zc, self._type, handlers=[self._forwarder(change_send, token)])
                )
            except (OSError, RuntimeError) as exc:
                raise MdnsUnavailable(f"cannot browse {self._type}: {exc}") from exc
            logger.info("mDNS: browsing %s as %s", self._type, self.instance_name)
            task_status.started()
            state = _State()
            try:
                async with trio.open_nursery() as nursery, change_receive:
                    nursery.start_soon(self._announce_loop, zc, registered)
                    async for change in change_receive:
                        await self._on_change(nursery, zc, state, change)
            except* trio.BrokenResourceError:
                logger.info("mDNS: nobody receives our events any more; stopping")
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self._shutdown_timeout_s
                info = registered[-1] if registered else None
                await trio.to_thread.run_sync(
                    functools.partial(self._close, zc, browser, info), abandon_on_cancel=True
                )
                logger.info("mDNS: stopped%s", " (goodbye sent)" if info is not None else "")

    async def _announce_loop(self, zc: Zeroconf, registered: list[ServiceInfo]) -> None:
        """Register once we have addresses; re-announce whenever they change."""
        current: tuple[str, ...] = ()
        while True:
            addrs = tuple(self._addrs())
            if addrs and addrs != current:
                info = self._service_info(addrs)
                try:
                    if registered:
                        await trio.to_thread.run_sync(zc.update_service, info)
                        registered[-1] = info
                    else:
                        await trio.to_thread.run_sync(zc.register_service, info)
                        registered.append(info)
                except (ZeroconfError, OSError) as exc:
                    logger.warning("mDNS: announcing failed, will retry: %s", exc)
                else:
                    logger.info("mDNS: announcing %s", ", ".join(addrs))
                    current = addrs
            elif not addrs and not current:
                logger.warning("mDNS: no concrete address to announce yet")
            await trio.sleep(self._refresh_s)

    async def _on_change(self, nursery: trio.Nursery, zc: Zeroconf, state: _State, change: _Change) -> None:
        """Apply one browser change: resolve an added/updated instance, report a removed one."""
        if change.name == self.service_name:
            return
        inst = state.instances.get(change.name)
        if change.removed:
            if inst is None:
                return
            del state.instances[change.name]
            inst.generation += 1  # a resolve in flight for it is now stale
            if inst.found is not None:
                gone = inst.found.peer_id
                # a restarted peer may already be back under a new instance name
                if not any(i.found is not None and i.found.peer_id == gone for i in state.instances.values()):
                    await self._emit(PeerGone(gone))
            return
        if inst is None:
            if len(state.instances) >= MAX_PEERS:
                logger.warning("mDNS: ignoring %s, already tracking %d instances", change.name, MAX_PEERS)
                return
            inst = state.instances[change.name] = _Instance()
        if inst.resolving:
            inst.again = True
        else:
            inst.resolving = True
            nursery.start_soon(self._resolve, zc, state, change.name, inst)

    async def _resolve(self, zc: Zeroconf, state: _State, name: str, inst: _Instance) -> None:
        try:
            while True:
                inst.again = False
                generation = inst.generation
                get = functools.partial(zc.get_service_info, self._type, name, self._resolve_timeout_ms)
                try:
                    info = await trio.to_thread.run_sync(get, limiter=self._limiter, abandon_on_cancel=True)
                except Exception:  # noqa: BLE001 - task boundary; zeroconf raises broadly
                    logger.exception("mDNS: resolving %s failed", name)
                    info = None
                if inst.generation != generation or state.instances.get(name) is not inst:
                    return  # removed meanwhile
                event = None if info is None else self._found(name, info)
                if event is not None and event != inst.found:
                    inst.found = event
                    await self._emit(event)
                elif event is None and inst.found is None and not inst.again:
                    # Never usable: forget it, so junk cannot fill MAX_PEERS.
                    # A later announcement under this name starts afresh.
                    del state.instances[name]
                    return
                if not inst.again:
                    return
        finally:
            inst.resolving = False

    def _found(self, name: str, info: ServiceInfo) -> PeerFound | None:
        try:
            peer_id, addrs = parse_txt(info.text or b"", info.parsed_addresses())
        except DecodeError as exc:
            logger.info("mDNS: dropping announcement %s: %s", name, exc)
            return None
        if peer_id == self.peer_id:
            logger.warning("mDNS: %s announces our own peer id; another node with our identity?", name)
            return None
        return PeerFound(peer_id=peer_id, addrs=addrs)

    async def _emit(self, event: MdnsEvent) -> None:
        """Hand an event to the node; BrokenResourceError (receiver closed) stops :meth:`run`."""
        logger.debug("mDNS: %s", event)
        await self._events.send(event)
