"""Pairing two devices of one owner with a short code.

Device A shows a six-digit code (``meshagent pair``); on device B the owner
types it (``meshagent pair CODE``). B proves it knows the code, then A proves
it too, and each adds the other's peer id to its trust store — the set of
"own devices" that ``private`` steps may run on.

The proofs are HMAC-SHA256 keyed by the code over both peer ids and both
nonces, exchanged inside the Noise session that already authenticates both
peer ids; so an eavesdropper sees nothing and a man in the middle cannot
relay. An active guesser gets :data:`MAX_ATTEMPTS` tries before the code dies
(a one-in-333,333 chance), and a code lives :data:`CODE_TTL_S` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from meshagent.errors import DecodeError
from meshagent.protocol import codec

__all__ = [
    "PAIR_PROTOCOL",
    "CODE_TTL_S",
    "MAX_ATTEMPTS",
    "code_from_bytes",
    "proof",
    "PairRequest",
    "PairReply",
    "encode",
    "decode",
    "PendingCode",
]

PAIR_PROTOCOL: Final = "/meshagent/pair/1.0.0"
CODE_TTL_S: Final = 120.0
MAX_ATTEMPTS: Final = 3


def code_from_bytes(random_bytes: bytes) -> str:
    """A six-digit code from at least 4 random bytes (the caller supplies randomness)."""
    if len(random_bytes) < 4:
        raise ValueError("need 4 random bytes")
    return f"{int.from_bytes(random_bytes[:4], 'big') % 1_000_000:06d}"


def proof(code: str, role: bytes, shower: str, joiner: str, shower_nonce: bytes, joiner_nonce: bytes) -> bytes:
    msg = b"meshagent/pair/1\x00" + role + b"\x00" + shower.encode() + b"\x00" + joiner.encode() + b"\x00" + shower_nonce + joiner_nonce
    return hmac.new(code.encode(), msg, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class PairRequest:
    """Joiner → shower, step 1 (nonce) and step 2 (proof)."""

    nonce: bytes
    proof: bytes = b""
    name: str = ""


@dataclass(frozen=True, slots=True)
class PairReply:
    """Shower → joiner."""

    nonce: bytes
    proof: bytes = b""
    ok: bool = True
    name: str = ""
    reason: str = ""


def encode(msg: PairRequest | PairReply) -> bytes:
    match msg:
        case PairRequest(nonce, prf, name):
            return codec.encode({"t": "req", "nonce": nonce, "proof": prf, "name": name})
        case PairReply(nonce, prf, ok, name, reason):
            return codec.encode({"t": "rep", "nonce": nonce, "proof": prf, "ok": ok, "name": name, "reason": reason})
    raise TypeError(msg)


def decode(data: bytes) -> PairRequest | PairReply:
    m = codec.decode_map(data, max_size=4096, max_depth=2)
    nonce = codec.field(m, "nonce", bytes)
    prf = codec.field(m, "proof", bytes)
    name = codec.field(m, "name", str)[:128]
    if len(nonce) != 16 or len(prf) not in (0, 32):
        raise DecodeError("bad pairing nonce or proof length")
    match codec.field(m, "t", str):
        case "req":
            return PairRequest(nonce, prf, name)
        case "rep":
            return PairReply(nonce, prf, codec.field(m, "ok", bool), name, codec.field(m, "reason", str)[:256])
        case other:
            raise DecodeError(f"unknown pairing message {other!r}")


@dataclass(frozen=True, slots=True)
class PendingCode:
    """A code shown on this device, waiting for the other device."""

    code: str
    expires_at: float
    attempts_left: int = MAX_ATTEMPTS

    def usable(self, now: float) -> bool:
        return now < self.expires_at and self.attempts_left > 0

    def attempt(self) -> PendingCode:
        return PendingCode(self.code, self.expires_at, self.attempts_left - 1)
