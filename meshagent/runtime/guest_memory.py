"""Bounds-checked access to an agent's linear memory from inside a host call.

Every pointer and length an agent hands to the host goes through
:class:`GuestMemory`. A pointer or length outside the agent's own memory is
the agent's fault: it raises :class:`~meshagent.errors.GuestMemoryError` and
ends that agent, never the host.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Final

import wasmtime

from meshagent.errors import GuestMemoryError

__all__ = ["GuestMemory", "MAX_CSTRING"]

MAX_CSTRING: Final = 4096
"""Longest NUL-terminated string (labels, tool names, paths) the host reads."""

_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")


class GuestMemory:
    """A view of one instance's exported ``memory`` during one host call."""

    __slots__ = ("_memory", "_store", "_base", "_size")

    def __init__(self, memory: wasmtime.Memory, store: wasmtime.Store | wasmtime.Caller) -> None:
        self._memory = memory
        self._store = store
        self._base = ctypes.addressof(memory.data_ptr(store).contents)
        self._size = memory.data_len(store)

    @property
    def size(self) -> int:
        return self._size

    def check(self, ptr: int, length: int, what: str = "buffer") -> None:
        """Raise :class:`GuestMemoryError` unless ``[ptr, ptr+length)`` lies inside memory."""
        if ptr < 0 or length < 0 or ptr + length > self._size:
            raise GuestMemoryError(
                f"the agent passed an out-of-bounds {what}: pointer {ptr} length {length} "
                f"(its memory is {self._size} bytes); fix the pointer or length it hands to the host"
            )

    def read(self, ptr: int, length: int, what: str = "buffer") -> bytes:
        self.check(ptr, length, what)
        return ctypes.string_at(self._base + ptr, length) if length else b""

    def write(self, ptr: int, data: bytes, what: str = "buffer") -> None:
        self.check(ptr, len(data), what)
        if data:
            ctypes.memmove(self._base + ptr, data, len(data))

    def u32(self, ptr: int) -> int:
        value: int = _U32.unpack(self.read(ptr, 4, "u32 pointer"))[0]
        return value

    def put_u32(self, ptr: int, value: int) -> None:
        self.write(ptr, _U32.pack(value & 0xFFFFFFFF), "u32 pointer")

    def put_u64(self, ptr: int, value: int) -> None:
        self.write(ptr, _U64.pack(value & 0xFFFFFFFFFFFFFFFF), "u64 pointer")

    def cstring(self, ptr: int, what: str = "string") -> bytes:
        """Read a NUL-terminated string of at most :data:`MAX_CSTRING` bytes."""
        self.check(ptr, 1, what)
        window = min(MAX_CSTRING + 1, self._size - ptr)
        raw = ctypes.string_at(self._base + ptr, window)
        end = raw.find(b"\0")
        if end < 0:
            raise GuestMemoryError(
                f"the agent passed a {what} at {ptr} with no NUL terminator within "
                f"{MAX_CSTRING} bytes (or before the end of its memory)"
            )
        return raw[:end]

    def iovecs(self, ptr: int, count: int) -> list[tuple[int, int]]:
        """Decode ``count`` WASI iovecs (pointer, length) and check each buffer."""
        if count < 0 or count > 1024:
            raise GuestMemoryError(f"the agent passed {count} iovecs; at most 1024 are allowed")
        raw = self.read(ptr, 8 * count, "iovec array")
        out: list[tuple[int, int]] = []
        for i in range(count):
            buf, length = struct.unpack_from("<II", raw, 8 * i)
            self.check(buf, length, "iovec buffer")
            out.append((buf, length))
        return out
