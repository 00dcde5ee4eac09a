"""Signed envelopes and libp2p peer ids — checked before anything is decoded.

An envelope is a fixed binary layout, so that the signature can be verified
before a single byte of the payload is parsed::

    magic "MSE1" | kind (1 byte length + ascii) | public key (32) | signature (64) | payload

The signature is Ed25519 over ``"meshagent/" + kind + "\\0" + payload``: the
kind is a domain separator, so an advert can never be replayed as a bid.

The signer's libp2p peer id is derived from its public key exactly as libp2p
does for Ed25519 keys (an identity multihash of the protobuf-encoded key,
base58btc), so a signature binds a payload to a peer id that Noise
authenticates on every connection.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final, NewType

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshagent.errors import DecodeError, FrameTooLarge, SignatureError

__all__ = [
    "PeerId",
    "peer_id_from_public_key",
    "public_key_from_peer_id",
    "Signed",
    "sign",
    "verify",
]

PeerId = NewType("PeerId", str)
"""A libp2p peer id in its base58btc text form (``12D3KooW...`` for Ed25519 keys)."""

_MAGIC: Final = b"MSE1"
_PUB: Final = 32
_SIG: Final = 64
# protobuf PublicKey{Type: Ed25519 (1), Data: 32 bytes}
_PB_PREFIX: Final = b"\x08\x01\x12\x20"
# identity multihash (code 0x00) of a 36-byte key
_MH_PREFIX: Final = b"\x00\x24"


@functools.lru_cache(maxsize=4096)
def peer_id_from_public_key(public_key: bytes) -> PeerId:
    """The libp2p peer id of an Ed25519 public key (32 raw bytes)."""
    if len(public_key) != _PUB:
        raise SignatureError(f"an Ed25519 public key has 32 bytes, not {len(public_key)}")
    return PeerId(base58.b58encode(_MH_PREFIX + _PB_PREFIX + public_key).decode("ascii"))


def public_key_from_peer_id(peer_id: str) -> bytes:
    """The Ed25519 public key embedded in a peer id; raises DecodeError for other ids."""
    try:
        raw = base58.b58decode(peer_id.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise DecodeError(f"not a base58 peer id: {peer_id!r}") from exc
    if len(raw) != 2 + 4 + _PUB or not raw.startswith(_MH_PREFIX + _PB_PREFIX):
        raise DecodeError(f"not an Ed25519 peer id: {peer_id!r}")
    return raw[6:]


@dataclass(frozen=True, slots=True)
class Signed:
    """A verified envelope: who signed it and the (still undecoded) payload."""

    kind: str
    signer: PeerId
    public_key: bytes
    payload: bytes


def _message(kind: bytes, payload: bytes) -> bytes:
    return b"meshagent/" + kind + b"\x00" + payload


def sign(kind: str, payload: bytes, key: Ed25519PrivateKey) -> bytes:
    """Wrap ``payload`` in an envelope of ``kind`` signed by ``key``."""
    kind_b = kind.encode("ascii")
    if not 0 < len(kind_b) < 256:
        raise ValueError("kind must be 1..255 ascii bytes")
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    sig = key.sign(_message(kind_b, payload))
    return _MAGIC + bytes([len(kind_b)]) + kind_b + pub + sig + payload


def verify(
    blob: bytes,
    *,
    kind: str,
    max_size: int,
    expected_signer: str | None = None,
) -> Signed:
    """Check an envelope's size, kind and signature; return it with its payload undecoded.

    Raises :class:`FrameTooLarge`, :class:`DecodeError` (layout) or
    :class:`SignatureError` (bad signature, wrong kind, unexpected signer).
    No payload byte is interpreted here.
    """
    if len(blob) > max_size:
        raise FrameTooLarge(f"envelope of {len(blob)} bytes exceeds the limit of {max_size}")
    if len(blob) < len(_MAGIC) + 1 or not blob.startswith(_MAGIC):
        raise DecodeError("not a meshagent signed envelope")
    klen = blob[len(_MAGIC)]
    start = len(_MAGIC) + 1
    kind_b = bytes(blob[start : start + klen])
    body = start + klen
    if len(blob) < body + _PUB + _SIG:
        raise DecodeError("truncated signed envelope")
    if kind_b != kind.encode("ascii"):
        raise SignatureError(f"expected a {kind!r} envelope, got {kind_b!r}")
    pub = bytes(blob[body : body + _PUB])
    sig = bytes(blob[body + _PUB : body + _PUB + _SIG])
    payload = bytes(blob[body + _PUB + _SIG :])
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, _message(kind_b, payload))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(f"bad signature on {kind!r} envelope") from exc
    signer = peer_id_from_public_key(pub)
    if expected_signer is not None and signer != expected_signer:
        raise SignatureError(f"{kind!r} envelope signed by {signer}, expected {expected_signer}")
    return Signed(kind=kind, signer=signer, public_key=pub, payload=payload)
