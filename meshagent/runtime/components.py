"""WebAssembly components (Python agents): detection and a compile cache by content hash.

A Python agent is a component built by ``componentize-py`` against the
``meshagent:agent`` world (``meshagent/sdk/wit/agent.wit``), with CPython
inside. Compiling one takes tens of seconds, so compiled components are
cached in memory and on disk by the sha256 of their bytes: a node compiles a
given agent once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import wasmtime
from wasmtime import component as wc

from meshagent.errors import ModuleError
from meshagent.runtime.compile_cache import Recent, read_compiled, write_compiled
from meshagent.runtime.modules import _CACHE_TAG, MAX_MODULE_BYTES, sha256_hex
from meshagent.runtime.traps import trap_text

__all__ = ["is_component", "LoadedComponent", "ComponentCache", "MAX_COMPONENT_BYTES"]

log = logging.getLogger(__name__)

MAX_COMPONENT_BYTES: Final = 128 << 20
COMPONENTS_IN_MEMORY: Final = 8
"""Compiled components (tens of MB of code each) a process keeps in memory."""
_COMPONENT_HEADER: Final = b"\0asm\x0d\x00\x01\x00"


def is_component(wasm: bytes) -> bool:
    """Whether the bytes are a WebAssembly component (not a core module)."""
    return wasm[:8] == _COMPONENT_HEADER


@dataclass(frozen=True, slots=True)
class LoadedComponent:
    sha256: str
    wasm: bytes
    component: wc.Component
    imports: tuple[str, ...]
    """Instance names the component imports (``wasi:clocks/wall-clock@0.2.9``, ``meshagent:agent/host@0.1.0``...)."""


class ComponentCache:
    """Compile once per content hash; keep compiled components in memory and optionally on disk."""

    def __init__(self, engine: wasmtime.Engine, cache_dir: Path | None = None) -> None:
        self._engine = engine
        self._dir = cache_dir
        self._loaded: Recent[LoadedComponent] = Recent(COMPONENTS_IN_MEMORY)

    @property
    def engine(self) -> wasmtime.Engine:
        return self._engine

    def load(self, wasm: bytes) -> LoadedComponent:
        if len(wasm) > max(MAX_COMPONENT_BYTES, MAX_MODULE_BYTES) or not is_component(wasm):
            raise ModuleError("not a WebAssembly component of an acceptable size")
        sha = sha256_hex(wasm)
        hit = self._loaded.get(sha)
        if hit is not None:
            return hit
        component = self._compile(sha, wasm)
        imports = tuple(component.type.imports(self._engine))
        loaded = LoadedComponent(sha, wasm, component, imports)
        self._loaded.put(sha, loaded)
        return loaded

    def _compile(self, sha: str, wasm: bytes) -> wc.Component:
        path = self._dir / f"{sha}.{_CACHE_TAG}.ccwasm" if self._dir is not None else None
        cached = read_compiled(path, lambda file: wc.Component.deserialize_file(self._engine, file), "compiled-component")
        if cached is not None:
            return cached
        log.info("compiling component %s… (%d bytes); this takes a while once", sha[:16], len(wasm))
        try:
            component = wc.Component(self._engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise ModuleError(f"not a valid WebAssembly component ({trap_text(exc)}); rebuild it with `meshagent build`") from exc
        if path is not None:
            write_compiled(path, bytes(component.serialize()), "compiled-component")
        return component
