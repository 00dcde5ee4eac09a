"""Control-API handlers for agents; the node registers them on its ControlServer.

``control_handlers(manager)`` returns ``{op: handler}`` for the ops
``run``, ``agents``, ``logs``, ``checkpoint``, ``fork``, ``rollback``,
``kill``, ``suspend``, ``resume``, ``invoke`` (reactor entry points) and ``slots`` (the node's
execution slots: held, waited for, sleeping). Parameters and results are JSON.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import trio

from meshagent.errors import AgentError, ControlError
from meshagent.node.control import Emit, Handler
from meshagent.runtime.ids import AgentId, is_agent_id
from meshagent.runtime.manager import AgentManager
from meshagent.runtime.vfs import VirtualFs

__all__ = ["control_handlers"]


def _str(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise ControlError(f"parameter {key!r} must be a non-empty string")
    return value


def control_handlers(manager: AgentManager) -> dict[str, Handler]:
    async def run(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """params: module_path, args [str], env {k: v}, dir (path), tools [paths of WASI tool modules],
        wait (bool, default true), agent_id (optional: the new agent's id)."""
        path = Path(_str(params, "module_path"))
        try:
            wasm = await trio.to_thread.run_sync(path.read_bytes)
        except OSError as exc:
            raise ControlError(f"cannot read {path}: {exc.strerror}") from exc
        args = params.get("args") or [path.name]
        env = params.get("env") or {}
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ControlError("parameter 'args' must be a list of strings")
        if not isinstance(env, dict):
            raise ControlError("parameter 'env' must be an object")
        vfs = None
        if params.get("dir"):
            vfs = await trio.to_thread.run_sync(VirtualFs.from_directory, Path(_str(params, "dir")))
        tool_paths = params.get("tools") or []
        if not isinstance(tool_paths, list) or not all(isinstance(t, str) for t in tool_paths):
            raise ControlError("parameter 'tools' must be a list of paths")
        try:
            tools = [await trio.to_thread.run_sync(Path(t).read_bytes) for t in tool_paths]
        except OSError as exc:
            raise ControlError(f"cannot read a tool module: {exc}") from exc
        chosen = params.get("agent_id")
        if chosen is not None and not (isinstance(chosen, str) and is_agent_id(chosen)):
            raise ControlError("parameter 'agent_id' must be 12 lowercase hex digits")
        root = await manager.launch(wasm, args=args, env=[(str(k), str(v)) for k, v in env.items()], vfs=vfs, tools=tools,
                                    agent_id=AgentId(chosen) if chosen else None)
        await emit({"started": root})
        if params.get("wait", True) is False:
            return {"agent_id": root}
        outcomes = await manager.wait_family(root)
        return {"agent_id": root, "agents": [o.to_json() for o in outcomes]}

    async def agents(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        live = manager.agents()
        known = frozenset(info.agent_id for info in live)
        stored = await trio.to_thread.run_sync(manager.stored_agents, known)
        return {"agents": [info.to_json() for info in [*live, *stored]]}

    async def logs(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        agent_id = _str(params, "agent_id")
        stored = None
        if agent_id not in {info.agent_id for info in manager.agents()}:
            stored = await trio.to_thread.run_sync(manager.stored_outputs, agent_id)
        if stored is not None:
            return {"agent_id": agent_id, "status": "stored", "stdout": stored[0].decode("utf-8", "replace"),
                    "stderr": stored[1].decode("utf-8", "replace")}
        outcome = manager.outcome(agent_id)
        return {
            "agent_id": agent_id,
            "status": manager.info(agent_id).status,
            "stdout": outcome.stdout.decode("utf-8", "replace"),
            "stderr": outcome.stderr.decode("utf-8", "replace"),
        }

    async def checkpoint(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        agent_id = _str(params, "agent_id")
        label = params.get("label") or f"cp{len(manager.agent(agent_id).labels) + 1}"
        if not isinstance(label, str):
            raise ControlError("parameter 'label' must be a string")
        return {"agent_id": agent_id, "label": label, "position": await manager.checkpoint(agent_id, label)}

    async def fork(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        agent_id = _str(params, "agent_id")
        n = params.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool):
            raise ControlError("parameter 'n' must be an integer")
        return {"agent_id": agent_id, "children": list(await manager.fork(agent_id, n))}

    async def rollback(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        agent_id = _str(params, "agent_id")
        label = _str(params, "label")
        return {"agent_id": agent_id, "label": label, "position": await manager.rollback(agent_id, label)}

    async def kill(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        info = await manager.kill(_str(params, "agent_id"))
        return info.to_json()

    async def suspend(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Stop at the next host call; returns the snapshot (base64) when ``include_snapshot``."""
        agent_id = _str(params, "agent_id")
        snap = await manager.suspend(agent_id)
        result: dict[str, Any] = {"agent_id": agent_id, "host_calls": len(snap.journal), "status": snap.status}
        if params.get("include_snapshot"):
            data = snap.to_bytes()
            if len(data) > 512 << 10:
                raise AgentError("the snapshot is too large for the control API; use AgentManager.suspend")
            result["snapshot"] = base64.b64encode(data).decode()
        return result

    async def invoke(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Reactor agents: params agent_id, export, args [int]."""
        agent_id = _str(params, "agent_id")
        args = params.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise ControlError("parameter 'args' must be a list of integers")
        result = await manager.invoke(agent_id, _str(params, "export"), *args)
        return {"agent_id": agent_id, "result": result}

    async def resume(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        agent_id = _str(params, "agent_id")
        await manager.resume(agent_id)
        return manager.info(agent_id).to_json()

    async def slots(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        return manager.slots()

    return {
        "run": run,
        "agents": agents,
        "logs": logs,
        "checkpoint": checkpoint,
        "fork": fork,
        "rollback": rollback,
        "kill": kill,
        "suspend": suspend,
        "resume": resume,
        "invoke": invoke,
        "slots": slots,
    }
