"""The tool registry of one agent: what ``mesh_tool(name, args)`` runs.

Dispatch, in order:

1. built-in tools — ``fs.list``, ``fs.read``, ``fs.search``, ``fs.write``,
   ``fs.patch`` (:mod:`~meshagent.runtime.tools.files`), ``embed.search``
   (:mod:`~meshagent.runtime.tools.embed_search`) and ``sys.echo`` (returns
   its arguments: the cost of the ABI itself);
2. the WASI tools of the agent's manifest, by name: the module comes from
   the agent's snapshot, else the node's :class:`~meshagent.runtime.tools.store.ToolStore`
   (which may fetch it from a peer by hash), and runs in its own sandbox
   (:mod:`~meshagent.runtime.tools.wasi_tool`);
3. anything else goes to the host services' ``tool`` (tools the node installs).

Every call returns a :class:`~meshagent.runtime.tools.spec.ToolResult`;
a tool that fails — bad arguments, a limit, a trap — answers
``{"ok": false, "error": ...}`` and the agent goes on. The caller (the
``mesh`` ABI) journals the result, so none of this runs again on replay.

The work a call does is charged to a :class:`~meshagent.runtime.costs.Meter`
that the agent pays from its own fuel: bytes and files for the built-in
tools, the fuel a WASI tool burns (whose memory and fuel are clamped to the
node's ``[sandbox]`` caps, and its fuel to what the agent has left). An agent
that cannot pay ends with :class:`~meshagent.errors.CpuLimitExceeded`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Final

from meshagent.errors import LimitExceeded, MeshError
from meshagent.runtime.costs import FUEL_PER_BYTE, Meter
from meshagent.runtime.services import HostServices, MeteredTools, Suspend
from meshagent.runtime.tools.embed_search import embed_search
from meshagent.runtime.tools.files import FILE_TOOLS, ToolArgsError
from meshagent.runtime.tools.spec import ToolManifest, ToolResult, ToolSpec, error_result, json_result
from meshagent.runtime.tools.store import ToolStore
from meshagent.runtime.tools.wasi_tool import ToolModules, run_wasi_tool
from meshagent.runtime.vfs import Content, FileView

__all__ = ["ToolBox", "BUILTIN_TOOLS", "MAX_TOOL_ARGS"]

log = logging.getLogger(__name__)

BUILTIN_TOOLS: Final = (*FILE_TOOLS, "embed.search", "sys.echo")
MAX_TOOL_ARGS: Final = 1 << 20
MAX_ARGV: Final = 256


def _writes(before: Mapping[str, Content | None], after: Mapping[str, Content | None]) -> tuple[tuple[str, bytes | None], ...]:
    return tuple((p, None if d is None else bytes(d)) for p, d in sorted(after.items()) if p not in before or before[p] is not d)


class ToolBox:
    """The tools one agent can call (blocking; runs on the agent's worker thread)."""

    def __init__(
        self,
        *,
        agent_id: str,
        manifest: ToolManifest,
        carried: Mapping[str, bytes],
        modules: ToolModules,
        store: ToolStore,
        services: HostServices,
    ) -> None:
        self.agent_id = agent_id
        self.manifest = manifest
        self.carried = carried
        self._modules = modules
        self._store = store
        self._services = services
        self.executions = 0
        """Tool runs made live by this box (replayed calls never run: tests count this)."""

    def call(self, name: str, args: bytes, fs: FileView, meter: Meter) -> ToolResult:
        """Run tool ``name``; writes go to a copy of ``fs``'s overlay and come back as the result's writes.

        The work is charged to ``meter``; a limit of the agent's own (its fuel) ends the agent."""
        meter.charge(len(args) * FUEL_PER_BYTE, f"tool {name}")
        if name == "sys.echo":
            self.executions += 1
            return ToolResult(args)
        try:
            spec = self.manifest.get(name)
            if name in FILE_TOOLS or name == "embed.search" or spec is not None:
                self.executions += 1
                scratch = FileView(fs.base, fs.overlay.copy(), limit=fs.limit)
                parsed = self._json(args)
                if name in FILE_TOOLS:
                    answer = FILE_TOOLS[name](parsed, scratch, meter)
                elif name == "embed.search":
                    answer = embed_search(parsed, scratch, lambda text: self._services.embed(self.agent_id, text), meter)
                else:
                    assert spec is not None
                    answer = self._wasi(spec, parsed, scratch, meter)
                writes = _writes(fs.overlay.files, scratch.overlay.files)
                meter.charge(sum(len(d or b"") for _, d in writes) * FUEL_PER_BYTE, f"tool {name}")
                return json_result(answer, writes)
            if isinstance(self._services, MeteredTools):
                return ToolResult(bytes(self._services.tool_metered(self.agent_id, name, args, meter)))
            return ToolResult(bytes(self._services.tool(self.agent_id, name, args)))
        except (Suspend, LimitExceeded):
            raise
        except MeshError as exc:
            return error_result(f"{name}: {exc}")

    def module(self, spec: ToolSpec) -> bytes | None:
        carried = self.carried.get(spec.sha256)
        return carried if carried is not None else self._store.get(spec.sha256)

    def _json(self, args: bytes) -> dict[str, object]:
        if len(args) > MAX_TOOL_ARGS:
            raise ToolArgsError(f"tool arguments are limited to {MAX_TOOL_ARGS} bytes")
        if not args.strip():
            return {}
        try:
            value = json.loads(args)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ToolArgsError(f"arguments must be a JSON object: {exc}") from exc
        if not isinstance(value, dict):
            raise ToolArgsError("arguments must be a JSON object")
        return value

    def _wasi(self, spec: ToolSpec, args: Mapping[str, object], fs: FileView, meter: Meter) -> dict[str, object]:
        argv = args.get("args", [])
        if not isinstance(argv, list) or len(argv) > MAX_ARGV or not all(isinstance(a, str) for a in argv):
            raise ToolArgsError(f"'args' must be a list of at most {MAX_ARGV} strings")
        wasm = self.module(spec)
        if wasm is None:
            raise ToolArgsError(f"the module of tool {spec.name!r} ({spec.sha256[:16]}…) is not available on this node")
        compiled = self._modules.compile(spec.sha256, wasm)
        memory_bytes, fuel = meter.tool_limits(spec.memory_bytes, spec.fuel)
        run = run_wasi_tool(self._modules, compiled, argv=(spec.name, *argv), fs=fs,
                            memory_bytes=memory_bytes, fuel=fuel, deadline=meter.deadline)
        meter.charge(run.fuel_used, f"tool {spec.name}")
        if run.error is not None:
            log.info("agent %s: tool %s stopped: %s", self.agent_id, spec.name, run.error)
        return {
            "ok": run.error is None,
            "exit_code": run.exit_code,
            "stdout": run.stdout.decode("utf-8", "replace"),
            "stderr": run.stderr.decode("utf-8", "replace"),
            "error": run.error,
            "fuel": run.fuel_used,
        }
