"""Memory images of a core agent's instance: linear memory and exported globals, in and out of a Store.

Taken only when no guest frame is on the stack (see :class:`~meshagent.runtime.snapshot.MemoryImage`);
restoring one lets replay start at the image's journal position instead of the beginning.
"""

from __future__ import annotations

import ctypes

import wasmtime

from meshagent.errors import JournalError, MemoryLimitExceeded
from meshagent.runtime.host_state import HostState
from meshagent.runtime.snapshot import MemoryImage

__all__ = ["capture_image", "restore_image"]

PAGE = 1 << 16


def restore_image(store: wasmtime.Store, memory: wasmtime.Memory, instance: wasmtime.Instance,
                  global_exports: tuple[str, ...], image: MemoryImage) -> None:
    """Write ``image``'s memory and globals into a fresh instance (its host state is the caller's to restore)."""
    size = memory.data_len(store)
    if image.memory_size < size:
        raise JournalError("the memory image is smaller than the module's initial memory")
    if image.memory_size > size:
        try:
            memory.grow(store, (image.memory_size - size) // PAGE)
        except wasmtime.WasmtimeError as exc:
            raise MemoryLimitExceeded(f"the memory image ({image.memory_size} bytes) exceeds this node's memory limit") from exc
    base = ctypes.addressof(memory.data_ptr(store).contents)
    ctypes.memset(base, 0, size)  # data segments; pages grown above are zero already
    for index, data in image.pages:
        ctypes.memmove(base + index * PAGE, data, len(data))
    exports = instance.exports(store)
    for name, value in image.globals:
        glob = exports[name] if name in global_exports else None
        if not isinstance(glob, wasmtime.Global):
            raise JournalError(f"the memory image sets a global {name!r} that the module does not have")
        glob.set_value(store, value)


def capture_image(store: wasmtime.Store, memory: wasmtime.Memory, instance: wasmtime.Instance,
                  global_exports: tuple[str, ...], position: int, state: HostState) -> MemoryImage:
    """The instance's memory, globals and host state now, at journal ``position``."""
    size = memory.data_len(store)
    raw = (ctypes.c_ubyte * size).from_address(ctypes.addressof(memory.data_ptr(store).contents))
    exports = instance.exports(store)
    values: list[tuple[str, int | float]] = []
    for name in global_exports:
        glob = exports[name]
        assert isinstance(glob, wasmtime.Global)
        values.append((name, glob.value(store)))
    return MemoryImage.capture(position, raw, tuple(values), state)
