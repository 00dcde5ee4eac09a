"""Compiled wasm artefacts on disk, shared by agent modules, components and tools.

Compiling is slow (tens of seconds for a Python component), so each cache keeps
wasmtime's serialized artefact in a file named after the sha256 of the source
bytes. A file that wasmtime no longer accepts (another wasmtime version, a torn
write) is discarded and the code compiled again; a cache that cannot be written
only costs the next compilation.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from collections import OrderedDict
from typing import Generic, TypeVar

import wasmtime

__all__ = ["read_compiled", "write_compiled"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def read_compiled(path: Path | None, deserialize_file: Callable[[str], T], what: str) -> T | None:
    """The artefact cached at ``path``, or ``None`` (no cache, no file, or an unusable file, then removed).

    ``what`` names the cache in warnings (``compiled-module``, ``compiled-tool``...).
    """
    if path is None or not path.is_file():
        return None
    try:
        return deserialize_file(str(path))
    except wasmtime.WasmtimeError as exc:
        log.warning("discarding unusable %s cache %s: %s", what, path, exc)
        path.unlink(missing_ok=True)
        return None


def write_compiled(path: Path, artefact: bytes, what: str) -> None:
    """Cache ``artefact`` at ``path`` (written aside, then renamed, so readers never see half a file)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A name of its own: nodes of one machine share the cache and may compile at once.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(artefact)
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot write %s cache %s: %s", what, path, exc)


class Recent(Generic[T]):
    """The ``capacity`` most recently used compiled artefacts by sha256, in memory (thread-safe).

    Bounded, so a stream of distinct agents (or a hostile peer sending them) cannot make
    a node's memory grow without end; an evicted artefact is read back from the disk
    cache or compiled again. Agents that run keep their own reference to what they use.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sha256: str) -> T | None:
        with self._lock:
            item = self._items.get(sha256)
            if item is not None:
                self._items.move_to_end(sha256)
            return item

    def put(self, sha256: str, item: T) -> None:
        with self._lock:
            self._items[sha256] = item
            self._items.move_to_end(sha256)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
