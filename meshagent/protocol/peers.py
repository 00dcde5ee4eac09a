"""The peer table as a pure reducer: ``apply(table, event, now) -> (table, outcome)``.

The table only ever holds verified adverts (decode them with
:func:`meshagent.protocol.advert.decode_advert` first). Rules:

* an advert whose ``seq`` is not above the one we hold is *stale* (a replay)
  and changes nothing;
* an entry leaves when its advert expires (a killed or unplugged peer stops
  republishing) or on a signed goodbye. An entry lives at most the advert's
  own lifetime from when this node received it, whatever the issuer's clock
  said (:attr:`PeerEntry.expires_at`);
* the table is bounded (``max_peers``), and so is what one *source* can put
  in it (``max_per_source``): an advert that reached us from its own node is
  *direct* (``source`` None); one relayed by another peer (peer exchange, or a
  gossip message published by someone else) is counted against that relay,
  until its own node speaks for it. A relay at its bound adds nothing more
  (:attr:`Outcome.REFUSED`). When the table is full a newcomer evicts, in this
  order, an expired entry, then the least recently seen one; never a
  *protected* peer (the owner's paired devices), and a relayed newcomer only
  ever evicts relayed entries (hearsay never pushes out a peer that spoke for
  itself). With nothing to evict the newcomer is refused (:attr:`Outcome.FULL`);
* two live *instances* of one identity mean a copied data dir: the instance
  that started first keeps the identity, adverts from the other are refused —
  but only while the first proves it is alive, i.e. its latest advert was
  issued after the newcomer started. Otherwise the newcomer is the same node
  restarted after a crash (SIGKILL, power loss: no goodbye was sent) and
  replaces the old entry at once instead of waiting for it to expire. If the
  first was alive after all, its next advert takes the identity back.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final

from meshagent.protocol.advert import Advert, Goodbye
from meshagent.protocol.signed import PeerId

__all__ = ["MAX_PEERS", "MAX_PER_SOURCE", "Outcome", "PeerEntry", "PeerTable"]

MAX_PEERS: Final = 1024
"""Most entries a peer table holds (an advert is at most 64 KiB: a full table stays bounded)."""
MAX_PER_SOURCE: Final = 32
"""Most entries one relay may have put in the table that their own nodes have not confirmed."""


class Outcome(enum.Enum):
    NEW = "new"
    UPDATED = "updated"
    STALE = "stale"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    """Another live instance of the same identity: refused."""
    REMOVED = "removed"
    UNKNOWN = "unknown"
    REFUSED = "refused"
    """A relayed advert from a source that already put its share of entries in the table."""
    FULL = "full"
    """The table is full and holds nothing this newcomer may evict."""


@dataclass(frozen=True, slots=True)
class PeerEntry:
    advert: Advert
    first_seen: float
    last_seen: float
    rtt_ms: float | None = None
    advert_blob: bytes = b""
    """The signed envelope the advert came in, relayed as is by peer exchange."""
    source: PeerId | None = None
    """The peer that relayed this advert to us, or None when its own node did (direct)."""

    @property
    def expires_at(self) -> float:
        """When this entry leaves: the advert's expiry, but no later than its lifetime after we received it."""
        advert = self.advert
        return min(advert.expires_at, self.last_seen + (advert.expires_at - advert.issued_at))


class PeerTable(Mapping[PeerId, PeerEntry]):
    """An immutable mapping of peer id to entry; every change returns a new table.

    ``max_peers`` and ``max_per_source`` bound what :meth:`apply_advert` adds;
    a table built from a mapping holds what it is given.
    """

    __slots__ = ("_entries", "max_peers", "max_per_source")

    def __init__(
        self,
        entries: Mapping[PeerId, PeerEntry] | None = None,
        *,
        max_peers: int = MAX_PEERS,
        max_per_source: int = MAX_PER_SOURCE,
    ) -> None:
        self._entries: Mapping[PeerId, PeerEntry] = MappingProxyType(dict(entries or {}))
        self.max_peers = max_peers
        self.max_per_source = max_per_source

    def __getitem__(self, key: PeerId) -> PeerEntry:
        return self._entries[key]

    def __iter__(self) -> Iterator[PeerId]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def _new(self, entries: Mapping[PeerId, PeerEntry]) -> PeerTable:
        return PeerTable(entries, max_peers=self.max_peers, max_per_source=self.max_per_source)

    def _with(self, peer_id: PeerId, entry: PeerEntry | None, *, evict: PeerId | None = None) -> PeerTable:
        entries = dict(self._entries)
        if evict is not None:
            entries.pop(evict, None)
        if entry is None:
            entries.pop(peer_id, None)
        else:
            entries[peer_id] = entry
        return self._new(entries)

    def relayed_by(self, source: PeerId) -> int:
        """How many entries ``source`` relayed that their own nodes have not confirmed."""
        return sum(1 for e in self._entries.values() if e.source == source)

    def _victim(self, now: float, *, relayed_only: bool, protected: Collection[PeerId]) -> PeerId | None:
        """The entry a newcomer to a full table evicts: expired first, then the least recently seen."""
        candidates = [
            (e.expires_at > now, e.last_seen, p)
            for p, e in self._entries.items()
            if p not in protected and (e.source is not None or not relayed_only)
        ]
        return min(candidates)[2] if candidates else None

    def apply_advert(
        self,
        advert: Advert,
        now: float,
        blob: bytes = b"",
        *,
        source: PeerId | None = None,
        protected: Collection[PeerId] = frozenset(),
    ) -> tuple[PeerTable, Outcome]:
        """Add or refresh a verified advert (``blob``: its signed envelope).

        ``source`` is the peer that relayed it (None when the advert came from its own
        node); ``protected`` peers are never evicted to make room.
        """
        if source == advert.peer_id:
            source = None
        if advert.expires_at <= now:
            return self, Outcome.EXPIRED
        current = self._entries.get(advert.peer_id)
        if current is None:
            if source is not None and self.relayed_by(source) >= self.max_per_source:
                return self, Outcome.REFUSED
            evict = None
            if len(self._entries) >= self.max_peers:
                evict = self._victim(now, relayed_only=source is not None, protected=protected)
                if evict is None:
                    return self, Outcome.FULL
            entry = PeerEntry(advert, first_seen=now, last_seen=now, advert_blob=blob, source=source)
            return self._with(advert.peer_id, entry, evict=evict), Outcome.NEW
        held = current.advert
        # Once its own node has spoken for an entry, it stays direct; else the first relay keeps it.
        kept_source = None if source is None else current.source
        if advert.instance != held.instance and current.expires_at > now:
            newer = (advert.started_at, advert.instance) > (held.started_at, held.instance)
            if newer and held.issued_at >= advert.started_at:
                return self, Outcome.DUPLICATE
            # The newcomer started first (the rightful owner), or the held instance has not
            # been heard of since the newcomer started (a restart after a crash): replace.
            entry = PeerEntry(advert, first_seen=now, last_seen=now, advert_blob=blob, source=kept_source)
            return self._with(advert.peer_id, entry), Outcome.UPDATED
        if advert.seq <= held.seq:
            if source is None and current.source is not None:
                # The same advert, now from its own node: no longer counted against the relay.
                return self._with(advert.peer_id, replace(current, source=None)), Outcome.STALE
            return self, Outcome.STALE
        updated = replace(current, advert=advert, last_seen=now, advert_blob=blob, source=kept_source)
        return self._with(advert.peer_id, updated), Outcome.UPDATED

    def apply_goodbye(self, goodbye: Goodbye) -> tuple[PeerTable, Outcome]:
        current = self._entries.get(goodbye.peer_id)
        if current is None:
            return self, Outcome.UNKNOWN
        if goodbye.instance != current.advert.instance or goodbye.seq < current.advert.seq:
            return self, Outcome.STALE
        return self._with(goodbye.peer_id, None), Outcome.REMOVED

    def apply_rtt(self, peer_id: PeerId, rtt_ms: float) -> PeerTable:
        current = self._entries.get(peer_id)
        if current is None:
            return self
        return self._with(peer_id, replace(current, rtt_ms=rtt_ms))

    def expire(self, now: float) -> tuple[PeerTable, tuple[PeerId, ...]]:
        """Drop every entry whose time is up (:attr:`PeerEntry.expires_at`); return the new table and who left."""
        gone = tuple(p for p, e in self._entries.items() if e.expires_at <= now)
        if not gone:
            return self, ()
        return self._new({p: e for p, e in self._entries.items() if p not in gone}), gone
