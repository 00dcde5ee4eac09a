"""The peer table as a pure reducer: ``apply(table, event, now) -> (table, outcome)``.

The table only ever holds verified adverts (decode them with
:func:`meshagent.protocol.advert.decode_advert` first). Rules:

* an advert whose ``seq`` is not above the one we hold is *stale* (a replay)
  and changes nothing;
* an entry leaves when its advert expires (a killed or unplugged peer stops
  republishing) or on a signed goodbye;
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from meshagent.protocol.advert import Advert, Goodbye
from meshagent.protocol.signed import PeerId

__all__ = ["Outcome", "PeerEntry", "PeerTable"]


class Outcome(enum.Enum):
    NEW = "new"
    UPDATED = "updated"
    STALE = "stale"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    """Another live instance of the same identity: refused."""
    REMOVED = "removed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class PeerEntry:
    advert: Advert
    first_seen: float
    last_seen: float
    rtt_ms: float | None = None
    advert_blob: bytes = b""
    """The signed envelope the advert came in, relayed as is by peer exchange."""


class PeerTable(Mapping[PeerId, PeerEntry]):
    """An immutable mapping of peer id to entry; every change returns a new table."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Mapping[PeerId, PeerEntry] | None = None) -> None:
        self._entries: Mapping[PeerId, PeerEntry] = MappingProxyType(dict(entries or {}))

    def __getitem__(self, key: PeerId) -> PeerEntry:
        return self._entries[key]

    def __iter__(self) -> Iterator[PeerId]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def _with(self, peer_id: PeerId, entry: PeerEntry | None) -> PeerTable:
        entries = dict(self._entries)
        if entry is None:
            entries.pop(peer_id, None)
        else:
            entries[peer_id] = entry
        return PeerTable(entries)

    def apply_advert(self, advert: Advert, now: float, blob: bytes = b"") -> tuple[PeerTable, Outcome]:
        """Add or refresh a verified advert (``blob``: its signed envelope)."""
        if advert.expires_at <= now:
            return self, Outcome.EXPIRED
        current = self._entries.get(advert.peer_id)
        if current is None:
            return self._with(advert.peer_id, PeerEntry(advert, first_seen=now, last_seen=now, advert_blob=blob)), Outcome.NEW
        held = current.advert
        if advert.instance != held.instance and held.expires_at > now:
            newer = (advert.started_at, advert.instance) > (held.started_at, held.instance)
            if newer and held.issued_at >= advert.started_at:
                return self, Outcome.DUPLICATE
            # The newcomer started first (the rightful owner), or the held instance has not
            # been heard of since the newcomer started (a restart after a crash): replace.
            return self._with(advert.peer_id, PeerEntry(advert, first_seen=now, last_seen=now, advert_blob=blob)), Outcome.UPDATED
        if advert.seq <= held.seq:
            return self, Outcome.STALE
        return self._with(advert.peer_id, replace(current, advert=advert, last_seen=now, advert_blob=blob)), Outcome.UPDATED

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
        """Drop every entry whose advert has expired; return the new table and who left."""
        gone = tuple(p for p, e in self._entries.items() if e.advert.expires_at <= now)
        if not gone:
            return self, ()
        return PeerTable({p: e for p, e in self._entries.items() if p not in gone}), gone
