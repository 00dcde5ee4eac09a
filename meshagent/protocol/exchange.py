"""Peer exchange messages (``/meshagent/exchange/1``).

When two nodes connect, each sends the other the signed adverts it holds —
its own first — so that a node that bootstrapped to one peer learns the rest
of the mesh. A node leaving cleanly sends its signed goodbye the same way.
Adverts inside stay individually signed: a peer can relay adverts but never
forge or alter them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from meshagent.errors import DecodeError
from meshagent.protocol import codec
from meshagent.protocol.advert import MAX_ADVERT_BYTES

__all__ = ["EXCHANGE_PROTOCOL", "MAX_EXCHANGE_BYTES", "MAX_EXCHANGE_ADVERTS", "PeerExchange", "Bye", "encode", "decode"]

EXCHANGE_PROTOCOL: Final = "/meshagent/exchange/1.0.0"
MAX_EXCHANGE_ADVERTS: Final = 64
MAX_EXCHANGE_BYTES: Final = MAX_EXCHANGE_ADVERTS * MAX_ADVERT_BYTES // 4


@dataclass(frozen=True, slots=True)
class PeerExchange:
    adverts: tuple[bytes, ...]
    """Signed advert envelopes, the sender's own first."""


@dataclass(frozen=True, slots=True)
class Bye:
    goodbye: bytes
    """A signed goodbye envelope."""


def encode(msg: PeerExchange | Bye) -> bytes:
    match msg:
        case PeerExchange(adverts):
            return codec.encode({"t": "px", "adverts": list(adverts[:MAX_EXCHANGE_ADVERTS])})
        case Bye(goodbye):
            return codec.encode({"t": "bye", "goodbye": goodbye})
    raise TypeError(f"not an exchange message: {msg!r}")


def decode(data: bytes) -> PeerExchange | Bye:
    m = codec.decode_map(data, max_size=MAX_EXCHANGE_BYTES, max_depth=3)
    match codec.field(m, "t", str):
        case "px":
            adverts = codec.field(m, "adverts", list)
            if len(adverts) > MAX_EXCHANGE_ADVERTS:
                raise DecodeError(f"peer exchange with {len(adverts)} adverts; the limit is {MAX_EXCHANGE_ADVERTS}")
            if not all(isinstance(a, bytes) and len(a) <= MAX_ADVERT_BYTES for a in adverts):
                raise DecodeError("peer exchange adverts must be byte strings within the advert size limit")
            return PeerExchange(tuple(adverts))  # type: ignore[arg-type]
        case "bye":
            return Bye(codec.field(m, "goodbye", bytes))
        case other:
            raise DecodeError(f"unknown exchange message type {other!r}")
