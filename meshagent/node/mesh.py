"""Mesh membership over the network: adverts by gossip, peer exchange, bootstrap, mDNS.

:class:`MeshService` is a trio service; ``run`` starts one task per duty:

* publish this node's signed advert on the gossip topic every interval;
* receive adverts from the topic and verify them (via :class:`Membership`);
* exchange adverts with each newly connected peer (``/meshagent/exchange/1``)
  and dial the peers learnt that way, so one bootstrap address is enough;
* keep dialling the configured bootstrap peers;
* dial peers found by mDNS;
* ping connected peers for their round-trip time;
* expire peers whose adverts stopped.

On exit it sends a signed goodbye to every connected peer.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Final

import trio

from meshagent.config import Config
from meshagent.errors import RemoteProtocolError
from meshagent.net.host import MeshHost, PublisherRate, Stream, split_p2p_addr
from meshagent.node.membership import Membership
from meshagent.protocol import exchange
from meshagent.protocol.exchange import EXCHANGE_PROTOCOL, MAX_EXCHANGE_BYTES, Bye, PeerExchange
from meshagent.protocol.signed import PeerId

__all__ = ["ADVERT_TOPIC", "MeshService"]

log = logging.getLogger(__name__)

ADVERT_TOPIC: Final = "meshagent/adverts/1"
_EXCHANGE_TIMEOUT_S: Final = 10.0
_RE_EXCHANGE_S: Final = 30.0
_MAX_DIALS_PER_ROUND: Final = 16
_MAX_CONNECTIONS: Final = 64
_RTT_REFRESH_S: Final = 15.0
_ADVERTS_PER_PUBLISHER: Final = 3.0
"""Gossiped adverts one publisher may have delivered per advert interval (it sends one, plus changes)."""
_MAX_ANNOUNCED_WAITING: Final = 16
"""mDNS address sets kept per peer while a dial to it is under way (the rest are dropped)."""


def _jittered(interval_s: float) -> float:
    """``interval_s`` ± 20 %: periodic work of nodes started together must not stay in step
    (synchronised bursts of adverts and pings would make every node busy at the same moment)."""
    return interval_s * random.uniform(0.8, 1.2)


class MeshService:
    def __init__(self, host: MeshHost, membership: Membership, config: Config) -> None:
        self._host = host
        self._members = membership
        self._config = config
        self._exchanged: dict[PeerId, float] = {}
        self._dialing: set[PeerId] = set()
        self._mdns_found: trio.MemorySendChannel[object] | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._host.set_handler(EXCHANGE_PROTOCOL, self._serve_exchange)
        try:
            rate = PublisherRate(per_s=_ADVERTS_PER_PUBLISHER / self._config.node.advert_interval_s, burst=4.0)
            async with self._host.subscribe(ADVERT_TOPIC, per_publisher=rate) as receive, trio.open_nursery() as nursery:
                nursery.start_soon(self._receive_adverts, receive)
                nursery.start_soon(self._publish_loop)
                nursery.start_soon(self._exchange_loop)
                nursery.start_soon(self._expire_loop)
                nursery.start_soon(self._ping_loop)
                for addr in self._config.net.bootstrap:
                    nursery.start_soon(self._bootstrap_loop, addr)
                if self._config.net.mdns:
                    await self._start_mdns(nursery)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self._say_goodbye()

    # --- adverts by gossip ---------------------------------------------------

    async def _publish_loop(self) -> None:
        while True:
            blob = self._members.refresh_own()
            try:
                await self._host.publish(ADVERT_TOPIC, blob)
            except Exception as exc:  # a failed publish is retried next round
                log.debug("publishing advert failed: %s", exc)
            await trio.sleep(_jittered(self._config.node.advert_interval_s))

    async def _receive_adverts(self, receive: object) -> None:
        while True:
            try:
                msg = await receive()  # type: ignore[operator]
            except trio.EndOfChannel:
                return
            self._members.accept(msg.data, via="gossip", source=msg.publisher)
            await trio.lowlevel.checkpoint()

    async def _expire_loop(self) -> None:
        while True:
            await trio.sleep(1.0)
            for peer in self._members.expire():
                self._exchanged.pop(peer, None)

    async def _ping_loop(self) -> None:
        """Measure each connected peer's round trip: new peers at once, known ones every
        ``_RTT_REFRESH_S`` (each ping is a new libp2p stream; round trips change slowly)."""
        pinged: dict[PeerId, float] = {}
        while True:
            await trio.sleep(_jittered(self._config.node.advert_interval_s))
            now = trio.current_time()
            for peer in list(pinged):
                if peer not in self._members.table:
                    del pinged[peer]
            for peer in list(self._members.table):
                if self._host.is_connected(peer) and now - pinged.get(peer, -_RTT_REFRESH_S) >= _RTT_REFRESH_S:
                    rtt = await self._host.ping(peer)
                    if rtt is not None:
                        self._members.record_rtt(peer, rtt)
                        pinged[peer] = now

    # --- peer exchange -------------------------------------------------------

    def _px_message(self) -> bytes:
        return exchange.encode(PeerExchange(tuple(self._members.known_adverts(self._config.net.max_peers_exchanged))))

    async def _serve_exchange(self, stream: Stream) -> None:
        with trio.fail_after(_EXCHANGE_TIMEOUT_S):
            msg = exchange.decode(await stream.receive_frame(MAX_EXCHANGE_BYTES))
            match msg:
                case PeerExchange(adverts):
                    await stream.send_frame(self._px_message())
                    self._take(adverts, source=stream.peer)
                    self._exchanged[stream.peer] = trio.current_time()
                case Bye(goodbye):
                    self._members.accept_goodbye(goodbye)
                    self._exchanged.pop(stream.peer, None)
        await stream.close()

    def _take(self, adverts: Sequence[bytes], *, source: PeerId) -> None:
        """Adverts from a peer exchange with ``source``: those of other peers count against its share."""
        for blob in adverts:
            self._members.accept(blob, via=f"exchange with {source}", source=source)

    async def rtt_probe(self) -> float | None:
        """Round trip of one peer-exchange request to a connected peer, in ms (a baseline)."""
        peers = self._host.connected_peers()
        if not peers:
            return None
        start = trio.current_time()
        ok = await self.exchange_with(sorted(peers)[0])
        return (trio.current_time() - start) * 1000.0 if ok else None

    async def exchange_with(self, peer: PeerId) -> bool:
        """Swap adverts with a connected peer; True on success."""
        try:
            with trio.fail_after(_EXCHANGE_TIMEOUT_S):
                stream = await self._host.open_stream(peer, EXCHANGE_PROTOCOL)
                try:
                    await stream.send_frame(self._px_message())
                    reply = exchange.decode(await stream.receive_frame(MAX_EXCHANGE_BYTES))
                finally:
                    await stream.close()
        except trio.TooSlowError:
            log.info("peer exchange with %s failed: no answer within %g s", peer, _EXCHANGE_TIMEOUT_S)
            return False
        except RemoteProtocolError as exc:
            log.info("peer exchange with %s failed: %s", peer, exc)
            return False
        except Exception as exc:  # stream errors of py-libp2p (often without a message): the peer may simply be gone
            log.debug("peer exchange with %s failed: %s", peer, str(exc) or type(exc).__name__)
            return False
        if isinstance(reply, PeerExchange):
            self._take(reply.adverts, source=peer)
            self._exchanged[peer] = trio.current_time()
            return True
        return False

    async def _exchange_loop(self) -> None:
        """Exchange with new connections, and dial the peers we learn about."""
        while True:
            now = trio.current_time()
            for peer in self._host.connected_peers():
                if now - self._exchanged.get(peer, -_RE_EXCHANGE_S) >= _RE_EXCHANGE_S:
                    await self.exchange_with(peer)
            await self._dial_known()
            with trio.move_on_after(1.0):
                await self._members.changed.wait()

    async def _dial_known(self) -> None:
        connected = set(self._host.connected_peers())
        if len(connected) >= _MAX_CONNECTIONS:
            return
        candidates = [p for p in self._members.table if p not in connected and p not in self._dialing]
        random.shuffle(candidates)
        async with trio.open_nursery() as nursery:
            for peer in candidates[:_MAX_DIALS_PER_ROUND]:
                nursery.start_soon(self._dial, peer, self._members.table[peer].advert.addrs)

    async def _dial(self, peer: PeerId, addrs: Sequence[str]) -> bool:
        if peer in self._dialing or peer == self._host.peer_id:
            return False
        self._dialing.add(peer)
        try:
            ok = await self._host.dial(peer, addrs)
            if ok and peer not in self._exchanged:
                await self.exchange_with(peer)
            return ok
        finally:
            self._dialing.discard(peer)

    async def _bootstrap_loop(self, addr: str) -> None:
        peer, dial_addr = split_p2p_addr(addr)
        delay = 0.5
        while True:
            if not self._host.is_connected(peer):
                if await self._dial(peer, [dial_addr]):
                    log.info("connected to bootstrap peer %s", addr)
                    delay = 0.5
                else:
                    delay = min(delay * 2, 15.0)
            await trio.sleep(delay)

    # --- mDNS ----------------------------------------------------------------

    async def _start_mdns(self, nursery: trio.Nursery) -> None:
        from meshagent.net.mdns import MdnsDiscovery, PeerFound

        send, receive = trio.open_memory_channel[object](256)
        mdns = MdnsDiscovery(
            peer_id=self._host.peer_id,
            addrs=lambda: self._host.addrs,
            events=send,
            interface=self._config.net.interface,
        )
        try:
            await nursery.start(mdns.run)
        except Exception as exc:  # no multicast here: bootstrap and peer exchange still work
            log.warning("mDNS discovery is unavailable: %s", exc)
            return

        announced: dict[PeerId, dict[tuple[str, ...], None]] = {}

        async def dial_announced(peer: PeerId) -> None:
            # mDNS is unauthenticated: a forged record for this peer id (refused by Noise, or held
            # open without an answer until the dial times out) must not make the node drop a
            # genuine record that arrives meanwhile. Each announced address set is dialled in turn.
            try:
                while announced[peer] and not self._host.is_connected(peer):
                    addrs = next(iter(announced[peer]))
                    del announced[peer][addrs]
                    await self._dial(peer, addrs)
            finally:
                del announced[peer]

        async def consume() -> None:
            async for event in receive:
                if not isinstance(event, PeerFound) or self._host.is_connected(event.peer_id):
                    continue
                waiting = announced.get(event.peer_id)
                if waiting is None:
                    announced[event.peer_id] = {event.addrs: None}
                    nursery.start_soon(dial_announced, event.peer_id)
                elif len(waiting) < _MAX_ANNOUNCED_WAITING:
                    waiting[event.addrs] = None

        nursery.start_soon(consume)

    # --- leaving -------------------------------------------------------------

    async def _say_goodbye(self) -> None:
        blob = exchange.encode(Bye(self._members.goodbye()))

        async def tell(peer: PeerId) -> None:
            with trio.move_on_after(1.0):
                try:
                    stream = await self._host.open_stream(peer, EXCHANGE_PROTOCOL)
                    await stream.send_frame(blob)
                    await stream.close()
                except Exception as exc:  # best effort: the peer will time us out anyway
                    log.debug("goodbye to %s failed: %s", peer, exc)

        async with trio.open_nursery() as nursery:
            for peer in self._host.connected_peers():
                nursery.start_soon(tell, peer)
