"""Running a WASI command-line program as a tool, in a sandbox of its own.

A tool run gets a fresh wasmtime ``Store`` with the limits its caller gives it
(fuel, linear memory, output bytes; the tool registry clamps the manifest's
asks to the node's caps and the agent's fuel, and stops the run at the agent's
wall-clock deadline), the agent's files mounted as its preopened
``/`` (a :class:`~meshagent.runtime.vfs.FileView` over a *copy* of the
agent's overlay: what the tool writes comes back as the result's writes),
a fixed clock, seeded randomness, an empty environment and no stdin. It cannot
reach anything else: the host's disk, network and clocks are not there, and a
path that climbs out of ``/`` answers ``ENOTCAPABLE``.

The WASI functions are meshagent's own (:mod:`meshagent.runtime.wasi`), run
live: the agent journals the whole tool run as one ``mesh_tool`` entry.
Compiled tools are cached by sha256 (:class:`ToolModules`), and one linker
per engine serves every run: its host functions find the current run through
a thread-local, so a warm run costs a Store, an instantiation and the run.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import wasmtime

from meshagent.config import SandboxLimits
from meshagent.errors import AgentExit, MemoryLimitExceeded, MeshError, ModuleError
from meshagent.runtime.compile_cache import read_compiled, write_compiled
from meshagent.runtime.costs import out_of_fuel
from meshagent.runtime.guest_memory import GuestMemory
from meshagent.runtime.host_state import HostState
from meshagent.runtime.modules import _CACHE_TAG, epoch_ticks
from meshagent.runtime.traps import map_trap, trap_text
from meshagent.runtime.vfs import FileView
from meshagent.runtime.wasi import MODULE as WASI_MODULE
from meshagent.runtime.wasi import WASI_NAMES, func_type, wasi_functions

__all__ = ["ToolModules", "WasiToolRun", "run_wasi_tool", "MAX_TOOL_OUTPUT", "MAX_TOOL_MODULE"]

MAX_TOOL_OUTPUT: Final = 1 << 20
MAX_TOOL_MODULE: Final = 32 << 20
_EPOCH_NS: Final = 1_700_000_000_000_000_000


@dataclass(frozen=True, slots=True)
class WasiToolRun:
    """How one tool run ended. ``error`` names the limit or trap that stopped it (else ``None``)."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    error: str | None
    fuel_used: int


class _ToolWorld:
    """A fixed clock (advancing 1 µs per call) and randomness seeded by the call count."""

    def now_ns(self, clock_id: int, position: int) -> int:
        return _EPOCH_NS + position * 1000 if clock_id == 0 else position * 1000

    def random_bytes(self, n: int, position: int) -> bytes:
        out = bytearray()
        counter = 0
        while len(out) < n:
            out += hashlib.sha256(struct.pack("<QQ", position, counter)).digest()
            counter += 1
        return bytes(out[:n])

    def sleep(self, seconds: float) -> None:
        return None


_WORLD: Final = _ToolWorld()


class _Run:
    """The ``HostCalls`` surface that :func:`~meshagent.runtime.wasi.wasi_functions` needs, for one run."""

    __slots__ = ("argv", "env", "fs", "state", "limits", "calls", "caller", "memory", "pending", "fuel_left")

    world = _WORLD

    def __init__(self, argv: tuple[str, ...], fs: FileView, limits: SandboxLimits) -> None:
        self.argv = argv
        self.env: tuple[tuple[str, str], ...] = ()
        self.fs = fs
        self.state = HostState()
        self.limits = limits
        self.calls = 0
        self.caller: wasmtime.Caller | None = None
        self.memory: wasmtime.Memory | None = None
        self.pending: BaseException | None = None
        self.fuel_left: int | None = None
        """Fuel left when a host call unwound the tool (proc_exit): the trap that follows uses the rest."""

    @property
    def position(self) -> int:
        return self.calls

    def sleep(self, seconds: float) -> None:
        return None  # a tool's clock is fixed: its sleeps take no time

    def charge(self, units: int, what: str) -> None:
        """Host work inside the tool is paid from the tool's fuel (which its agent pays for)."""
        caller = self.caller
        if units <= 0 or caller is None:
            return
        left = wasmtime.Store.get_fuel(caller)  # type: ignore[arg-type]
        if units > left:
            wasmtime.Store.set_fuel(caller, 0)  # type: ignore[arg-type]
            raise out_of_fuel(self.limits.fuel, what)
        wasmtime.Store.set_fuel(caller, left - units)  # type: ignore[arg-type]

    def mem(self) -> GuestMemory:
        assert self.caller is not None
        if self.memory is None:
            export = self.caller.get("memory")
            if not isinstance(export, wasmtime.Memory):
                raise ModuleError("the tool does not export its memory")
            self.memory = export
        return GuestMemory(self.memory, self.caller)

    def call(self, name: str, parts: tuple[bytes | int | str, ...], live: Callable[[], tuple[int, bytes | None]],
             *, nondet: bool = False) -> tuple[int, bytes | None]:
        self.calls += 1
        return live()


class _Current(threading.local):
    run: _Run | None = None


_current = _Current()


class _Proxy:
    """Forwards attribute reads to the run active on this thread (the shared linker's ``h``)."""

    def __getattr__(self, name: str) -> object:
        run = _current.run
        if run is None:
            raise ModuleError("a WASI tool function was called outside a tool run")
        return getattr(run, name)


def _host(fn: Callable[..., int | None], returns: bool) -> Callable[..., int | None]:
    default = 0 if returns else None

    def host(caller: wasmtime.Caller, *args: int) -> int | None:
        run = _current.run
        if run is None or run.pending is not None:
            return default
        run.caller = caller
        try:
            return fn(*args)
        except BaseException as exc:  # unwound after the trap; never crosses wasmtime
            run.pending = exc
            try:
                run.fuel_left = wasmtime.Store.get_fuel(caller)  # type: ignore[arg-type]
                wasmtime.Store.set_fuel(caller, 0)  # type: ignore[arg-type]
            except wasmtime.WasmtimeError:
                pass
            return default
        finally:
            run.caller = None

    return host


class ToolModules:
    """Compiled WASI tools by sha256, in memory and optionally on disk; one shared linker."""

    def __init__(self, engine: wasmtime.Engine, cache_dir: Path | None = None) -> None:
        self._engine = engine
        self._dir = cache_dir
        self._compiled: dict[str, wasmtime.Module] = {}
        self._lock = threading.Lock()
        self._linker: wasmtime.Linker | None = None

    @property
    def engine(self) -> wasmtime.Engine:
        return self._engine

    def linker(self) -> wasmtime.Linker:
        with self._lock:
            if self._linker is None:
                linker = wasmtime.Linker(self._engine)
                for name, (sig, fn) in wasi_functions(_Proxy()).items():  # type: ignore[arg-type]
                    linker.define_func(WASI_MODULE, name, func_type(sig), _host(fn, sig.endswith("i")), access_caller=True)
                self._linker = linker
            return self._linker

    def is_compiled(self, sha256: str) -> bool:
        with self._lock:
            return sha256 in self._compiled

    def compile(self, sha256: str, wasm: bytes) -> wasmtime.Module:
        """The compiled tool (compiling it once); checks the bytes against ``sha256`` and the imports."""
        with self._lock:
            hit = self._compiled.get(sha256)
        if hit is not None:
            return hit
        if len(wasm) > MAX_TOOL_MODULE or hashlib.sha256(wasm).hexdigest() != sha256:
            raise ModuleError(f"tool module {sha256[:16]}… does not match its sha256 (or is too large)")
        module = self._load(sha256, wasm)
        for imp in module.imports:
            if (imp.module, imp.name or "") not in WASI_NAMES or not isinstance(imp.type, wasmtime.FuncType):
                raise ModuleError(f"tool {sha256[:16]}… imports {imp.module}.{imp.name}: tools may only import WASI preview 1")
        exports = {e.name: e.type for e in module.exports}
        if not isinstance(exports.get("_start"), wasmtime.FuncType) or not isinstance(exports.get("memory"), wasmtime.MemoryType):
            raise ModuleError(f"tool {sha256[:16]}… is not a WASI command (it needs _start and memory exports)")
        with self._lock:
            self._compiled[sha256] = module
        return module

    def _load(self, sha256: str, wasm: bytes) -> wasmtime.Module:
        path = self._dir / f"{sha256}.{_CACHE_TAG}.tool.cwasm" if self._dir is not None else None
        cached = read_compiled(path, lambda file: wasmtime.Module.deserialize_file(self._engine, file), "compiled-tool")
        if cached is not None:
            return cached
        try:
            module = wasmtime.Module(self._engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise ModuleError(f"tool {sha256[:16]}… is not a valid WebAssembly module: {trap_text(exc)}") from exc
        if path is not None:
            write_compiled(path, bytes(module.serialize()), "compiled-tool")
        return module


def run_wasi_tool(modules: ToolModules, module: wasmtime.Module, *, argv: tuple[str, ...], fs: FileView,
                  memory_bytes: int, fuel: int, output_bytes: int = MAX_TOOL_OUTPUT,
                  deadline: float | None = None) -> WasiToolRun:
    """Run a compiled tool to its end under its limits (and until ``deadline``, a ``time.monotonic()``).
    Limits and traps end the run, never the caller."""
    if _current.run is not None:
        raise ModuleError("a WASI tool cannot run another tool")
    limits = SandboxLimits(fuel=fuel, memory_bytes=memory_bytes, output_bytes=output_bytes)
    run = _Run(argv, fs, limits)
    store = wasmtime.Store(modules.engine)
    store.set_limits(memory_size=memory_bytes, table_elements=10_000, instances=1, tables=2, memories=1)
    store.set_fuel(fuel)
    store.set_epoch_deadline(epoch_ticks(modules.engine, deadline))
    _current.run = run
    exit_code: int | None = None
    error: str | None = None
    memory_size = 0
    try:
        try:
            instance = modules.linker().instantiate(store, module)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise MemoryLimitExceeded(f"the tool cannot start within its memory limit of {memory_bytes} bytes ({trap_text(exc)})") from exc
        start = instance.exports(store)["_start"]
        memory = instance.exports(store)["memory"]
        assert isinstance(start, wasmtime.Func) and isinstance(memory, wasmtime.Memory)
        try:
            start(store)
            exit_code = 0
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            pending, run.pending = run.pending, None
            memory_size = memory.data_len(store)
            if isinstance(pending, AgentExit):
                exit_code = pending.code
            elif isinstance(pending, MeshError):
                error = f"{type(pending).__name__}: {pending}"
            elif pending is not None:
                raise pending from None
            else:
                mapped = map_trap(exc, memory_size, limits)
                error = f"{type(mapped).__name__}: {str(mapped).replace('the agent', 'the tool')}"
    except MeshError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        _current.run = None
    left = run.fuel_left if run.fuel_left is not None else store.get_fuel()
    used = fuel - left if exit_code is not None or error is not None else 0
    return WasiToolRun(exit_code, bytes(run.state.stdout), bytes(run.state.stderr), error, max(0, used))
