"""Bounds checks on guest pointers: everything outside linear memory is a GuestMemoryError."""

from __future__ import annotations

import pytest
import wasmtime
from hypothesis import given
from hypothesis import strategies as st

from meshagent.errors import GuestMemoryError
from meshagent.runtime.guest_memory import MAX_CSTRING, GuestMemory

PAGES = 2
SIZE = PAGES * 65536


def _memory() -> GuestMemory:
    store = wasmtime.Store()
    memory = wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(PAGES, PAGES)))
    return GuestMemory(memory, store)


MEMORY = _memory()


@given(st.integers(-(1 << 33), 1 << 33), st.integers(-(1 << 20), 1 << 20))
def test_read_is_allowed_exactly_inside_memory(ptr: int, length: int) -> None:
    inside = ptr >= 0 and length >= 0 and ptr + length <= SIZE
    if inside:
        assert len(MEMORY.read(ptr, length)) == length
    else:
        with pytest.raises(GuestMemoryError, match="out-of-bounds"):
            MEMORY.read(ptr, length)


def test_write_read_and_strings() -> None:
    MEMORY.write(100, b"label\0rest")
    assert MEMORY.cstring(100) == b"label"
    MEMORY.put_u32(200, 0xDEADBEEF)
    assert MEMORY.u32(200) == 0xDEADBEEF
    with pytest.raises(GuestMemoryError):
        MEMORY.write(SIZE - 2, b"abc")
    MEMORY.write(SIZE - 3, b"xyz")  # no NUL before the end of memory
    with pytest.raises(GuestMemoryError, match="NUL"):
        MEMORY.cstring(SIZE - 3)
    MEMORY.write(1000, b"a" * (MAX_CSTRING + 10) + b"\0")
    with pytest.raises(GuestMemoryError, match="NUL"):
        MEMORY.cstring(1000)


def test_iovecs_are_checked_one_by_one() -> None:
    import struct

    MEMORY.write(0, struct.pack("<IIII", 16, 8, SIZE - 4, 8))
    with pytest.raises(GuestMemoryError, match="iovec buffer"):
        MEMORY.iovecs(0, 2)
    assert MEMORY.iovecs(0, 1) == [(16, 8)]
    with pytest.raises(GuestMemoryError):
        MEMORY.iovecs(0, 5000)
