"""Sealed snapshot format v1: a signed CBOR header and sealed, compressed, chunked sections.

Pure: no I/O, no clock, no randomness of our own. ``now`` and the 32-byte data
key come in as arguments; the sealer yields bytes and the reader is fed bytes.

Layout (a file at rest, and the same bytes on the handoff stream)::

    "MSNAP1\\n\\0" | u32 header length | header envelope | chunk frame ...
    chunk frame = u32 length | ChaCha20-Poly1305 ciphertext (+16-byte tag)

The header envelope is a :mod:`~meshagent.protocol.signed` envelope of kind
``snapshot-header/1`` whose payload is a canonical CBOR map binding: version,
agent id, generation, sender, recipient and the recipient's sealing key,
auction id, issue and expiry times, the HPKE suite, the data key wrapped (HPKE
single-shot) to the recipient and, as an escrow, to the sender, the raw chunk
size, the sections (name and raw size), the module sha256 and the KV model
hash. HPKE ``info`` binds the format version, agent id, generation and role.

Each section is cut into raw pieces of ``chunk_size`` bytes (at least one
piece, possibly empty); each piece is compressed as its own zstd frame (with
its content size) and sealed under the data key with the nonce
``section index (4) | chunk index (8)`` and the associated data
``sha256(header envelope) | section index | chunk index | final flag``. The
data key is fresh per snapshot, so nonces never repeat under one key.

What a receiver checks, in order, before it decompresses or decodes anything
it has not authenticated:

1. the magic and the header length (≤ ``max_header``);
2. the envelope's Ed25519 signature (:func:`signed.verify`, no payload byte
   is parsed before it passes);
3. only then the header is CBOR-decoded (strict codec, depth 4) and checked:
   signer = sender, recipient = us and our sealing key, not expired, not
   issued in the future, generation ≥ the caller's minimum, raw sizes within
   the caller's limits, chunk size within bounds;
4. each chunk frame's length against the bound of a sealed piece, then its
   AEAD tag; only an authenticated piece is decompressed, and only up to the
   size the header declared for it (:class:`DecompressionBomb` otherwise).

A :class:`SnapshotReader` in ``verify`` mode authenticates every chunk without
decompressing (a receiver does this while it stores the sealed bytes); in
``open`` mode it also yields the decompressed section data.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshagent.errors import (
    DecodeError,
    DecompressionBomb,
    ExpiredError,
    FrameTooLarge,
    SealError,
    SignatureError,
    StaleError,
    WrongRecipient,
)
from meshagent.protocol import codec, signed
from meshagent.protocol.codec import field as get
from meshagent.protocol.signed import PeerId

__all__ = [
    "MAGIC",
    "HEADER_KIND",
    "FORMAT_VERSION",
    "SUITE_X25519",
    "SUITE_HYBRID",
    "DEFAULT_CHUNK",
    "MAX_CHUNK",
    "Limits",
    "Section",
    "SnapshotHeader",
    "SealedSnapshot",
    "seal_snapshot",
    "verify_header",
    "header_suite",
    "header_digest",
    "chunk_count",
    "max_sealed_chunk",
    "SnapshotReader",
    "HeaderVerified",
    "ChunkVerified",
    "SectionData",
    "SnapshotComplete",
    "ReaderEvent",
    "decompress_piece",
    "unwrap_data_key",
    "SealingKey",
    "hybrid_private_key",
    "hybrid_public_bytes",
]

MAGIC: Final = b"MSNAP1\n\x00"
HEADER_KIND: Final = "snapshot-header/1"
FORMAT_VERSION: Final = 1
SUITE_X25519: Final = "x25519-sha256-chacha20poly1305"
SUITE_HYBRID: Final = "mlkem768x25519-sha256-chacha20poly1305"
DEFAULT_CHUNK: Final = 1 << 20
MIN_CHUNK: Final = 1 << 12
MAX_CHUNK: Final = 8 << 20
MAX_HEADER: Final = 16 << 10
MAX_SECTIONS: Final = 64
MAX_CLOCK_SKEW_S: Final = 30.0
_LEN: Final = 4
_TAG: Final = 16
_KEY: Final = 32
_NAME: Final = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
_KEY_LEN: Final = {SUITE_X25519: 32, SUITE_HYBRID: 1184 + 32}
_SUITES: Final = {
    SUITE_X25519: (hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
    SUITE_HYBRID: (hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What a reader accepts; checked on the signed header before any body byte."""

    max_raw_bytes: int = 1 << 30
    max_header: int = MAX_HEADER
    max_ttl_s: float = 3600.0 * 24 * 365


@dataclass(frozen=True, slots=True)
class Section:
    """One named section of a snapshot with its raw (uncompressed) size."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    version: int
    agent_id: str
    generation: int
    sender: PeerId
    recipient: PeerId
    recipient_key: bytes
    sender_key: bytes
    auction_id: str | None
    issued_at: float
    expires_at: float
    suite: str
    wrapped_key: bytes
    """The data key, HPKE-sealed to ``recipient_key``."""
    escrow_key: bytes
    """The data key, HPKE-sealed to the sender's own sealing key (its copy until resumed)."""
    chunk_size: int
    sections: tuple[Section, ...]
    module_sha256: str
    kv_model_hash: str | None

    @property
    def raw_size(self) -> int:
        return sum(s.size for s in self.sections)

    def sealed_bound(self, skip: frozenset[str] = frozenset()) -> int:
        """The most body bytes a sender may send for this header (sections in ``skip`` omitted)."""
        total = 0
        for s in self.sections:
            if s.name not in skip:
                total += chunk_count(s.size, self.chunk_size) * (_LEN + max_sealed_chunk(self.chunk_size))
        return total

    def to_wire(self) -> dict[str, object]:
        return {
            "v": self.version,
            "agent": self.agent_id,
            "gen": self.generation,
            "sender": self.sender,
            "recipient": self.recipient,
            "rkey": self.recipient_key,
            "skey": self.sender_key,
            "auction": self.auction_id,
            "issued": self.issued_at,
            "expires": self.expires_at,
            "suite": self.suite,
            "wkey": self.wrapped_key,
            "ekey": self.escrow_key,
            "chunk": self.chunk_size,
            "sections": [[s.name, s.size] for s in self.sections],
            "module": self.module_sha256,
            "kv_model": self.kv_model_hash,
        }


def chunk_count(size: int, chunk_size: int) -> int:
    """Pieces of a section of ``size`` raw bytes (an empty section still has one)."""
    return max(1, -(-size // chunk_size))


def max_sealed_chunk(chunk_size: int) -> int:
    """Upper bound of one sealed piece: zstd's worst case for ``chunk_size`` plus the tag."""
    return chunk_size + (chunk_size >> 7) + 512 + _TAG


def header_digest(header_blob: bytes) -> bytes:
    return hashlib.sha256(header_blob).digest()


def _info(agent_id: str, generation: int, role: bytes) -> bytes:
    return b"meshagent/snapshot/%d\x00%s\x00%d\x00%s" % (FORMAT_VERSION, agent_id.encode(), generation, role)


def _nonce(section: int, index: int) -> bytes:
    return section.to_bytes(4, "big") + index.to_bytes(8, "big")


def _aad(digest: bytes, section: int, index: int, final: bool) -> bytes:
    return digest + section.to_bytes(4, "big") + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


def _suite(name: str) -> hpke.Suite:
    try:
        kem, kdf, aead = _SUITES[name]
    except KeyError as exc:
        raise SealError(f"unknown HPKE suite {name!r}") from exc
    return hpke.Suite(kem, kdf, aead)


SealingKey = X25519PrivateKey | hpke.MLKEM768X25519PrivateKey
"""A node's private sealing key: X25519, or ML-KEM-768 + X25519 for the hybrid suite."""


def hybrid_private_key(mlkem: MLKEM768PrivateKey, x25519: X25519PrivateKey) -> hpke.MLKEM768X25519PrivateKey:
    return hpke.MLKEM768X25519PrivateKey(mlkem, x25519)


def hybrid_public_bytes(mlkem: MLKEM768PrivateKey, x25519: X25519PrivateKey) -> bytes:
    """The advertised form of a hybrid sealing key: ML-KEM-768 public key (1184) | X25519 public key (32)."""
    return mlkem.public_key().public_bytes_raw() + x25519.public_key().public_bytes_raw()


def _public(suite: str, raw: bytes) -> X25519PublicKey | hpke.MLKEM768X25519PublicKey:
    if len(raw) != _KEY_LEN.get(suite, -1):
        raise SealError(f"a {suite} sealing key has {_KEY_LEN.get(suite)} bytes, not {len(raw)}")
    try:
        if suite == SUITE_HYBRID:
            return hpke.MLKEM768X25519PublicKey(
                MLKEM768PublicKey.from_public_bytes(raw[:1184]), X25519PublicKey.from_public_bytes(raw[1184:])
            )
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise SealError(f"invalid {suite} sealing key") from exc


# --- sealing -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealedSnapshot:
    """A sealed snapshot ready to stream: the signed header and lazily sealed chunks."""

    header: SnapshotHeader
    header_blob: bytes
    data_key: bytes
    payload: tuple[tuple[str, bytes | memoryview], ...]
    level: int

    def chunks(self, skip: frozenset[str] = frozenset()) -> Iterator[bytes]:
        """Chunk frames in order, compressing and sealing one piece at a time."""
        aead = ChaCha20Poly1305(self.data_key)
        digest = header_digest(self.header_blob)
        compressor = zstandard.ZstdCompressor(level=self.level, write_content_size=True, write_checksum=False)
        size = self.header.chunk_size
        for s_index, (name, data) in enumerate(self.payload):
            if name in skip:
                continue
            view = memoryview(data)
            n = chunk_count(len(view), size)
            for i in range(n):
                piece = compressor.compress(view[i * size : (i + 1) * size])
                sealed = aead.encrypt(_nonce(s_index, i), piece, _aad(digest, s_index, i, i == n - 1))
                yield len(sealed).to_bytes(_LEN, "big") + sealed

    def container_prefix(self) -> bytes:
        return MAGIC + len(self.header_blob).to_bytes(_LEN, "big") + self.header_blob

    def container(self, skip: frozenset[str] = frozenset()) -> Iterator[bytes]:
        """The whole sealed file: prefix and header, then every chunk frame."""
        yield self.container_prefix()
        yield from self.chunks(skip)


def seal_snapshot(
    *,
    signing_key: Ed25519PrivateKey,
    sender_sealing_key: bytes,
    recipient: PeerId,
    recipient_key: bytes,
    agent_id: str,
    generation: int,
    sections: Sequence[tuple[str, bytes | memoryview]],
    now: float,
    ttl_s: float,
    data_key: bytes,
    auction_id: str | None = None,
    module_sha256: str = "",
    kv_model_hash: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    suite: str = SUITE_X25519,
    level: int = 1,
) -> SealedSnapshot:
    """Seal ``sections`` for ``recipient``. The chunks are sealed lazily as they are iterated.

    ``data_key`` must be 32 fresh random bytes (the caller's randomness);
    ``sender_sealing_key`` is the sender's own X25519 public key (escrow).
    """
    if len(data_key) != _KEY:
        raise ValueError("the data key must be 32 bytes")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk size must be between {MIN_CHUNK} and {MAX_CHUNK}")
    if generation < 0 or ttl_s <= 0:
        raise ValueError("generation must be >= 0 and ttl_s > 0")
    names = [name for name, _ in sections]
    if len(set(names)) != len(names) or len(names) > MAX_SECTIONS or not all(_NAME.fullmatch(n) for n in names):
        raise ValueError(f"section names must be unique, at most {MAX_SECTIONS}, matching {_NAME.pattern}")
    hsuite = _suite(suite)
    pub = signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    header = SnapshotHeader(
        version=FORMAT_VERSION,
        agent_id=agent_id,
        generation=generation,
        sender=signed.peer_id_from_public_key(pub),
        recipient=recipient,
        recipient_key=recipient_key,
        sender_key=sender_sealing_key,
        auction_id=auction_id,
        issued_at=float(now),
        expires_at=float(now + ttl_s),
        suite=suite,
        wrapped_key=hsuite.encrypt(data_key, _public(suite, recipient_key), info=_info(agent_id, generation, b"recipient")),
        escrow_key=hsuite.encrypt(data_key, _public(suite, sender_sealing_key), info=_info(agent_id, generation, b"sender")),
        chunk_size=chunk_size,
        sections=tuple(Section(name, len(memoryview(data))) for name, data in sections),
        module_sha256=module_sha256,
        kv_model_hash=kv_model_hash,
    )
    blob = signed.sign(HEADER_KIND, codec.encode(header.to_wire()), signing_key)
    return SealedSnapshot(header, blob, bytes(data_key), tuple(sections), level)


# --- verifying the header --------------------------------------------------------


def verify_header(
    blob: bytes,
    *,
    me: PeerId,
    my_sealing_key: bytes,
    now: float,
    limits: Limits = Limits(),
    min_generation: int = 0,
    expected_sender: PeerId | None = None,
    as_sender: bool = False,
    check_expiry: bool = True,
) -> SnapshotHeader:
    """Verify a header envelope; return the header. Nothing is decoded before the signature passes.

    With ``as_sender`` the sender checks its own escrow copy: ``me`` must be
    the sender and the expiry is not checked (its own copy never expires).
    ``check_expiry=False`` is for a copy this node already accepted and stored:
    expiry bounds how long an *offer* is valid, not how long a stored copy is.
    Raises FrameTooLarge, DecodeError, SignatureError, WrongRecipient,
    ExpiredError or StaleError.
    """
    env = signed.verify(blob, kind=HEADER_KIND, max_size=limits.max_header, expected_signer=expected_sender)
    m = codec.decode_map(env.payload, max_size=limits.max_header, max_depth=4)
    header = _header_from_wire(m)
    if header.sender != env.signer:
        raise SignatureError(f"snapshot header names sender {header.sender} but is signed by {env.signer}")
    if as_sender:
        if header.sender != me or header.sender_key != my_sealing_key:
            raise WrongRecipient("this snapshot was not sealed by this node")
        return header
    if header.recipient != me or header.recipient_key != my_sealing_key:
        raise WrongRecipient(f"snapshot of {header.agent_id} is sealed for {header.recipient}, not for this node")
    if check_expiry and header.expires_at <= now:
        raise ExpiredError(f"snapshot of {header.agent_id} expired {now - header.expires_at:.1f} s ago")
    if header.issued_at > now + MAX_CLOCK_SKEW_S or header.expires_at - header.issued_at > limits.max_ttl_s:
        raise ExpiredError(f"snapshot of {header.agent_id} has implausible issue/expiry times")
    if header.generation < min_generation:
        raise StaleError(f"snapshot of {header.agent_id} has generation {header.generation}; need at least {min_generation}")
    if header.raw_size > limits.max_raw_bytes:
        raise FrameTooLarge(f"snapshot of {header.agent_id} holds {header.raw_size} bytes; the limit is {limits.max_raw_bytes}")
    return header


def header_suite(blob: bytes, *, max_header: int = MAX_HEADER) -> str:
    """The HPKE suite a header envelope names, so that a receiver can pick its matching private key.

    The signature is verified before any payload byte is decoded; this checks
    nothing else, so :func:`verify_header` must still be called.
    """
    env = signed.verify(blob, kind=HEADER_KIND, max_size=max_header)
    suite = get(codec.decode_map(env.payload, max_size=max_header, max_depth=4), "suite", str)
    if suite not in _SUITES:
        raise DecodeError(f"unknown HPKE suite {suite!r}")
    return suite


def _header_from_wire(m: dict[str | int, codec.Value]) -> SnapshotHeader:
    if get(m, "v", int) != FORMAT_VERSION:
        raise DecodeError(f"unsupported snapshot format version {m.get('v')!r}")
    agent_id = get(m, "agent", str)
    if not 0 < len(agent_id) <= 128:
        raise DecodeError("agent id must be 1..128 characters")
    generation = get(m, "gen", int)
    chunk = get(m, "chunk", int)
    if generation < 0 or generation >= 1 << 63:
        raise DecodeError("generation out of range")
    if not MIN_CHUNK <= chunk <= MAX_CHUNK:
        raise DecodeError("chunk size out of range")
    raw_sections = get(m, "sections", list)
    if len(raw_sections) > MAX_SECTIONS:
        raise DecodeError("too many sections")
    sections = []
    for item in raw_sections:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str) or not _NAME.fullmatch(item[0])
                or isinstance(item[1], bool) or not isinstance(item[1], int) or not 0 <= item[1] < 1 << 48):
            raise DecodeError("invalid section entry")
        sections.append(Section(item[0], item[1]))
    if len({s.name for s in sections}) != len(sections):
        raise DecodeError("duplicate section names")
    auction = m.get("auction")
    kv_model = m.get("kv_model")
    if auction is not None and (not isinstance(auction, str) or len(auction) > 128):
        raise DecodeError("invalid auction id")
    if kv_model is not None and (not isinstance(kv_model, str) or len(kv_model) > 128):
        raise DecodeError("invalid KV model hash")
    module = get(m, "module", str)
    if len(module) > 128:
        raise DecodeError("invalid module hash")
    suite = get(m, "suite", str)
    if suite not in _SUITES:
        raise DecodeError(f"unknown HPKE suite {suite!r}")
    rkey, skey = get(m, "rkey", bytes), get(m, "skey", bytes)
    wkey, ekey = get(m, "wkey", bytes), get(m, "ekey", bytes)
    if len(rkey) != _KEY_LEN[suite] or len(skey) != _KEY_LEN[suite] or not 0 < len(wkey) <= 2048 or not 0 < len(ekey) <= 2048:
        raise DecodeError("invalid key fields")
    sender, recipient = get(m, "sender", str), get(m, "recipient", str)
    signed.public_key_from_peer_id(sender)
    signed.public_key_from_peer_id(recipient)
    return SnapshotHeader(
        version=FORMAT_VERSION,
        agent_id=agent_id,
        generation=generation,
        sender=PeerId(sender),
        recipient=PeerId(recipient),
        recipient_key=rkey,
        sender_key=skey,
        auction_id=auction,
        issued_at=get(m, "issued", float),
        expires_at=get(m, "expires", float),
        suite=suite,
        wrapped_key=wkey,
        escrow_key=ekey,
        chunk_size=chunk,
        sections=tuple(sections),
        module_sha256=module,
        kv_model_hash=kv_model,
    )


def unwrap_data_key(header: SnapshotHeader, sealing_key: SealingKey, *, as_sender: bool = False) -> bytes:
    """The data key, opened with our sealing key (as recipient, or as sender from the escrow)."""
    wrapped, role = (header.escrow_key, b"sender") if as_sender else (header.wrapped_key, b"recipient")
    try:
        key = _suite(header.suite).decrypt(wrapped, sealing_key, info=_info(header.agent_id, header.generation, role))
    except (InvalidTag, ValueError, TypeError) as exc:
        raise WrongRecipient(f"cannot unwrap the data key of {header.agent_id}: not sealed to this key") from exc
    if len(key) != _KEY:
        raise SealError("the unwrapped data key has the wrong length")
    return key


# --- reading the body -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeaderVerified:
    header: SnapshotHeader
    header_blob: bytes


@dataclass(frozen=True, slots=True)
class ChunkVerified:
    section: str
    index: int
    count: int
    sealed_bytes: int
    """Body bytes consumed so far, frames included."""


@dataclass(frozen=True, slots=True)
class SectionData:
    section: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SnapshotComplete:
    header: SnapshotHeader
    sealed_bytes: int


ReaderEvent = HeaderVerified | ChunkVerified | SectionData | SnapshotComplete


def decompress_piece(piece: bytes, expected: int) -> bytes:
    """Decompress one authenticated zstd frame, never producing more than ``expected`` bytes."""
    try:
        declared = zstandard.frame_content_size(piece)
        if declared not in (expected, -1):
            raise DecompressionBomb(f"a piece declares {declared} bytes; the signed header says {expected}")
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(piece), read_across_frames=False)
        out = reader.read(expected) if expected else b""
        extra = reader.read(1)
    except zstandard.ZstdError as exc:
        raise SealError(f"an authenticated piece does not decompress: {exc}") from exc
    if len(out) != expected or extra:
        raise DecompressionBomb(f"a piece expands to more or less than its declared {expected} bytes")
    return out


class SnapshotReader:
    """Sans-I/O reader of a sealed snapshot's body (or, with ``container=True``, of a whole file).

    Feed bytes with :meth:`receive_data`; it returns events. Modes: ``verify``
    authenticates every chunk and never decompresses; ``open`` also yields
    :class:`SectionData`. Sections named in ``skip`` are expected to be absent
    (the receiver already holds them). Any error is final.
    """

    def __init__(
        self,
        *,
        sealing_key: SealingKey,
        me: PeerId,
        now: float,
        limits: Limits = Limits(),
        min_generation: int = 0,
        expected_sender: PeerId | None = None,
        mode: str = "verify",
        skip: frozenset[str] = frozenset(),
        header_blob: bytes | None = None,
        as_sender: bool = False,
        check_expiry: bool = True,
        sealing_public: bytes | None = None,
    ) -> None:
        """``sealing_public`` is our advertised sealing key; derived from an X25519 key when omitted."""
        if mode not in ("verify", "open"):
            raise ValueError("mode must be 'verify' or 'open'")
        self._key = sealing_key
        if sealing_public is None:
            if not isinstance(sealing_key, X25519PrivateKey):
                raise ValueError("pass sealing_public with a hybrid sealing key")
            sealing_public = sealing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._pub = sealing_public
        self._me = me
        self._now = now
        self._limits = limits
        self._min_gen = min_generation
        self._expected_sender = expected_sender
        self._open = mode == "open"
        self._skip = skip
        self._as_sender = as_sender
        self._check_expiry = check_expiry
        self._buf = bytearray()
        self._failed = False
        self._done = False
        self.header: SnapshotHeader | None = None
        self._aead: ChaCha20Poly1305 | None = None
        self._digest = b""
        self._plan: list[tuple[int, str, int, int]] = []
        self._pos = 0
        self._consumed = 0
        self._bound = 0
        self._pending: list[ReaderEvent] = []
        if header_blob is not None:
            self._take_header(header_blob)

    @property
    def complete(self) -> bool:
        return self._done

    def _take_header(self, blob: bytes) -> None:
        header = verify_header(
            blob, me=self._me, my_sealing_key=self._pub, now=self._now, limits=self._limits,
            min_generation=self._min_gen, expected_sender=self._expected_sender, as_sender=self._as_sender,
            check_expiry=self._check_expiry,
        )
        bad = self._skip - {s.name for s in header.sections}
        if bad:
            raise SealError(f"cannot skip sections the snapshot does not hold: {sorted(bad)}")
        self._aead = ChaCha20Poly1305(unwrap_data_key(header, self._key, as_sender=self._as_sender))
        self._digest = header_digest(blob)
        self.header = header
        for s_index, s in enumerate(header.sections):
            if s.name in self._skip:
                continue
            n = chunk_count(s.size, header.chunk_size)
            for i in range(n):
                piece = min(header.chunk_size, s.size - i * header.chunk_size) if s.size else 0
                self._plan.append((s_index, s.name, i, piece))
        self._bound = header.sealed_bound(self._skip)
        self._pending.append(HeaderVerified(header, blob))

    def receive_data(self, data: bytes) -> list[ReaderEvent]:
        if self._failed:
            raise SealError("this reader already failed")
        if self._done and data:
            self._failed = True
            raise SealError("bytes after the end of the snapshot")
        try:
            self._buf += data
            events = self._pending
            self._pending = []
            if self.header is None:
                self._read_prefix()
                events += self._pending
                self._pending = []
            if self.header is not None:
                events += self._read_chunks()
            return events
        except BaseException:
            self._failed = True
            raise

    def _read_prefix(self) -> None:
        need = len(MAGIC) + _LEN
        if len(self._buf) < len(MAGIC):
            if not MAGIC.startswith(bytes(self._buf)):
                raise DecodeError("not a sealed meshagent snapshot")
            return
        if not self._buf.startswith(MAGIC):
            raise DecodeError("not a sealed meshagent snapshot")
        if len(self._buf) < need:
            return
        size = int.from_bytes(self._buf[len(MAGIC) : need], "big")
        if size > self._limits.max_header:
            raise FrameTooLarge(f"snapshot header of {size} bytes exceeds the limit of {self._limits.max_header}")
        if len(self._buf) < need + size:
            return
        blob = bytes(self._buf[need : need + size])
        del self._buf[: need + size]
        self._take_header(blob)

    def _read_chunks(self) -> list[ReaderEvent]:
        assert self.header is not None and self._aead is not None
        events: list[ReaderEvent] = []
        limit = max_sealed_chunk(self.header.chunk_size)
        while self._pos < len(self._plan) and len(self._buf) >= _LEN:
            size = int.from_bytes(self._buf[:_LEN], "big")
            if size > limit or size < _TAG:
                raise FrameTooLarge(f"sealed chunk of {size} bytes is outside 16..{limit}")
            if len(self._buf) < _LEN + size:
                break
            s_index, name, i, piece_size = self._plan[self._pos]
            count = chunk_count(self.header.sections[s_index].size, self.header.chunk_size)
            sealed = bytes(self._buf[_LEN : _LEN + size])
            del self._buf[: _LEN + size]
            self._consumed += _LEN + size
            if self._consumed > self._bound:
                raise FrameTooLarge("the snapshot body is larger than its header allows")
            try:
                piece = self._aead.decrypt(_nonce(s_index, i), sealed, _aad(self._digest, s_index, i, i == count - 1))
            except InvalidTag as exc:
                raise SealError(f"chunk {i} of section {name!r} failed authentication") from exc
            self._pos += 1
            if self._open:
                events.append(SectionData(name, decompress_piece(piece, piece_size)))
            events.append(ChunkVerified(name, i, count, self._consumed))
        if self._pos == len(self._plan):
            if self._buf:
                raise SealError("bytes after the end of the snapshot")
            if not self._done:
                self._done = True
                events.append(SnapshotComplete(self.header, self._consumed))
        return events

    def close(self) -> None:
        """The input ended: raise unless the snapshot was complete."""
        if not self._done:
            self._failed = True
            raise SealError("the sealed snapshot ended early")
