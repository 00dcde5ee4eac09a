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

The state itself is llama.cpp's per-sequence format; :func:`check_seq_state`
walks it with explicit bounds against the shape of this node's own model
(:class:`SeqStateShape`) before llama.cpp reads a byte of it.

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
    "TensorShape",
    "SeqStateShape",
    "measure_shape",
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


@dataclass(frozen=True, slots=True)
class TensorShape:
    """One layer's K or V tensor as a sequence state writes it (llama-kv-cache.cpp, ``state_write_data``)."""

    ggml_type: int
    """The ggml type id (0 f32, 1 f16, 30 bf16, quantized types otherwise)."""
    row_bytes: int
    """Bytes per cell: one row of the tensor (for a transposed V: the element size)."""
    n_embd: int = 0
    """Transposed V only: elements per cell (the GQA embedding size); 0 otherwise."""

    def data_bytes(self, n_cells: int) -> int:
        return n_cells * self.row_bytes * (self.n_embd or 1)


@dataclass(frozen=True, slots=True)
class SeqStateShape:
    """What a llama.cpp sequence state of this model holds, cell for cell and layer for layer.

    The layout (``llama_state_seq_get_data``; llama-context.cpp and
    llama-kv-cache.cpp ``state_write``), all little endian::

        magic u32 | seq id i32 | n_stream u32 (1: one unified cache)
        per stream: cell_count u32
          cell_count x (pos i32 | n_seq_id u32 | cell ext | n_seq_id x seq id i32)
          v_trans u32 | n_layer u32
          n_layer x (K type i32 | K row bytes u64 | cell_count rows)
          per layer with V, not transposed: V type i32 | V row bytes u64 | cell_count rows
                                transposed: V type i32 | element size u32 | n_embd u32 | n_embd x cell_count elements

    Measured on this node's own export (:func:`measure_shape`), so a blob from a
    peer is held to exactly what this model, this build and this context make.
    """

    cell_ext: int
    """Bytes of the per-cell extension (M-RoPE position, n-gram token), 0 for most models."""
    v_trans: bool
    k: tuple[TensorShape, ...]
    v: tuple[TensorShape, ...]

    def size(self, n_cells: int) -> int:
        """Exact bytes of a one-sequence state of ``n_cells`` cells, each in that one sequence."""
        cells = n_cells * (_CELL_FIXED + self.cell_ext + 4)
        tensors = sum(_TENSOR_HEAD + t.data_bytes(n_cells) for t in self.k + self.v)
        return _SEQ_META + cells + _DATA_HEAD + tensors


_CELL_FIXED: Final = 8
"""pos i32 | n_seq_id u32."""
_DATA_HEAD: Final = 8
"""v_trans u32 | n_layer u32."""
_TENSOR_HEAD: Final = 12
"""type i32 | row bytes u64 (or, transposed V: type i32 | element size u32 | n_embd u32)."""
_MAX_CELL_EXT: Final = 64
_MAX_LAYERS: Final = 4096
_FLOAT_TYPES: Final = {0: "<f4", 1: "<f2"}
_BF16: Final = 30


class _Reader:
    """Little-endian reads with explicit bounds: every read is checked against the end first."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, offset: int, length: int) -> None:
        self.data, self.pos, self.end = data, offset, offset + length

    def take(self, n: int, what: str) -> int:
        if n < 0 or self.pos + n > self.end:
            raise KVStateError(f"sequence state truncated in {what}")
        at = self.pos
        self.pos += n
        return at

    def u32(self, what: str) -> int:
        return int.from_bytes(self.data[self.take(4, what) : self.pos], "little")

    def i32(self, what: str) -> int:
        return int.from_bytes(self.data[self.take(4, what) : self.pos], "little", signed=True)

    def u64(self, what: str) -> int:
        return int.from_bytes(self.data[self.take(8, what) : self.pos], "little")


def measure_shape(state: bytes, n_cells: int) -> SeqStateShape | None:
    """The shape of this model's sequence states, from an export of its own of ``n_cells`` cells.

    The cell extension's size is not written in the state: every plausible size
    is tried and the one whose walk ends exactly at the end of the state is
    taken. ``None`` when no size (or more than one) fits: a layout this code
    does not know, so no blob of a peer can be checked.
    """
    fits = []
    for ext in range(0, _MAX_CELL_EXT + 1, 4):
        try:
            shape = _walk_own(state, n_cells, ext)
        except KVStateError:
            continue
        fits.append(shape)
    return fits[0] if len(fits) == 1 else None


def _walk_own(state: bytes, n_cells: int, ext: int) -> SeqStateShape:
    r = _Reader(state, 0, len(state))
    if r.u32("magic") != SEQ_STATE_MAGIC:
        raise KVStateError("not a llama.cpp sequence state (bad magic)")
    r.i32("seq id")
    if r.u32("n_stream") != 1 or r.u32("cell count") != n_cells:
        raise KVStateError("not a one-stream state of the cells asked for")
    for _ in range(n_cells):
        r.take(4, "cell")
        n_seq = r.u32("cell")
        if n_seq != 1:
            raise KVStateError("a cell in more than one sequence")
        r.take(ext + 4 * n_seq, "cell")
    v_trans = r.u32("v_trans")
    n_layer = r.u32("n_layer")
    if v_trans not in (0, 1) or not 0 < n_layer <= _MAX_LAYERS:
        raise KVStateError("implausible tensor header")
    k = []
    for _ in range(n_layer):
        t, row = r.i32("K type"), r.u64("K row size")
        if not 0 <= t < 1024 or not 0 < row < 1 << 32:
            raise KVStateError("implausible K tensor")
        r.take(row * n_cells, "K data")
        k.append(TensorShape(t, row))
    v = []
    while r.pos < r.end and len(v) < n_layer:
        t = r.i32("V type")
        if not 0 <= t < 1024:
            raise KVStateError("implausible V tensor")
        if v_trans:
            el, n_embd = r.u32("V element size"), r.u32("V n_embd")
            if not 0 < el <= 8 or not 0 < n_embd < 1 << 24:
                raise KVStateError("implausible V tensor")
            r.take(el * n_embd * n_cells, "V data")
            v.append(TensorShape(t, el, n_embd))
        else:
            row = r.u64("V row size")
            if not 0 < row < 1 << 32:
                raise KVStateError("implausible V tensor")
            r.take(row * n_cells, "V data")
            v.append(TensorShape(t, row))
    if r.pos != r.end:
        raise KVStateError("trailing bytes")
    return SeqStateShape(cell_ext=ext, v_trans=bool(v_trans), k=tuple(k), v=tuple(v))


def check_seq_state(blob: bytes, offset: int, length: int, *, n_tokens: int, shape: SeqStateShape) -> None:
    """Check a peer's llama.cpp sequence state against this model's ``shape`` before llama.cpp reads a byte.

    The exact size of an honest state of ``n_tokens`` cells is computed from the
    shape first, so a state of any other length is refused before any field is
    read. Then every field is walked with explicit bounds and must be what an
    honest export of ``n_tokens`` tokens of this model holds: one stream,
    ``n_tokens`` cells, cell *i* at position *i* in exactly one sequence (llama.cpp
    restores whatever positions a state claims, and a cell at a negative or
    maximal position can never be removed again), the same V layout, layer
    count, tensor types and row sizes, and finite values in float tensors.
    """
    if n_tokens <= 0:
        raise KVStateError("a sequence state must cover at least one token")
    expected = shape.size(n_tokens)
    if length != expected:
        raise KVStateError(f"sequence state of {length} bytes; {n_tokens} cells of this model take {expected}")
    if offset < 0 or offset + length > len(blob):
        raise KVStateError("sequence state out of the blob's bounds")
    r = _Reader(blob, offset, length)
    if r.u32("magic") != SEQ_STATE_MAGIC:
        raise KVStateError("not a llama.cpp sequence state (bad magic)")
    r.i32("seq id")  # llama.cpp restores into the sequence it is told, whatever this says
    n_stream = r.u32("n_stream")
    if n_stream != 1:
        raise KVStateError(f"sequence state has {n_stream} streams, expected 1")
    cells = r.u32("cell count")
    if cells != n_tokens:
        raise KVStateError(f"sequence state holds {cells} cells, the blob covers {n_tokens} tokens")
    stride = _CELL_FIXED + shape.cell_ext + 4
    at = r.take(n_tokens * stride, "cell records")
    records = np.frombuffer(blob, dtype="<i4", count=n_tokens * stride // 4, offset=at).reshape(n_tokens, stride // 4)
    if not np.array_equal(records[:, 0], np.arange(n_tokens, dtype=np.int32)):
        raise KVStateError("sequence state positions are not 0, 1, 2, …")
    if not np.all(records[:, 1] == 1):
        raise KVStateError("sequence state cells must each belong to exactly one sequence")
    if np.any(records[:, -1] < 0):
        raise KVStateError("sequence state names a negative sequence id")
    v_trans = r.u32("v_trans")
    if v_trans != int(shape.v_trans):
        raise KVStateError(f"sequence state has v_trans={v_trans}; this model's cache has {int(shape.v_trans)}")
    n_layer = r.u32("n_layer")
    if n_layer != len(shape.k):
        raise KVStateError(f"sequence state has {n_layer} layers; this model has {len(shape.k)}")
    for i, want in enumerate(shape.k):
        _tensor(r, blob, want, n_tokens, f"K of layer {i}", transposed=False)
    for i, want in enumerate(shape.v):
        _tensor(r, blob, want, n_tokens, f"V of layer {i}", transposed=shape.v_trans)
    if r.pos != r.end:  # unreachable when the size matched; kept so the walk itself is complete
        raise KVStateError("sequence state has trailing bytes")


def _tensor(r: _Reader, blob: bytes, want: TensorShape, n_cells: int, what: str, *, transposed: bool) -> None:
    t = r.i32(f"{what} type")
    if t != want.ggml_type:
        raise KVStateError(f"{what} has ggml type {t}; this model's cache has {want.ggml_type}")
    if transposed:
        el, n_embd = r.u32(f"{what} element size"), r.u32(f"{what} n_embd")
        if (el, n_embd) != (want.row_bytes, want.n_embd):
            raise KVStateError(f"{what} has {n_embd} elements of {el} bytes; this model has {want.n_embd} of {want.row_bytes}")
    else:
        row = r.u64(f"{what} row size")
        if row != want.row_bytes:
            raise KVStateError(f"{what} has rows of {row} bytes; this model's are {want.row_bytes}")
    size = want.data_bytes(n_cells)
    at = r.take(size, f"{what} data")
    _check_finite(blob, at, size, t, what)


def _check_finite(blob: bytes, at: int, size: int, ggml_type: int, what: str) -> None:
    """Float K/V values must be finite (a NaN or infinity poisons every later token of the session)."""
    if ggml_type in _FLOAT_TYPES:
        dtype = np.dtype(_FLOAT_TYPES[ggml_type])
        values = np.frombuffer(blob, dtype=dtype, count=size // dtype.itemsize, offset=at)
        if not np.isfinite(values).all():
            raise KVStateError(f"{what} holds a NaN or an infinity")
    elif ggml_type == _BF16:
        bits = np.frombuffer(blob, dtype="<u2", count=size // 2, offset=at)
        if np.any((bits & 0x7F80) == 0x7F80):
            raise KVStateError(f"{what} holds a NaN or an infinity")


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
