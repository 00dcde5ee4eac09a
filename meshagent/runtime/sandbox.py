"""One agent in a wasmtime sandbox, driven by its journal.

:class:`Agent` owns an agent's truth (journal, rollback counts, labels) and,
while it runs, one wasmtime ``Store``. Every host call goes through
:meth:`Agent.call_digest`: while the journal has entries left the call is a
*replay* (checked, and answered from the journal when the answer came from
the world); after that it is *live* and appended.

Unwinding the guest (``proc_exit``, rollback, a suspension, an error in a
host call) never lets a Python exception cross wasmtime: the host function
stores it, sets the store's fuel to zero so the guest traps at once, and the
exception is re-raised here. (wasmtime-py keeps the last host exception in a
process-wide global, which agents on other threads could pick up.) The Store
is discarded after every trap.

Host work is paid from the agent's fuel (:meth:`Agent.charge`), and the Store's
epoch deadline stops a guest that spins past the agent's wall-clock limit.

All methods block; the supervisor runs agents on worker threads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeAlias

import wasmtime

from meshagent.config import SandboxLimits
from meshagent.errors import (
    AgentError,
    AgentExit,
    DivergenceError,
    JournalError,
    LinkError,
    MemoryLimitExceeded,
    MeshError,
    ModuleError,
)
from meshagent.protocol import codec
from meshagent.runtime.agent_control import AgentControl
from meshagent.runtime.agent_log import OperatorLog
from meshagent.runtime.costs import out_of_fuel
from meshagent.runtime.guest_memory import GuestMemory
from meshagent.runtime.hooks import AgentHooks, StandaloneHooks
from meshagent.runtime.host_state import HostState
from meshagent.runtime.ids import new_agent_id
from meshagent.runtime.images import capture_image, restore_image
from meshagent.runtime.journal import Entry, Journal, digest
from meshagent.runtime.mesh_abi import MESH_NAMES, Rollback, mesh_functions
from meshagent.runtime.modules import LoadedModule, ModuleCache, epoch_ticks
from meshagent.runtime.outcome import Outcome
from meshagent.runtime.services import HostServices, NoServices, RealWorld, Suspend, World
from meshagent.runtime.snapshot import AgentSnapshot, MemoryImage
from meshagent.runtime.tools.registry import ToolBox
from meshagent.runtime.tools.runtime import ToolRuntime, default_tool_runtime, manifest_of
from meshagent.runtime.traps import map_trap, trap_text
from meshagent.runtime.wasi import WASI_NAMES, func_type, wasi_functions

__all__ = ["Agent", "RestoreStats", "AgentHooks", "StandaloneHooks", "HostCalls", "KNOWN_IMPORTS"]

log = logging.getLogger(__name__)

KNOWN_IMPORTS = WASI_NAMES | MESH_NAMES


class _Migrate(Exception):
    """--verify-replay: abandon this instance and continue from a restored snapshot."""


@dataclass(frozen=True, slots=True)
class RestoreStats:
    """How the latest instantiation went: image applied, then (reactors) invocations replayed.

    Command agents replay inside ``_start``, so their ``replay_s`` is 0 here.
    """

    image_s: float
    replay_s: float
    image_position: int
    replayed_calls: int


class Agent(AgentControl):
    """An agent: its journal and, while it runs, its sandbox."""

    def __init__(
        self,
        snapshot: AgentSnapshot,
        *,
        modules: ModuleCache,
        services: HostServices | None = None,
        limits: SandboxLimits | None = None,
        hooks: AgentHooks | None = None,
        loaded: LoadedModule | None = None,
        verify_replay: bool = False,
        world: World | None = None,
        tools: ToolRuntime | None = None,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.tool_runtime = tools or default_tool_runtime()
        self.services: HostServices = services or NoServices()
        self.world: World = world or (services if isinstance(services, World) else RealWorld())
        self._hooks: AgentHooks = hooks or StandaloneHooks()
        self._modules = modules
        self._verify = verify_replay
        if loaded is None:
            loaded = modules.get(snapshot.module_sha256)
            if loaded is None:
                if snapshot.module is None:
                    raise ModuleError(f"module {snapshot.module_sha256[:16]}… is not available on this node")
                loaded = modules.load(snapshot.module, KNOWN_IMPORTS)
        if loaded.sha256 != snapshot.module_sha256:
            raise JournalError("the snapshot names another module than the one given")
        self.loaded = loaded
        self.manifest = manifest_of(loaded.sha256, loaded.wasm)
        self._load(snapshot)
        self.operator_log = OperatorLog(log, self.agent_id, self.limits.log_bytes)
        self.suspend_at = None
        self.replays = 0
        """How often --verify-replay restored this agent from its own snapshot bytes."""
        self.last_restore: RestoreStats | None = None
        self._error: MeshError | None = None
        self._last_result: int | float | None = None
        self._suspend_reason: str | None = None
        self._rollback_request: Rollback | None = None
        self._pending: BaseException | None = None
        self._caller: wasmtime.Caller | None = None
        self._store: wasmtime.Store | None = None
        self._instance: wasmtime.Instance | None = None
        self._memory: wasmtime.Memory | None = None
        self._in_guest = False
        self._replaying = False
        self.from_journal = False
        """Whether the latest host call was answered from the journal (replay) rather than live."""
        table = {**{("wasi_snapshot_preview1", k): v for k, v in wasi_functions(self).items()},
                 **{("mesh", k): v for k, v in mesh_functions(self).items()}}
        self._functions = table

    # --- state -----------------------------------------------------------

    def _load(self, snap: AgentSnapshot) -> None:
        self._load_truth(snap)
        self.image = snap.image
        self.tool_modules = dict(snap.tools)
        self.tool_runtime.carry(self.manifest, self.tool_modules)
        if getattr(self, "tools", None) is None:
            self.tools = ToolBox(agent_id=self.agent_id, manifest=self.manifest, carried=self.tool_modules,
                                 modules=self.tool_runtime.modules, store=self.tool_runtime.store, services=self.services)
        else:
            self.tools.carried = self.tool_modules

    @property
    def style(self) -> str:
        return self.loaded.style

    def snapshot(self, *, include_module: bool = True, capture_image: bool = True) -> AgentSnapshot:
        """The agent as a snapshot. Safe from another thread (it then holds no new image)."""
        image = self.image
        if capture_image and self._can_capture():
            image = self._capture()
            self.image = image
        entries = list(self.journal)
        if image is not None and image.position > len(entries):
            image = None
        return AgentSnapshot(
            agent_id=self.agent_id,
            parent_id=self.parent_id,
            module_sha256=self.loaded.sha256,
            module=self.loaded.wasm if include_module else None,
            journal=Journal(entries, limit=self.limits.journal_bytes),
            args=self.argv,
            env=self.env,
            vfs=self.vfs,
            tools=dict(self.tool_modules),
            image=image,
            rollbacks=dict(self.rollbacks),
            labels=dict(self.labels),
            status=self.status,
            exit_code=self.exit_code,
            error=self.error_text,
        )

    # --- the host-call journal (used by wasi.py and mesh_abi.py) ----------

    def mem(self) -> GuestMemory:
        assert self._memory is not None and self._caller is not None
        return GuestMemory(self._memory, self._caller)

    def call(self, name: str, parts: tuple[bytes | int | str, ...], live: Callable[[], tuple[int, bytes | None]],
             *, nondet: bool = False) -> tuple[int, bytes | None]:
        return self.call_digest(name, digest(name, *parts), live, nondet=nondet)

    def call_digest(self, name: str, dig: bytes, live: Callable[[], tuple[int, bytes | None]],
                    *, nondet: bool = False) -> tuple[int, bytes | None]:
        pos = self._pos
        if pos < len(self.journal):
            entry = self.journal[pos]
            if entry.name != name or entry.digest != dig:
                what = "with other arguments" if entry.name == name else f"but the journal recorded {entry.name}"
                raise DivergenceError(
                    f"replay of agent {self.agent_id} diverged at journal entry {pos}: the agent called {name} "
                    f"{what}; the module, its inputs or the journal differ from the recorded run"
                )
            self._pos = pos + 1
            self.from_journal = True
            if nondet:
                return (entry.ret if entry.ret is not None else 0), entry.data
            self._replaying = True
            try:
                ret, data = live()
            finally:
                self._replaying = False
            if ret != entry.ret:
                raise DivergenceError(
                    f"replay of agent {self.agent_id} diverged at journal entry {pos}: {name} returned {ret} "
                    f"but the journal recorded {entry.ret}"
                )
            return ret, data
        self.from_journal = False
        self._before_live()
        ret, data = live()
        entry = Entry(name, dig, ret, data if nondet else None)
        self.journal.append(entry)
        self._pos = pos + 1
        self._hooks.entry_added(self, pos, entry)
        if self._verify and name != "proc_exit":
            raise _Migrate()
        return ret, data

    def spawn_children(self, dig: bytes, n: int) -> list[str]:
        base = self.snapshot(include_module=False, capture_image=False)
        ids = [new_agent_id() for _ in range(n)]
        children = [
            replace(
                base,
                agent_id=child,
                parent_id=self.agent_id,
                journal=Journal([*base.journal, Entry("fork", dig, i, None)], limit=self.limits.journal_bytes),
                status="ready",
                exit_code=None,
                error=None,
            )
            for i, child in enumerate(ids)
        ]
        # The services first: children must find their KV prefix and metadata when they start.
        self.services.fork(self.agent_id, ids)
        self._hooks.spawn(self, children)
        return list(ids)

    def join_child(self, child_id: str) -> bytes:
        return self._hooks.join(self, child_id)

    def sleep(self, seconds: float) -> None:
        """poll_oneoff's sleep, through the supervisor (which gives the agent's slot back meanwhile)."""
        self._hooks.sleep(self, seconds)

    def fuel_left(self) -> int:
        caller = self._caller
        return 0 if caller is None else wasmtime.Store.get_fuel(caller)  # type: ignore[arg-type]

    def charge(self, units: int, what: str) -> None:
        caller = self._caller
        if units <= 0 or caller is None:
            return
        left = wasmtime.Store.get_fuel(caller)  # type: ignore[arg-type]
        if units > left:
            wasmtime.Store.set_fuel(caller, 0)  # type: ignore[arg-type]
            raise out_of_fuel(self.limits.fuel, what)
        wasmtime.Store.set_fuel(caller, left - units)  # type: ignore[arg-type]

    def agent_log(self, level: str, text: str) -> None:
        """``mesh_log``: a line in the agent's stderr (within its output limit) and, escaped and within
        the agent's log budget, in the operator log."""
        line = f"[{level}] {text}\n".encode()
        if len(self.state.stdout) + len(self.state.stderr) + len(line) <= self.limits.output_bytes:
            self.state.stderr.extend(line)
        if not self._replaying:
            self.operator_log.write(level, text)

    # --- running -----------------------------------------------------------

    def run(self, entry: str | None = None) -> Outcome:
        """Run to the end (command: ``_start``; reactor: ``_initialize`` then ``entry``), or until suspended."""
        self.status = "running"
        plan = [name for name in ("_initialize",) if name in self._exports()] + ([entry] if entry else [])
        while True:
            try:
                if self._instance is None:
                    self._instantiate()
                if self.style == "command":
                    self._invoke_guest("_start")
                    return self._end("exited", 0, None)
                done = sum(1 for e in self.journal if e.name == "@invoke")
                result: int | float | None = 0
                for name in plan[done:]:
                    result = self._invoke_live(name, ())
                if entry is None:
                    return self._end("idle", None, None)  # waits for the node to call its entry points
                return self._end("exited", result if isinstance(result, int) else 0, None)
            except AgentExit as exc:
                return self._end("exited", exc.code, None)
            except Rollback as rb:
                self._apply_rollback(rb)
                try:
                    self.check_deadline()  # a rollback loop makes no live host call
                except MeshError as exc:
                    return self._end("failed", None, exc)
            except _Migrate:
                self._migrate()
            except Suspend as exc:
                self._discard()
                self.status = "suspended"
                log.info("agent %s suspended after %d host calls: %s", self.agent_id, len(self.journal), exc.reason)
                return self.outcome()
            except MeshError as exc:
                return self._end("failed", None, exc)
            except Exception as exc:  # a bug in a host service must not take the node down
                log.exception("agent %s: host failure", self.agent_id)
                return self._end("failed", None, AgentError(f"host failure while running the agent: {exc!r}"))

    def invoke(self, export: str, *args: int) -> int | float | None:
        """Reactor agents: call one exported entry point (journaled as ``@invoke``).

        Errors (limits, traps, :class:`Suspend`) propagate; the Store is then discarded.
        """
        first = True
        while True:
            try:
                if self._instance is None:
                    self._instantiate()
                if first:
                    first = False
                    return self._invoke_live(export, args)
                return self._last_result
            except Rollback as rb:
                self._apply_rollback(rb)
            except _Migrate:
                self._migrate()

    def _invoke_live(self, export: str, args: tuple[int, ...]) -> int | float | None:
        if export not in self._exports():
            raise ModuleError(f"the agent exports no function {export!r}")
        wire = codec.encode([export, list(args)])
        self.call_digest("@invoke", digest("@invoke", wire), lambda: (0, wire), nondet=True)
        return self._invoke_guest(export, *args)

    def _end(self, status: str, code: int | None, error: MeshError | None) -> Outcome:
        if self._store is not None and self.style == "command":
            self._discard()
        self.status, self.exit_code, self._error = status, code, self._without_frames(error)
        self.error_text = f"{type(error).__name__}: {error}" if error is not None else None
        if error is not None:
            log.info("agent %s failed: %s", self.agent_id, self.error_text)
        return self.outcome()

    def _apply_rollback(self, rb: Rollback) -> None:
        self._discard()
        self._rewind(rb)
        if self.image is not None and self.image.position > rb.position:
            self.image = None
        self._hooks.truncated(self, rb.position)
        log.debug("agent %s rolled back to %r (journal %d)", self.agent_id, rb.label, rb.position)

    def _migrate(self) -> None:
        self._discard()
        data = self.snapshot(include_module=False, capture_image=False).to_bytes()
        status = self.status
        self._load(AgentSnapshot.from_bytes(data, journal_limit=self.limits.journal_bytes))
        self.status = status
        self.replays += 1

    # --- the sandbox ---------------------------------------------------------

    def _exports(self) -> set[str]:
        return {e.name for e in self.loaded.module.exports}

    def _discard(self) -> None:
        self._store = self._instance = self._memory = None
        self._in_guest = False

    def _instantiate(self) -> None:
        """Fresh Store and instance; restore the image; replay reactor invocations."""
        self._discard()
        engine = self._modules.engine
        store = wasmtime.Store(engine)
        store.set_limits(memory_size=self.limits.memory_bytes, table_elements=self.limits.table_elements,
                         instances=2, tables=4, memories=2)
        store.set_fuel(self.limits.fuel)
        store.set_epoch_deadline(epoch_ticks(engine, self.deadline))
        linker = wasmtime.Linker(engine)
        for module, name in self.loaded.imports:
            found = self._functions.get((module, name))
            if found is None:
                raise LinkError(f"the module imports {module}.{name}, which meshagent does not provide")
            sig, fn = found
            linker.define_func(module, name, func_type(sig), self._wrap(fn, sig.endswith("i")), access_caller=True)
        try:
            instance = linker.instantiate(store, self.loaded.module)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            text = trap_text(exc)
            if "limit" in text or "memory" in text and "exceed" in text:
                raise MemoryLimitExceeded(f"the agent needs more memory than its limit of {self.limits.memory_bytes} bytes at start ({text})") from exc
            raise ModuleError(f"cannot instantiate the agent: {text}") from exc
        memory = instance.exports(store)["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self._store, self._instance, self._memory = store, instance, memory
        self._pos = 0
        self.state = HostState()
        started = time.perf_counter()
        if self.image is not None:
            restore_image(store, memory, instance, self.loaded.global_exports or (), self.image)
            self._pos = self.image.position
            self.state = HostState.from_wire(self.image.host.to_wire())
        imaged = time.perf_counter()
        if self.style == "reactor":
            self._replay_invocations()
        self.last_restore = RestoreStats(
            image_s=imaged - started,
            replay_s=time.perf_counter() - imaged,
            image_position=self.image.position if self.image is not None else 0,
            replayed_calls=len(self.journal) - (self.image.position if self.image is not None else 0),
        )

    def _replay_invocations(self) -> None:
        while self._pos < len(self.journal):
            entry = self.journal[self._pos]
            if entry.name != "@invoke" or entry.data is None:
                raise DivergenceError(
                    f"replay of agent {self.agent_id} diverged at journal entry {self._pos}: expected an entry-point "
                    f"invocation, found {entry.name}"
                )
            raw = codec.decode(entry.data, max_depth=3)
            if not (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], str) and isinstance(raw[1], list)):
                raise JournalError(f"journal entry {self._pos} is not a valid invocation")
            self._pos += 1
            self._last_result = self._invoke_guest(raw[0], *raw[1])

    def _can_capture(self) -> bool:
        return (self._instance is not None and not self._in_guest and self._pos == len(self.journal)
                and self.style == "reactor" and self.loaded.global_exports is not None)

    def _capture(self) -> MemoryImage:
        assert self._store is not None and self._memory is not None and self._instance is not None
        return capture_image(self._store, self._memory, self._instance, self.loaded.global_exports or (), self._pos, self.state)

    def _wrap(self, fn: Callable[..., int | None], returns: bool) -> Callable[..., int | None]:
        default = 0 if returns else None

        def host(caller: wasmtime.Caller, *args: int) -> int | None:
            if self._pending is not None:
                return default
            self._caller = caller
            try:
                return fn(*args)
            except BaseException as exc:  # unwound below; never crosses wasmtime
                self._pending = exc
                try:
                    wasmtime.Store.set_fuel(caller, 0)  # type: ignore[arg-type]
                except wasmtime.WasmtimeError:
                    pass
                return default
            finally:
                self._caller = None

        return host

    def _invoke_guest(self, export: str, *args: int) -> int | float | None:
        assert self._store is not None and self._instance is not None
        func = self._instance.exports(self._store)[export]
        if not isinstance(func, wasmtime.Func):
            raise ModuleError(f"the agent's export {export!r} is not a function")
        self._in_guest = True
        try:
            result = func(self._store, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            self._in_guest = False
            pending, self._pending = self._pending, None
            if pending is not None:
                self._discard()
                raise pending from None
            error = self._map_trap(exc)
            self._discard()
            raise error from exc
        finally:
            self._in_guest = False
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._discard()
            raise pending
        return result  # type: ignore[no-any-return]

    def _map_trap(self, exc: Exception) -> MeshError:
        size = self._memory.data_len(self._store) if self._memory is not None and self._store is not None else 0
        return map_trap(exc, size, self.limits)


HostCalls: TypeAlias = Agent
