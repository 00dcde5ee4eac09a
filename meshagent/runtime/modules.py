"""Compiling agent modules: one deterministic wasmtime engine, a content-addressed cache.

The engine is configured for determinism (NaN canonicalisation, deterministic
relaxed SIMD, no threads) and metering (fuel, a wasm stack limit, epoch
interruption for wall-clock limits). Compiled modules are cached by the sha256
of the author's bytes in memory and, when a cache directory is given, on disk
as wasmtime's serialized artefacts.

Epochs: every engine's epoch follows the monotonic clock in ticks of
:data:`EPOCH_TICK_S`, advanced by :func:`advance_epochs` (a supervisor calls it
on a timer); a Store whose agent has a deadline traps once its epoch passes it
(:func:`epoch_ticks`), so a guest spinning between host calls is stopped at its
wall-clock limit too.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import wasmtime

from meshagent.errors import LinkError, ModuleError
from meshagent.runtime.compile_cache import Recent, read_compiled, write_compiled
from meshagent.runtime.instrument import export_mutable_globals

__all__ = ["LoadedModule", "ModuleCache", "engine_for", "sha256_hex", "MAX_MODULE_BYTES", "EPOCH_TICK_S",
           "advance_epochs", "epoch_ticks"]

MAX_MODULE_BYTES: Final = 64 << 20
MODULES_IN_MEMORY: Final = 64
"""Compiled modules a process keeps in memory (least recently used dropped first)."""
def _wasmtime_version() -> str:
    try:
        return importlib.metadata.version("wasmtime")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_CACHE_TAG: Final = f"wasmtime-{_wasmtime_version()}-epoch"
"""Names compiled artefacts: the wasmtime version and the engine settings that change the code (epoch checks)."""

EPOCH_TICK_S: Final = 0.1
_NO_DEADLINE: Final = 1 << 48

_engines: dict[int, wasmtime.Engine] = {}
_engines_lock = threading.Lock()
_epochs: dict[int, int] = {}
"""Per engine (by id): the tick of the monotonic clock its current epoch stands for."""


def _tick_now() -> int:
    return int(time.monotonic() / EPOCH_TICK_S)


def advance_epochs() -> None:
    """Bring every engine's epoch up to the monotonic clock (idempotent: any number of callers)."""
    with _engines_lock:
        now = _tick_now()
        for engine in _engines.values():
            while _epochs[id(engine)] < now:
                engine.increment_epoch()
                _epochs[id(engine)] += 1


def epoch_ticks(engine: wasmtime.Engine, deadline: float | None) -> int:
    """The epoch deadline (ticks after the engine's current epoch) for a Store that must stop at
    ``deadline`` (``time.monotonic()``); effectively never for ``None`` or an engine not made here.

    Counted from the tick the engine's epoch stands for, so an epoch that lags the clock (no one
    advanced it for a while) does not stop the Store early when it catches up."""
    with _engines_lock:
        current = _epochs.get(id(engine))
    if deadline is None or current is None:
        return _NO_DEADLINE
    return max(1, math.ceil(deadline / EPOCH_TICK_S) - current)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def engine_for(stack_bytes: int) -> wasmtime.Engine:
    """The process-wide engine for a given wasm stack limit (a per-engine setting)."""
    with _engines_lock:
        engine = _engines.get(stack_bytes)
        if engine is None:
            config = wasmtime.Config()
            config.consume_fuel = True
            config.max_wasm_stack = stack_bytes
            config.cranelift_nan_canonicalization = True
            config.wasm_relaxed_simd = True
            config.wasm_relaxed_simd_deterministic = True
            config.wasm_threads = False
            config.parallel_compilation = False
            config.epoch_interruption = True
            engine = wasmtime.Engine(config)
            _engines[stack_bytes] = engine
            _epochs[id(engine)] = _tick_now()
        return engine


@dataclass(frozen=True, slots=True)
class LoadedModule:
    """A compiled, instrumented module and what the runtime needs to know about it."""

    sha256: str
    wasm: bytes
    module: wasmtime.Module
    global_exports: tuple[str, ...] | None
    """Exported mutable globals for memory images; ``None`` if the module could not be instrumented."""
    imports: tuple[tuple[str, str], ...]
    style: str
    """``command`` (exports ``_start``) or ``reactor`` (entry points called by the node)."""


class ModuleCache:
    """Compile once per content hash; keep compiled code in memory and optionally on disk."""

    def __init__(self, engine: wasmtime.Engine, cache_dir: Path | None = None) -> None:
        self._engine = engine
        self._dir = cache_dir
        self._loaded: Recent[LoadedModule] = Recent(MODULES_IN_MEMORY)

    @property
    def engine(self) -> wasmtime.Engine:
        return self._engine

    @property
    def cache_dir(self) -> Path | None:
        return self._dir

    def get(self, sha256: str) -> LoadedModule | None:
        return self._loaded.get(sha256)

    def load(self, wasm: bytes, known_imports: frozenset[tuple[str, str]]) -> LoadedModule:
        if len(wasm) > MAX_MODULE_BYTES:
            raise ModuleError(f"module of {len(wasm)} bytes is larger than the limit of {MAX_MODULE_BYTES}")
        sha = sha256_hex(wasm)
        if (hit := self._loaded.get(sha)) is not None:
            return hit
        instrumented, names = export_mutable_globals(wasm)
        module = self._compile(sha, instrumented)
        imports = tuple((imp.module, imp.name or "") for imp in module.imports)
        for imp in module.imports:
            if not isinstance(imp.type, wasmtime.FuncType):
                raise ModuleError(
                    f"the module imports {imp.module}.{imp.name} which is not a function; "
                    "agents must define their own memory and tables"
                )
        missing = [f"{m}.{n}" for m, n in imports if (m, n) not in known_imports]
        if missing:
            raise LinkError(
                f"the module imports {', '.join(missing)}, which meshagent does not provide; "
                "agents may only import WASI preview 1 and the functions declared in meshagent.h"
            )
        exports = {exp.name: exp.type for exp in module.exports}
        if not isinstance(exports.get("memory"), wasmtime.MemoryType):
            raise ModuleError("the module does not export its linear memory as 'memory'; build it as a WASI module")
        style = "command" if isinstance(exports.get("_start"), wasmtime.FuncType) else "reactor"
        loaded = LoadedModule(sha, wasm, module, names, imports, style)
        self._loaded.put(sha, loaded)
        return loaded

    def _compile(self, sha: str, wasm: bytes) -> wasmtime.Module:
        path = self._dir / f"{sha}.{_CACHE_TAG}.cwasm" if self._dir else None
        cached = read_compiled(path, lambda file: wasmtime.Module.deserialize_file(self._engine, file), "compiled-module")
        if cached is not None:
            return cached
        try:
            module = wasmtime.Module(self._engine, wasm)
        except wasmtime.WasmtimeError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and ln.strip() != "Caused by:"]
            detail = ": ".join(lines) or "invalid module"
            raise ModuleError(f"not a valid WebAssembly module ({detail}); rebuild it with `meshagent build`") from exc
        if path is not None:
            write_compiled(path, bytes(module.serialize()), "compiled-module")
        return module
