"""This node's view of the mesh: verified adverts from peers, and its own advert.

Every advert blob — from gossip, from peer exchange — goes through
:meth:`Membership.accept`, which verifies it before anything else and feeds the
pure :class:`~meshagent.protocol.peers.PeerTable`. Bad input is dropped and
logged; the table is then unchanged. Adverts longer-lived than this node's own
``advert_ttl_s`` are refused; the table is bounded, with a share per relaying
peer, and never evicts the owner's paired devices to make room.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshagent.errors import DuplicateIdentityError, RemoteProtocolError
from meshagent.protocol.advert import (
    MAX_ADVERT_TTL_S,
    Advert,
    Goodbye,
    decode_advert,
    decode_goodbye,
    encode_advert,
    encode_goodbye,
)
from meshagent.protocol.peers import MAX_PEERS, MAX_PER_SOURCE, Outcome, PeerTable
from meshagent.protocol.signed import PeerId
from meshagent.node.identity import Identity

__all__ = ["Membership"]

log = logging.getLogger(__name__)


class Membership:
    def __init__(
        self,
        identity: Identity,
        build_advert: Callable[[int, float, bytes, float], Advert],
        *,
        on_duplicate: Callable[[DuplicateIdentityError], None],
        clock: Callable[[], float] = time.time,
        advert_ttl_s: float = MAX_ADVERT_TTL_S,
        protected: Callable[[], Collection[PeerId]] = frozenset,
        max_peers: int = MAX_PEERS,
        max_per_source: int = MAX_PER_SOURCE,
    ) -> None:
        """``build_advert(seq, now, instance, started_at)`` makes this node's current advert;
        ``on_duplicate`` is told when another, older instance of this identity is seen.
        ``advert_ttl_s`` is the longest advert lifetime accepted (this node's own);
        ``protected()`` names the peers never evicted from a full table (paired devices)."""
        self._identity = identity
        self._on_duplicate = on_duplicate
        self._build = build_advert
        self._clock = clock
        self._advert_ttl_s = advert_ttl_s
        self._protected = protected
        self.instance = os.urandom(16)
        self.started_at = clock()
        self.table = PeerTable(max_peers=max_peers, max_per_source=max_per_source)
        self._seq = 0
        self._own: bytes | None = None
        self.own: Advert | None = None
        """This node's latest advert, as published."""
        self.changed = trio.Event()
        self.dropped = 0
        """Adverts refused since start (forged, expired, malformed, over a bound)."""

    @property
    def peer_id(self) -> PeerId:
        return self._identity.peer_id

    def _next_seq(self, now: float) -> int:
        # A millisecond clock keeps seq growing across restarts without storing it.
        self._seq = max(self._seq + 1, int(now * 1000))
        return self._seq

    def refresh_own(self) -> bytes:
        """Build, sign and remember a fresh advert of this node."""
        now = self._clock()
        advert = self._build(self._next_seq(now), now, self.instance, self.started_at)
        self._own = encode_advert(advert, self._identity.signing_key)
        self.own = advert
        return self._own

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        return self._identity.signing_key

    @property
    def own_advert(self) -> bytes:
        return self._own if self._own is not None else self.refresh_own()

    def goodbye(self) -> bytes:
        return encode_goodbye(Goodbye(self.peer_id, self._next_seq(self._clock()), self.instance), self._identity.signing_key)

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def accept(self, blob: bytes, *, via: str, source: PeerId | None = None) -> Outcome | None:
        """Verify and apply an advert; None when it was refused.

        ``source`` is the peer whose message carried it (the peer exchanged with, the
        gossip publisher); an advert of another identity counts against that peer's share.
        """
        now = self._clock()
        try:
            advert = decode_advert(blob, now=now, max_ttl_s=self._advert_ttl_s)
        except RemoteProtocolError as exc:
            self.dropped += 1
            log.info("dropped advert via %s: %s", via, exc)
            return None
        if advert.peer_id == self.peer_id:
            # An older instance is a live duplicate only if it advertised after we started;
            # before that it may be this node's own advert from before a crash, still gossiped.
            older = (advert.started_at, advert.instance) < (self.started_at, self.instance)
            if advert.instance != self.instance and older and advert.issued_at >= self.started_at:
                self._on_duplicate(DuplicateIdentityError(
                    f"another node is running with this identity ({self.peer_id}) since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(advert.started_at))} at "
                    f"{', '.join(advert.addrs) or 'an unknown address'}; was the data dir copied? "
                    "Give each device its own data dir."
                ))
            return None
        self.table, outcome = self.table.apply_advert(
            advert, now, blob, source=source, protected=frozenset(self._protected())
        )
        match outcome:
            case Outcome.NEW:
                log.info("peer %s (%s, %s) joined via %s", advert.peer_id, advert.name, advert.profile or "real", via)
                self._notify()
            case Outcome.UPDATED:
                self._notify()
            case Outcome.DUPLICATE:
                self.dropped += 1
                log.warning("refused advert from a second instance of %s (copied identity?)", advert.peer_id)
            case Outcome.REFUSED:
                self.dropped += 1
                log.info("dropped advert of %s via %s: %s already relayed %d unconfirmed peers", advert.peer_id,
                         via, source, self.table.max_per_source)
            case Outcome.FULL:
                self.dropped += 1
                log.info("dropped advert of %s via %s: the peer table is full (%d)", advert.peer_id, via,
                         self.table.max_peers)
            case _:
                pass
        return outcome

    def accept_goodbye(self, blob: bytes) -> bool:
        try:
            goodbye = decode_goodbye(blob)
        except RemoteProtocolError as exc:
            self.dropped += 1
            log.info("dropped goodbye: %s", exc)
            return False
        self.table, outcome = self.table.apply_goodbye(goodbye)
        if outcome is Outcome.REMOVED:
            log.info("peer %s left", goodbye.peer_id)
            self._notify()
            return True
        return False

    def expire(self) -> tuple[PeerId, ...]:
        self.table, gone = self.table.expire(self._clock())
        for peer in gone:
            log.info("peer %s timed out", peer)
        if gone:
            self._notify()
        return gone

    def record_rtt(self, peer: PeerId, rtt_ms: float) -> None:
        self.table = self.table.apply_rtt(peer, rtt_ms)

    def known_adverts(self, limit: int) -> list[bytes]:
        """Our own advert and up to ``limit - 1`` of the peers' (for peer exchange)."""
        out = [self.own_advert]
        for entry in list(self.table.values())[: max(0, limit - 1)]:
            out.append(entry.advert_blob)
        return out
