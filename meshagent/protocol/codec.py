"""Strict CBOR for everything meshagent reads from the network or from disk.

Encoding is canonical (RFC 8949 core deterministic encoding), so that the same
message always has the same bytes and can be signed.

Decoding treats its input as hostile: the size is checked *before* any byte is
parsed, nesting is capped, indefinite-length items and duplicate map keys are
refused, map keys must be strings or integers, and every CBOR tag (dates,
bignums, shared references, ...) is refused. Only the plain data model —
``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list``, ``dict`` —
comes out. Any failure raises :class:`~meshagent.errors.DecodeError`, never a
cbor2 exception.

Also here: small typed accessors (:func:`field`) used by every message decoder,
and the length-prefixed frame format used on libp2p streams.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, TypeVar, overload

import cbor2

from meshagent.errors import DecodeError, FrameTooLarge

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT",
    "encode",
    "decode",
    "decode_map",
    "field",
    "opt_field",
    "frame",
    "FrameReader",
]

MAX_DEPTH: Final = 12
"""Default nesting limit for decoded documents; our messages need far fewer."""

MAX_DOCUMENT: Final = 1 << 20
"""Default size limit (bytes) for one decoded document: 1 MiB."""

_FRAME_HEADER: Final = 4

Value = None | bool | int | float | str | bytes | list["Value"] | dict[str | int, "Value"]

T = TypeVar("T")


class _RefuseAllTags(dict[int, Callable[[object], object]]):
    """A ``semantic_decoders`` mapping that claims every tag and refuses it.

    cbor2 consults this mapping before its built-in tag decoders, so nothing
    tagged — bignums, datetimes, shared references that could build cycles —
    gets decoded at all.
    """

    def __contains__(self, key: object) -> bool:
        return True

    def get(self, key: int, default: object = None) -> Callable[[object], object]:  # type: ignore[override]
        return self[key]

    def __getitem__(self, key: int) -> Callable[[object], object]:
        def refuse(_decoder: object) -> object:
            raise DecodeError(f"CBOR tag {key} is not allowed")

        return refuse


_REFUSE_ALL_TAGS: Final = _RefuseAllTags()


def _refuse_tag(_decoder: object, tag: object) -> object:
    raise DecodeError("CBOR tags are not allowed")


def encode(obj: object) -> bytes:
    """Encode ``obj`` as canonical CBOR. Raises ``TypeError`` for unsupported types."""
    try:
        return cbor2.dumps(obj, canonical=True)
    except cbor2.CBOREncodeError as exc:
        raise TypeError(f"cannot encode {type(obj).__name__} as CBOR: {exc}") from exc


def decode(data: bytes, *, max_size: int = MAX_DOCUMENT, max_depth: int = MAX_DEPTH) -> Value:
    """Decode one CBOR document from untrusted ``data`` under strict limits."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise FrameTooLarge(f"document of {len(data)} bytes exceeds the limit of {max_size}")
    if not data:
        raise DecodeError("empty document")
    try:
        value = cbor2.loads(
            bytes(data),
            max_depth=max_depth,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
            semantic_decoders=_REFUSE_ALL_TAGS,
            tag_hook=_refuse_tag,
        )
    except DecodeError:
        raise
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        cause = exc.__cause__
        if isinstance(cause, DecodeError):
            raise DecodeError(str(cause)) from exc
        raise DecodeError(f"malformed CBOR: {exc}") from exc
    return value  # type: ignore[no-any-return]


def decode_map(data: bytes, *, max_size: int = MAX_DOCUMENT, max_depth: int = MAX_DEPTH) -> dict[str | int, Value]:
    """Decode a document that must be a CBOR map."""
    value = decode(data, max_size=max_size, max_depth=max_depth)
    if not isinstance(value, dict):
        raise DecodeError(f"expected a map, got {type(value).__name__}")
    return value


@overload
def field(m: Mapping[str | int, Value], key: str, kind: type[T]) -> T: ...
@overload
def field(m: Mapping[str | int, Value], key: str, kind: tuple[type, ...]) -> object: ...
def field(m: Mapping[str | int, Value], key: str, kind: type[T] | tuple[type, ...]) -> T | object:
    """Return ``m[key]`` checked to be of ``kind``; raise :class:`DecodeError` otherwise.

    ``bool`` is never accepted where ``int`` is asked for (CBOR keeps them apart,
    Python does not).
    """
    if key not in m:
        raise DecodeError(f"missing field {key!r}")
    value = m[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise DecodeError(f"field {key!r} must be {_names(kinds)}, got bool")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kinds):
        raise DecodeError(f"field {key!r} must be {_names(kinds)}, got {type(value).__name__}")
    return value


def opt_field(m: Mapping[str | int, Value], key: str, kind: type[T], default: T) -> T:
    """Like :func:`field` but returns ``default`` when the key is absent or null."""
    if m.get(key) is None:
        return default
    return field(m, key, kind)


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kinds)


def frame(payload: bytes, *, max_size: int = MAX_DOCUMENT) -> bytes:
    """Prefix ``payload`` with its 4-byte big-endian length."""
    if len(payload) > max_size:
        raise FrameTooLarge(f"frame of {len(payload)} bytes exceeds the limit of {max_size}")
    return len(payload).to_bytes(_FRAME_HEADER, "big") + payload


class FrameReader:
    """Sans-I/O reader of length-prefixed frames.

    Feed it bytes as they arrive with :meth:`feed`; it returns the complete
    frames. A declared length above ``max_size`` raises :class:`FrameTooLarge`
    as soon as the 4-byte header is seen — the body is never buffered.
    """

    __slots__ = ("_buf", "_max")

    def __init__(self, *, max_size: int = MAX_DOCUMENT) -> None:
        self._buf = bytearray()
        self._max = max_size

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        while len(self._buf) >= _FRAME_HEADER:
            size = int.from_bytes(self._buf[:_FRAME_HEADER], "big")
            if size > self._max:
                raise FrameTooLarge(f"peer declared a frame of {size} bytes; the limit is {self._max}")
            if len(self._buf) < _FRAME_HEADER + size:
                break
            frames.append(bytes(self._buf[_FRAME_HEADER : _FRAME_HEADER + size]))
            del self._buf[: _FRAME_HEADER + size]
        return frames

    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buf)
