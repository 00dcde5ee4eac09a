"""A Python agent (a WebAssembly component) driven by its journal, like :class:`~meshagent.runtime.sandbox.Agent`.

The component imports the ``meshagent:agent/host`` interface (``meshagent/sdk/wit/agent.wit``,
the calls of ``meshagent.h``) and WASI preview 2. The host interface is journaled exactly
as for C agents: every call appends an entry, and a replay answers from the journal and
raises :class:`~meshagent.errors.DivergenceError` when the agent asks for something else.

WASI preview 2 comes from wasmtime, with the interfaces that leak nondeterminism
*shadowed* by journaled ones: the wall clock and randomness (answered from the journal on
replay), the environment and arguments (from the snapshot, plus ``PYTHONHASHSEED=0``).
wasmtime-py replaces a whole WASI interface when it shadows one, and the monotonic clock's
interface also makes pollables (sleeps), which Python host code cannot; so the monotonic
clock is the host interface's journaled ``monotonic-now`` instead, and the SDK points
``time.monotonic``, ``time.perf_counter`` and their ``_ns`` forms at it.
There are no preopened directories and no sockets: files are reached through tools.
Stdout and stderr: WASI's are closed; the SDK points ``sys.stdout`` and ``sys.stderr`` at
the host interface's ``write``, journaled like ``fd_write`` for C agents and held to the
output limit as it happens. Output is recomputed by every (re-)execution.

Restore = fresh instance + replay, so checkpoint/rollback work as for C agents
(rollback truncates the journal and re-executes to the checkpoint), and so does fork:
child *i* is this agent's snapshot whose journal ends with the fork answer *i*; it
replays to the fork and goes on (under an agent manager, which runs the children).
Limits: fuel and linear memory, the wall-clock limit (checked at host calls and, for guest code, by the
Store's epoch deadline), and host work paid from the agent's fuel as for C agents. A Python agent's
``time.sleep`` is wasmtime's own WASI sleep, which the host cannot see: it holds the agent's slot.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

import wasmtime
from wasmtime import component as wc

from meshagent.config import SandboxLimits
from meshagent.errors import (
    AgentError,
    AgentTrap,
    CheckpointNotFound,
    CpuLimitExceeded,
    DivergenceError,
    JournalError,
    MemoryLimitExceeded,
    MeshError,
    StackLimitExceeded,
)
from meshagent.runtime.agent_control import AgentControl
from meshagent.runtime.agent_log import OperatorLog
from meshagent.runtime.components import ComponentCache, LoadedComponent
from meshagent.runtime.costs import FUEL_PER_BYTE, FUEL_PER_EMBED, FUEL_PER_EMBEDDED_BYTE, out_of_fuel
from meshagent.runtime.hooks import AgentHooks, StandaloneHooks
from meshagent.runtime.host_state import HostState
from meshagent.runtime.journal import Entry, Journal, digest
from meshagent.protocol import codec
from meshagent.runtime.ids import new_agent_id
from meshagent.runtime.mesh_abi import MAX_FORK, Rollback
from meshagent.runtime.modules import epoch_ticks
from meshagent.runtime.outcome import Outcome
from meshagent.runtime.services import HostServices, NoServices, RealWorld, ReplayAware, Suspend, World, parse_llm_options
from meshagent.runtime.snapshot import AgentSnapshot
from meshagent.runtime.tools.registry import ToolBox
from meshagent.runtime.tools.runtime import ToolRuntime, default_tool_runtime, manifest_of
from meshagent.runtime.tools.spec import ToolResult
from meshagent.runtime.traps import map_trap, trap_text, wall_clock_exceeded

__all__ = ["ComponentAgent", "HOST_INTERFACE", "DETERMINISTIC_ENV"]

log = logging.getLogger(__name__)

HOST_INTERFACE: Final = "meshagent:agent/host"
DETERMINISTIC_ENV: Final = (("PYTHONHASHSEED", "0"), ("PYTHONDONTWRITEBYTECODE", "1"))
_LEVELS: Final = {0: "debug", 1: "info", 2: "warning", 3: "error"}


class _Migrate(Exception):
    """--verify-replay: abandon this instance and continue from a restored snapshot."""


def _instance_named(imports: tuple[str, ...], prefix: str) -> str | None:
    return next((name for name in imports if name.split("@", 1)[0] == prefix), None)


class ComponentAgent(AgentControl):
    """One component agent: its journal and, while it runs, its wasmtime Store."""

    def __init__(
        self,
        snapshot: AgentSnapshot,
        *,
        components: ComponentCache,
        services: HostServices | None = None,
        limits: SandboxLimits | None = None,
        verify_replay: bool = False,
        world: World | None = None,
        tools: ToolRuntime | None = None,
        hooks: AgentHooks | None = None,
    ) -> None:
        if snapshot.module is None:
            raise AgentError("a component agent's snapshot must carry its component bytes")
        self.limits = limits or SandboxLimits()
        self.services: HostServices = services or NoServices()
        self.world: World = world or (services if isinstance(services, World) else RealWorld())
        self._components = components
        self.loaded: LoadedComponent = components.load(snapshot.module)
        if self.loaded.sha256 != snapshot.module_sha256:
            raise JournalError("the snapshot names another component than the one given")
        if _instance_named(self.loaded.imports, HOST_INTERFACE) is None:
            raise AgentError(f"the component does not import {HOST_INTERFACE}: build it with `meshagent build agent.py`")
        self._verify = verify_replay
        self._hooks: AgentHooks = hooks or StandaloneHooks()
        self._rollback_request: Rollback | None = None
        self.tool_runtime = tools or default_tool_runtime()
        self.replays = 0
        self.suspend_at = None
        self._suspend_reason: str | None = None
        self._pending: BaseException | None = None
        self._context: object | None = None
        """The store context of the host call in progress (fuel is read and charged through it)."""
        self.manifest = manifest_of(self.loaded.sha256, self.loaded.wasm)
        self._load(snapshot)
        self.operator_log = OperatorLog(log, self.agent_id, self.limits.log_bytes)
        self.tool_runtime.carry(self.manifest, self.carried_tools)
        self.tools = ToolBox(agent_id=self.agent_id, manifest=self.manifest, carried=self.carried_tools,
                             modules=self.tool_runtime.modules, store=self.tool_runtime.store, services=self.services)

    def _load(self, snap: AgentSnapshot) -> None:
        self._load_truth(snap)
        self.carried_tools = dict(snap.tools)
        if getattr(self, "tools", None) is not None:
            self.tools.carried = self.carried_tools
        self._error = None

    @property
    def style(self) -> str:
        return "command"

    def _apply_rollback(self, rb: Rollback) -> None:
        self._rewind(rb)
        self._hooks.truncated(self, rb.position)  # type: ignore[arg-type]

    def invoke(self, export: str, *args: int) -> int | float | None:
        raise AgentError("Python agents are commands: they have no entry points to invoke")

    def snapshot(self, *, include_module: bool = True, capture_image: bool = True) -> AgentSnapshot:
        """The agent as a snapshot (components have no memory images: restore is replay)."""
        return AgentSnapshot(
            agent_id=self.agent_id, parent_id=self.parent_id, module_sha256=self.loaded.sha256,
            module=self.loaded.wasm if include_module else None,
            journal=Journal(list(self.journal), limit=self.limits.journal_bytes), args=self.argv, env=self.env,
            vfs=self.vfs, tools=dict(self.carried_tools), rollbacks=dict(self.rollbacks), labels=dict(self.labels),
            status=self.status, exit_code=self.exit_code, error=self.error_text,
        )

    # --- the journal ----------------------------------------------------------------

    def _call(self, name: str, dig: bytes, live: Callable[[], tuple[int, bytes | None]], *, nondet: bool = True
              ) -> tuple[int, bytes | None]:
        pos = self._pos
        if pos < len(self.journal):
            entry = self.journal[pos]
            if entry.name != name or entry.digest != dig:
                what = "with other arguments" if entry.name == name else f"but the journal recorded {entry.name}"
                raise DivergenceError(
                    f"replay of agent {self.agent_id} diverged at journal entry {pos}: the agent called {name} {what}; "
                    "the component, its inputs or the journal differ from the recorded run"
                )
            self._pos = pos + 1
            self.from_journal = True
            if nondet:
                return (entry.ret if entry.ret is not None else 0), entry.data
            ret, data = live()
            if ret != entry.ret:
                raise DivergenceError(f"replay of agent {self.agent_id} diverged at journal entry {pos}: {name} returned {ret}")
            return ret, data
        self.from_journal = False
        self._before_live()
        ret, data = live()
        entry = Entry(name, dig, ret, data if nondet else None)
        self.journal.append(entry)
        self._pos = pos + 1
        self._hooks.entry_added(self, pos, entry)  # type: ignore[arg-type]
        if self._verify:
            raise _Migrate()
        return ret, data

    def fuel_left(self) -> int:
        context = self._context
        return 0 if context is None else wasmtime.Store.get_fuel(context)  # type: ignore[arg-type]

    def charge(self, units: int, what: str) -> None:
        context = self._context
        if units <= 0 or context is None:
            return
        left = wasmtime.Store.get_fuel(context)  # type: ignore[arg-type]
        if units > left:
            wasmtime.Store.set_fuel(context, 0)  # type: ignore[arg-type]
            raise out_of_fuel(self.limits.fuel, what)
        wasmtime.Store.set_fuel(context, left - units)  # type: ignore[arg-type]

    # --- host functions ---------------------------------------------------------------

    def _host_functions(self) -> dict[str, Callable[..., Any]]:
        def llm(store: object, prompt: str) -> str:
            options = self.state.llm_options
            dig = digest("llm", prompt.encode(), *[str(x) for x in options.to_wire()])
            _, data = self._call("llm", dig, lambda: (0, self.services.llm(self.agent_id, prompt, options).encode()))
            answer = (data or b"").decode("utf-8", "replace")
            if self.from_journal and isinstance(self.services, ReplayAware):
                self.services.llm_replayed(self.agent_id, prompt, answer, options)
            return answer

        def llm_options(store: object, text: str) -> int:
            def live() -> tuple[int, bytes | None]:
                parsed = parse_llm_options(text, self.state.llm_options)
                if parsed is None:
                    return -1, None
                self.state.llm_options = parsed
                return 0, None

            return self._call("llm_options", digest("llm_options", text.encode()), live, nondet=False)[0]

        def checkpoint(store: object, label: str) -> int:
            raw = label.encode()
            return self._call("checkpoint", digest("checkpoint", raw), lambda: (self.rollbacks.get(label, 0), raw))[0]

        def rollback(store: object, label: str) -> None:
            raw = label.encode()
            for index in range(self._pos - 1, -1, -1):
                entry = self.journal[index]
                if entry.name == "checkpoint" and entry.data == raw:
                    raise Rollback(label, index)
            raise CheckpointNotFound(f"rollback({label!r}): the agent never reached checkpoint({label!r}) on this path")

        def fork(store: object, n: int) -> int:
            if not 1 <= n <= MAX_FORK:
                return self._call("fork", digest("fork", n), lambda: (-2, None), nondet=False)[0]
            dig = digest("fork", n)
            ret, data = self._call("fork", dig, lambda: (-1, codec.encode(self._spawn_children(dig, n))))
            if ret == -1:
                children = codec.decode(data or b"\x80", max_depth=2)
                if not isinstance(children, list) or not all(isinstance(c, str) for c in children):
                    raise AgentError("the journal's fork entry does not list child ids")
                self.state.fork_children = [str(c) for c in children]
            return ret

        def join(store: object, i: int) -> bytes:
            children = self.state.fork_children
            if not 0 <= i < len(children):
                raise AgentError(f"join({i}): the agent's latest fork made {len(children)} children")
            child = children[i]
            return self._call("join", digest("join", child), lambda: (0, self._hooks.join(self, child)))[1] or b""  # type: ignore[arg-type]

        def tool(store: object, name: str, args: bytes) -> bytes:
            raw = bytes(args)
            dig = digest("tool", name, raw)

            def live() -> tuple[int, bytes | None]:
                meter = self.meter()
                result = self.tools.call(name, raw, self.fs, meter)
                self.charge(meter.used, f"tool {name}")
                return 0, result.encode()

            _, data = self._call("tool", dig, live)
            result = ToolResult.decode(data or b"")
            fs = self.fs
            for path, content in result.writes:
                if content is None:
                    fs.delete(path)
                else:
                    fs.put(path, content)
            return result.answer

        def embed(store: object, text: str) -> list[float]:
            def live() -> tuple[int, bytes | None]:
                self.charge(FUEL_PER_EMBED + len(text.encode()) * FUEL_PER_EMBEDDED_BYTE, "an embedding")
                vector = self.services.embed(self.agent_id, text)
                return len(vector), struct.pack(f"<{len(vector)}f", *vector)

            count, data = self._call("embed", digest("embed", text.encode()), live)
            return list(struct.unpack(f"<{count}f", data or b""))

        def monotonic_now(store: object) -> int:
            def live() -> tuple[int, bytes | None]:
                now = self.steady_now_ns(1, self.world.now_ns(1, self._pos)) & ((1 << 64) - 1)
                return 0, now.to_bytes(8, "little")

            _, data = self._call("clock_time_get", digest("clock_time_get", 1), live)
            return int.from_bytes(data or bytes(8), "little")

        def write(store: object, fd: int, data: bytes) -> int:
            data = bytes(data)

            def live() -> tuple[int, bytes | None]:
                if fd not in (1, 2):
                    return -1, None
                self.state.write_output(fd, data, self.limits.output_bytes)
                self.charge(len(data) * FUEL_PER_BYTE, "output")
                return 0, None

            return self._call("fd_write", digest("fd_write", fd, data), live, nondet=False)[0]

        def log_(store: object, level: int, msg: str) -> None:
            def live() -> tuple[int, bytes | None]:
                name = _LEVELS.get(level, "info")
                self.state.write_output(2, f"[{name}] {msg}\n".encode(), self.limits.output_bytes)
                if not self.from_journal:
                    self.operator_log.write(name, msg)
                return 0, None

            self._call("log", digest("log", level, msg), live, nondet=False)

        return {"llm": llm, "llm-options": llm_options, "checkpoint": checkpoint, "rollback": rollback, "fork": fork,
                "join": join, "tool": tool, "embed": embed, "log": log_,
                "monotonic-now": monotonic_now, "write": write}

    def _spawn_children(self, dig: bytes, n: int) -> list[str]:
        """Children are snapshots of this agent whose journal ends with their own fork answer."""
        base = self.snapshot()
        ids: list[str] = [new_agent_id() for _ in range(n)]
        children = [
            replace(base, agent_id=child, parent_id=self.agent_id, status="ready", exit_code=None, error=None,
                    journal=Journal([*base.journal, Entry("fork", dig, i, None)], limit=self.limits.journal_bytes))
            for i, child in enumerate(ids)
        ]
        # The services first: children must find their KV prefix and metadata when they start.
        self.services.fork(self.agent_id, ids)
        self._hooks.spawn(self, children)  # type: ignore[arg-type]
        return ids

    def _wasi_shadows(self) -> dict[str, dict[str, Callable[..., Any]]]:
        def datetime(nanos: int) -> wc.Record:
            record = wc.Record()
            record.seconds, record.nanoseconds = divmod(nanos, 1_000_000_000)  # type: ignore[attr-defined]
            return record

        def wall_now(store: object) -> wc.Record:
            _, data = self._call("clock_time_get", digest("clock_time_get", 0),
                                 lambda: (0, (self.world.now_ns(0, self._pos) & ((1 << 64) - 1)).to_bytes(8, "little")))
            return datetime(int.from_bytes(data or bytes(8), "little"))

        def random_bytes(store: object, n: int) -> bytes:
            if n > 1 << 20:
                raise AgentError("get-random-bytes: at most 1 MiB at a time")
            _, data = self._call("random_get", digest("random_get", n), lambda: (0, bytes(self.world.random_bytes(n, self._pos))[:n]))
            return data or b""

        def random_u64(store: object) -> int:
            return int.from_bytes(random_bytes(store, 8), "little")

        environ = [*self.env, *DETERMINISTIC_ENV]
        return {
            "wasi:clocks/wall-clock": {"now": wall_now, "resolution": lambda store: datetime(1000)},
            "wasi:random/random": {"get-random-bytes": random_bytes, "get-random-u64": random_u64},
            "wasi:random/insecure": {"get-insecure-random-bytes": random_bytes, "get-insecure-random-u64": random_u64},
            "wasi:random/insecure-seed": {"insecure-seed": lambda store: (random_u64(store), random_u64(store))},
            "wasi:cli/environment": {"get-environment": lambda store: list(environ),
                                     "get-arguments": lambda store: list(self.argv),
                                     "initial-cwd": lambda store: None},
        }

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def host(*args: Any) -> Any:
            if self._pending is not None:
                raise self._pending
            self._context = args[0] if args else None
            try:
                return fn(*args)
            except BaseException as exc:  # re-raised by run(); never trusted from wasmtime's global
                self._pending = exc
                raise
            finally:
                self._context = None

        return host

    def _linker(self) -> wc.Linker:
        linker = wc.Linker(self._components.engine)
        linker.add_wasip2()
        linker.allow_shadowing = True
        imports = self.loaded.imports
        with linker.root() as root:
            host_name = _instance_named(imports, HOST_INTERFACE)
            assert host_name is not None
            with root.add_instance(host_name) as host:
                for name, fn in self._host_functions().items():
                    host.add_func(name, self._wrap(fn))
            for prefix, functions in self._wasi_shadows().items():
                shadowed = _instance_named(imports, prefix)
                if shadowed is None:
                    continue
                with root.add_instance(shadowed) as inst:
                    for fname, fn in functions.items():
                        inst.add_func(fname, self._wrap(fn))
        return linker

    # --- running ------------------------------------------------------------------------

    def run(self) -> Outcome:
        """Run to the end, or until suspended: fresh instance, replay of the journal, then live."""
        self.status = "running"
        while True:
            try:
                code = self._execute()
                return self._end("exited", code, None)
            except Rollback as rb:
                self._apply_rollback(rb)
                try:
                    self.check_deadline()  # a rollback loop makes no live host call
                except MeshError as exc:
                    return self._end("failed", None, exc)
            except _Migrate:
                data = self.snapshot().to_bytes()
                status = self.status
                self._load(AgentSnapshot.from_bytes(data, journal_limit=self.limits.journal_bytes))
                self.status = status
                self.replays += 1
            except Suspend as exc:
                self.status = "suspended"
                log.info("agent %s suspended after %d host calls: %s", self.agent_id, len(self.journal), exc.reason)
                return self.outcome()
            except MeshError as exc:
                return self._end("failed", None, exc)
            except Exception as exc:  # a bug in a host service must not take the node down
                log.exception("agent %s: host failure", self.agent_id)
                return self._end("failed", None, AgentError(f"host failure while running the agent: {exc!r}"))

    def _execute(self) -> int:
        self._pos = 0
        self.state = HostState()
        self._pending = None
        store = wasmtime.Store(self._components.engine)
        store.set_fuel(self.limits.fuel)
        store.set_epoch_deadline(epoch_ticks(self._components.engine, self.deadline))
        store.set_limits(memory_size=self.limits.memory_bytes, table_elements=self.limits.table_elements)
        wasi = wasmtime.WasiConfig()  # no stdout/stderr: output goes through the host interface's write
        wasi.argv = list(self.argv)
        wasi.env = [*self.env, *DETERMINISTIC_ENV]
        store.set_wasi(wasi)
        try:
            instance = self._linker().instantiate(store, self.loaded.component)
            run = instance.get_func(store, "run")
            if run is None:
                raise AgentError("the component exports no run function: build it with `meshagent build agent.py`")
            result = run(store)
        except BaseException as exc:
            pending, self._pending = self._pending, None
            if pending is not None and pending is not exc and not isinstance(exc, (wasmtime.WasmtimeError, wasmtime.Trap)):
                raise
            if pending is not None:
                raise pending from None
            if isinstance(exc, (wasmtime.Trap, wasmtime.WasmtimeError)):
                if "exit" in str(exc) and "status" in str(exc):
                    return 1
                raise self._limit_error(exc) from exc
            raise
        return int(result) if isinstance(result, int) else 0

    def _limit_error(self, exc: Exception) -> MeshError:
        """Component traps carry no trap code through wasmtime-py: name the limit from the message."""
        text = trap_text(exc)
        lim = self.limits
        if getattr(exc, "trap_code", None) == wasmtime.TrapCode.INTERRUPT or "interrupt" in text:
            return wall_clock_exceeded(lim)
        if "fuel" in text:
            return CpuLimitExceeded(f"the agent used its whole CPU budget of {lim.fuel} fuel units (an infinite loop?); "
                                    "raise sandbox.fuel if it needs more")
        if "memory" in text and ("limit" in text or "grow" in text):
            return MemoryLimitExceeded(f"the agent needs more memory than its limit of {lim.memory_bytes} bytes ({text}); "
                                       "raise sandbox.memory_bytes")
        if "stack" in text and "overflow" in text:
            return StackLimitExceeded(f"the agent overflowed its wasm stack of {lim.stack_bytes} bytes")
        return map_trap(exc, 0, lim) if getattr(exc, "trap_code", None) is not None else AgentTrap(f"the agent trapped: {text}")

    def _end(self, status: str, code: int | None, error: MeshError | None) -> Outcome:
        self.status, self.exit_code, self._error = status, code, self._without_frames(error)
        self.error_text = f"{type(error).__name__}: {error}" if error is not None else None
        return self.outcome()



def component_snapshot(wasm: bytes, components: ComponentCache, *, agent_id: str, args: tuple[str, ...] = (),
                       env: tuple[tuple[str, str], ...] = (), limits: SandboxLimits | None = None) -> AgentSnapshot:
    """A fresh snapshot for a component agent."""
    loaded = components.load(wasm)
    lim = limits or SandboxLimits()
    return AgentSnapshot(agent_id=agent_id, module_sha256=loaded.sha256, module=wasm, journal=Journal(limit=lim.journal_bytes),
                         args=args, env=env)

