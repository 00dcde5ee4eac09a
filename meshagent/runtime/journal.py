"""The journal: every host call an agent made, in order — the truth of an agent.

An :class:`Entry` holds the call's name, a sha256 digest of its arguments, its
integer result and, for calls whose answer cannot be recomputed (clock,
randomness, the LLM, tools, joins), the bytes it returned to the agent.
Replaying the journal into a fresh instance of the same module reproduces the
agent exactly; a replay that asks for another call is a
:class:`~meshagent.errors.DivergenceError`.

Encoding is a CBOR array of ``[name, digest, ret, data]`` arrays through the
strict codec; decoding untrusted bytes checks every field and raises
:class:`~meshagent.errors.JournalError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from meshagent.errors import DecodeError, JournalError, JournalLimitExceeded
from meshagent.protocol import codec

__all__ = ["Entry", "Journal", "digest", "last_clock_reading", "ENTRY_OVERHEAD", "MAX_NAME", "REALTIME"]

ENTRY_OVERHEAD: Final = 48
"""Bytes counted per entry on top of its name and data (digest, ints, framing)."""

MAX_NAME: Final = 64
REALTIME: Final = 0
"""WASI clock ids: 0 realtime; 1 monotonic, 2 and 3 process and thread CPU time."""


def digest(name: str, *parts: bytes | int | str) -> bytes:
    """sha256 over a call name and its arguments, each length-prefixed."""
    h = hashlib.sha256()
    h.update(name.encode())
    for part in parts:
        match part:
            case bytes():
                h.update(b"b" + len(part).to_bytes(8, "little") + part)
            case str():
                raw = part.encode()
                h.update(b"s" + len(raw).to_bytes(8, "little") + raw)
            case int():
                h.update(b"i" + part.to_bytes(8, "little", signed=True))
    return h.digest()


@dataclass(frozen=True, slots=True)
class Entry:
    """One host call: ``name``, argument ``digest``, integer ``ret`` and returned ``data``."""

    name: str
    digest: bytes
    ret: int | None = None
    data: bytes | None = None

    @property
    def size(self) -> int:
        return ENTRY_OVERHEAD + len(self.name) + (len(self.data) if self.data else 0)

    def to_wire(self) -> list[object]:
        return [self.name, self.digest, self.ret, self.data]

    @classmethod
    def from_wire(cls, raw: object, index: int) -> Entry:
        if not isinstance(raw, list) or len(raw) != 4:
            raise JournalError(f"journal entry {index} is not a 4-element array")
        name, dig, ret, data = raw
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise JournalError(f"journal entry {index} has an invalid call name")
        if not isinstance(dig, bytes) or len(dig) != 32:
            raise JournalError(f"journal entry {index} ({name}) has an invalid digest")
        if ret is not None and (isinstance(ret, bool) or not isinstance(ret, int) or not -(1 << 63) <= ret < (1 << 64)):
            raise JournalError(f"journal entry {index} ({name}) has an invalid result")
        if data is not None and not isinstance(data, bytes):
            raise JournalError(f"journal entry {index} ({name}) has invalid data")
        return cls(name, dig, ret, data)


class Journal(Sequence[Entry]):
    """Append-only list of entries with a byte budget; truncation is rollback's job."""

    __slots__ = ("_entries", "_bytes", "_limit")

    def __init__(self, entries: Sequence[Entry] = (), *, limit: int = 64 << 20) -> None:
        self._entries: list[Entry] = list(entries)
        self._bytes = sum(e.size for e in self._entries)
        self._limit = limit

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> Entry:  # type: ignore[override]
        return self._entries[index]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Journal) and self._entries == other._entries

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Journal({len(self._entries)} entries, {self._bytes} bytes)"

    @property
    def bytes(self) -> int:
        return self._bytes

    def append(self, entry: Entry) -> None:
        if self._bytes + entry.size > self._limit:
            raise JournalLimitExceeded(
                f"the agent's journal would grow past its limit of {self._limit} bytes "
                f"(at call {entry.name!r}, entry {len(self._entries)}); raise sandbox.journal_bytes "
                "or make the agent call the host less often"
            )
        self._entries.append(entry)
        self._bytes += entry.size

    def truncate(self, length: int) -> None:
        if not 0 <= length <= len(self._entries):
            raise JournalError(f"cannot truncate a journal of {len(self._entries)} entries to {length}")
        for entry in self._entries[length:]:
            self._bytes -= entry.size
        del self._entries[length:]

    def prefix(self, length: int) -> Journal:
        return Journal(self._entries[:length], limit=self._limit)

    def to_wire(self) -> list[object]:
        return [e.to_wire() for e in self._entries]

    def encode(self) -> bytes:
        return codec.encode(self.to_wire())

    @classmethod
    def from_wire(cls, raw: object, *, limit: int) -> Journal:
        if not isinstance(raw, list):
            raise JournalError("a journal must be an array of entries")
        journal = cls(limit=limit)
        for i, item in enumerate(raw):
            try:
                journal.append(Entry.from_wire(item, i))
            except JournalLimitExceeded as exc:
                raise JournalError(f"journal is larger than the limit of {limit} bytes") from exc
        return journal

    @classmethod
    def decode(cls, data: bytes, *, limit: int = 64 << 20) -> Journal:
        try:
            raw = codec.decode(data, max_size=limit + (1 << 16), max_depth=4)
        except DecodeError as exc:
            raise JournalError(f"journal bytes are corrupt or truncated: {exc}") from exc
        return cls.from_wire(raw, limit=limit)


def last_clock_reading(journal: Journal, clock: int) -> int:
    """The latest ``clock_time_get`` answer for ``clock`` the journal recorded (0 if none)."""
    dig = digest("clock_time_get", clock)
    for i in range(len(journal) - 1, -1, -1):  # newest first, without copying the journal
        entry = journal[i]
        if entry.name == "clock_time_get" and entry.digest == dig and entry.data is not None and len(entry.data) == 8:
            return int.from_bytes(entry.data, "little")
    return 0
