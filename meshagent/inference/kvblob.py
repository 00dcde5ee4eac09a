"""The KV blob: one session's llama.cpp sequence state, self-describing and bound.

Layout (all lengths exact, checked before anything is used)::

    magic "MKV1" | header length (u32, big endian) | header (canonical CBOR) | state

The header names what the state is a cache *of* and *for*:

``model``    sha256 of the GGUF file the state was computed with;
``engine``   the engine version (llama-cpp-python, which pins llama.cpp);
``n_tokens`` how many of the session's tokens the state covers;
``tokens``   sha256 of those tokens (little-endian int32), so a blob can never
             be applied to another conversation;
``state_len`` / ``state_sha256``  exact length and digest of the state bytes,
             so truncation and corruption are caught before llama.cpp reads a byte.

This module is pure (no llama.cpp, no I/O). The digest detects accidents, not
attackers: authenticity comes from the snapshot that carries the blob, which
the handoff seals and signs as a whole. For a blob sent on its own,
:func:`sign_blob` / :func:`open_signed_blob` wrap it in a signed envelope
(:mod:`meshagent.protocol.signed`, kind ``"kv"``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from meshagent.errors import DecodeError, KVStateError, MeshError
from meshagent.protocol import codec

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "KVHeader",
    "token_digest",
    "pack_blob",
    "unpack_blob",
    "sign_blob",
    "open_signed_blob",
    "check_seq_state",
    "SEQ_STATE_MAGIC",
]

MAGIC: Final = b"MKV1"
_PREFIX: Final = len(MAGIC) + 4
_MAX_HEADER: Final = 4096
_VERSION: Final = 1

SEQ_STATE_MAGIC: Final = 0xAF143CD8
"""First u32 of llama.cpp's per-sequence state (``io_magic`` in llama-context.cpp)."""
_SEQ_META: Final = 16
"""magic u32 | source seq id i32 | n_stream u32 | cell_count u32, then one record per cell."""


def token_digest(tokens: list[int]) -> str:
    """sha256 of the tokens as little-endian int32 (the binding of a blob to a conversation)."""
    return hashlib.sha256(np.asarray(tokens, dtype="<i4").tobytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class KVHeader:
    model_sha256: str
    engine: str
    n_tokens: int
    tokens_sha256: str
    state_len: int
    state_sha256: str

    def to_cbor(self) -> bytes:
        return codec.encode(
            {
                "v": _VERSION,
                "model": self.model_sha256,
                "engine": self.engine,
                "n_tokens": self.n_tokens,
                "tokens": self.tokens_sha256,
                "state_len": self.state_len,
                "state_sha256": self.state_sha256,
            }
        )


def pack_blob(*, model_sha256: str, engine: str, tokens: list[int], state: bytes) -> bytes:
    """Wrap a sequence ``state`` covering ``tokens`` into a bound blob."""
    header = KVHeader(
        model_sha256=model_sha256,
        engine=engine,
        n_tokens=len(tokens),
        tokens_sha256=token_digest(tokens),
        state_len=len(state),
        state_sha256=hashlib.sha256(state).hexdigest(),
    ).to_cbor()
    return MAGIC + len(header).to_bytes(4, "big") + header + state


def unpack_blob(
    blob: bytes,
    *,
    model_sha256: str,
    engine: str,
    tokens: list[int],
    max_state: int,
) -> tuple[KVHeader, int]:
    """Check ``blob`` against the model, engine and tokens it must be for.

    Returns the header and the offset of the state in ``blob``. Raises
    :class:`KVStateError` saying why a blob is refused: not a blob, truncated,
    trailing bytes, too large, corrupt, for another model/engine, or for
    other tokens. ``tokens`` may be longer than the blob covers (the blob
    then caches a prefix of them).
    """
    if not isinstance(blob, bytes):
        raise KVStateError(f"a KV blob must be bytes, not {type(blob).__name__}")
    if len(blob) < _PREFIX or not blob.startswith(MAGIC):
        raise KVStateError("not a KV blob (bad magic or too short)")
    hlen = int.from_bytes(blob[len(MAGIC) : _PREFIX], "big")
    if hlen > _MAX_HEADER:
        raise KVStateError(f"KV blob header of {hlen} bytes exceeds {_MAX_HEADER}")
    if len(blob) < _PREFIX + hlen:
        raise KVStateError("KV blob truncated inside its header")
    try:
        raw = codec.decode_map(blob[_PREFIX : _PREFIX + hlen], max_size=_MAX_HEADER, max_depth=2)
        version = codec.field(raw, "v", int)
        header = KVHeader(
            model_sha256=codec.field(raw, "model", str),
            engine=codec.field(raw, "engine", str),
            n_tokens=codec.field(raw, "n_tokens", int),
            tokens_sha256=codec.field(raw, "tokens", str),
            state_len=codec.field(raw, "state_len", int),
            state_sha256=codec.field(raw, "state_sha256", str),
        )
    except DecodeError as exc:
        raise KVStateError(f"KV blob header is malformed: {exc}") from exc
    if version != _VERSION:
        raise KVStateError(f"KV blob format version {version} is not supported")
    offset = _PREFIX + hlen
    if header.state_len <= 0 or header.state_len > max_state:
        raise KVStateError(f"KV blob declares {header.state_len} state bytes (limit {max_state})")
    actual = len(blob) - offset
    if actual < header.state_len:
        raise KVStateError(f"KV blob truncated: {actual} of {header.state_len} state bytes")
    if actual > header.state_len:
        raise KVStateError(f"KV blob has {actual - header.state_len} trailing bytes")
    if header.model_sha256 != model_sha256:
        raise KVStateError(f"KV blob is for model {header.model_sha256[:12]}…, not {model_sha256[:12]}…")
    if header.engine != engine:
        raise KVStateError(f"KV blob is from engine {header.engine!r}, this node runs {engine!r}")
    if not 0 < header.n_tokens <= len(tokens):
        raise KVStateError(f"KV blob covers {header.n_tokens} tokens; the session has {len(tokens)}")
    if token_digest(tokens[: header.n_tokens]) != header.tokens_sha256:
        raise KVStateError("KV blob is for another token history")
    if hashlib.sha256(memoryview(blob)[offset:]).hexdigest() != header.state_sha256:
        raise KVStateError("KV blob state is corrupt (digest mismatch)")
    return header, offset


def check_seq_state(blob: bytes, offset: int, length: int, *, n_tokens: int, cell_stride: int) -> None:
    """Check the cell records of a llama.cpp sequence state before llama.cpp reads it.

    llama.cpp restores whatever positions a state claims, and a cell at a
    negative or maximal position can then never be removed from its
    sequence. So the metadata must be exactly what an honest export of
    ``n_tokens`` tokens holds: one stream, ``n_tokens`` cells, cell *i* at
    position *i* in one sequence. ``cell_stride`` is the size of one cell
    record for this model (12 bytes, more with cell extensions), measured by
    the engine on its own export. The KV tensors that follow are checked by
    llama.cpp itself (types, row sizes, exact lengths).
    """
    if length < _SEQ_META or offset + length > len(blob):
        raise KVStateError("sequence state too short")
    head = np.frombuffer(blob, dtype="<u4", count=4, offset=offset)
    if int(head[0]) != SEQ_STATE_MAGIC:
        raise KVStateError("not a llama.cpp sequence state (bad magic)")
    if int(head[2]) != 1:
        raise KVStateError(f"sequence state has {int(head[2])} streams, expected 1")
    if int(head[3]) != n_tokens:
        raise KVStateError(f"sequence state holds {int(head[3])} cells, the blob covers {n_tokens} tokens")
    if cell_stride < 12 or cell_stride % 4:
        raise KVStateError(f"invalid cell record size {cell_stride}")
    if _SEQ_META + n_tokens * cell_stride > length:
        raise KVStateError("sequence state truncated inside its cell records")
    cells = np.frombuffer(blob, dtype="<i4", count=n_tokens * cell_stride // 4, offset=offset + _SEQ_META)
    cells = cells.reshape(n_tokens, cell_stride // 4)
    if not np.array_equal(cells[:, 0], np.arange(n_tokens, dtype=np.int32)):
        raise KVStateError("sequence state positions are not 0, 1, 2, …")
    if not np.all(cells[:, 1] == 1):
        raise KVStateError("sequence state cells must each belong to exactly one sequence")


def sign_blob(blob: bytes, key: Ed25519PrivateKey) -> bytes:
    """A signed envelope (kind ``"kv"``) around ``blob``, for sending it on its own."""
    from meshagent.protocol import signed

    return signed.sign("kv", blob, key)


def open_signed_blob(envelope: bytes, *, max_size: int, expected_signer: str | None = None) -> bytes:
    """The blob inside a signed envelope; :class:`KVStateError` if the signature or size fails."""
    from meshagent.protocol import signed

    try:
        return signed.verify(envelope, kind="kv", max_size=max_size, expected_signer=expected_signer).payload
    except MeshError as exc:
        raise KVStateError(f"KV envelope refused: {exc}") from exc
