"""The agent manager: persistence across a node restart, control handlers over the real control socket."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from meshagent.config import SandboxLimits
from meshagent.errors import AgentError, AgentNotFound, ControlError
from meshagent.node.control import ControlServer, call, call_streaming
from meshagent.node.store import NodeStore
from meshagent.runtime.control_ops import control_handlers
from meshagent.runtime.manager import AgentManager
from meshagent.runtime.modules import ModuleCache
from meshagent.runtime.services import LlmOptions, Suspend
from meshagent.runtime.vfs import VirtualFs
from tests.runtime.fakes import ScriptedLlm
from tests.runtime.helpers import run_alone


class GatedLlm(ScriptedLlm):
    """Blocks in its first LLM call until ``gate`` is set (the node stops meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def llm(self, agent_id: str, prompt: str, options: LlmOptions) -> str:
        self.entered.set()
        self.gate.wait(10)
        return super().llm(agent_id, prompt, options)


def test_node_restart_resumes_running_agents_from_their_last_host_call(
    tmp_path: Path, wasm: Callable[[str], bytes], modules: ModuleCache
) -> None:
    expected, _ = run_alone(modules, wasm("retry"))
    store = NodeStore.open(tmp_path)
    gated = GatedLlm()

    async def first_life() -> str:
        manager = AgentManager(modules=modules, services=gated, store=store)
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            agent_id = await manager.launch(wasm("retry"), args=["agent"])
            await trio.to_thread.run_sync(gated.entered.wait)
            agent = manager.agent(agent_id)

            def answer_once_stopping() -> None:
                while not agent.suspend_requested:
                    time.sleep(0.01)
                gated.gate.set()

            threading.Thread(target=answer_once_stopping, daemon=True).start()
            nursery.cancel_scope.cancel()  # the node stops while the agent waits for its LLM
        return agent_id

    agent_id = trio.run(first_life)
    (row,) = store.agents()
    assert row.agent_id == agent_id and row.status == "running"
    assert 0 < row.host_calls < expected.host_calls
    store.close()

    store = NodeStore.open(tmp_path)  # a new node process would do exactly this
    services = ScriptedLlm()

    async def second_life() -> None:
        manager = AgentManager(modules=ModuleCache(modules.engine), services=services, store=store)
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            outcome = await manager.wait(agent_id)
            nursery.cancel_scope.cancel()
        assert outcome.stdout == expected.stdout and outcome.exit_code == 0

    trio.run(second_life)
    # The first LLM answer came from the stored journal: only the retries asked the LLM again.
    assert [p[-11:] for _, p, _ in services.calls] == ["(attempt 1)", "(attempt 2)"]
    (row,) = store.agents()
    assert row.status == "exited"
    assert store.outputs(agent_id)[0] == expected.stdout
    # A later life of the node still lists it (`meshagent agents`, `meshagent logs`) without running it.
    later = AgentManager(modules=modules, store=store)
    assert [(i.agent_id, i.status) for i in later.stored_agents()] == [(agent_id, "exited")]
    assert later.stored_outputs(agent_id) == (expected.stdout, expected.stderr)


async def test_control_ops_over_the_control_socket(tmp_path: Path, build: Callable[[str], Path], modules: ModuleCache) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir(mode=0o700)
    manager = AgentManager(modules=modules, services=ScriptedLlm(), store=NodeStore.open(data_dir))
    module = build("forking")
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await nursery.start(ControlServer(data_dir, control_handlers(manager)).run)

        events: list[dict[str, object]] = []
        result = await trio.to_thread.run_sync(lambda: call_streaming(
            data_dir, "run", {"module_path": str(module), "args": ["forking"]}, on_event=events.append, timeout=60))
        rows = result["agents"]
        assert len(rows) == 4 and rows[0]["parent_id"] is None and events == [{"started": rows[0]["agent_id"]}]
        root = rows[0]["agent_id"]
        assert {"agent_id", "parent_id", "exit_code", "stdout", "host_calls", "error"} <= rows[0].keys()

        listed = await trio.to_thread.run_sync(call, data_dir, "agents", {})
        assert {a["agent_id"] for a in listed["agents"]} == {r["agent_id"] for r in rows}
        logs = await trio.to_thread.run_sync(call, data_dir, "logs", {"agent_id": root})
        assert logs["stdout"] == rows[0]["stdout"]

        cp = await trio.to_thread.run_sync(call, data_dir, "checkpoint", {"agent_id": root, "label": "end"})
        assert cp["position"] == rows[0]["host_calls"]
        forked = await trio.to_thread.run_sync(call, data_dir, "fork", {"agent_id": root, "n": 2})
        assert len(forked["children"]) == 2
        for child in forked["children"]:
            done = await manager.wait(child)
            assert done.stdout == rows[0]["stdout"].encode()  # clones replay to the same end
        back = await trio.to_thread.run_sync(call, data_dir, "rollback", {"agent_id": root, "label": "end"})
        assert back["position"] == rows[0]["host_calls"]
        await manager.wait(root)
        killed = await trio.to_thread.run_sync(call, data_dir, "kill", {"agent_id": root})
        assert killed["status"] == "killed"
        with pytest.raises(ControlError, match="no agent"):
            await trio.to_thread.run_sync(call, data_dir, "logs", {"agent_id": "nope"})
        # A caller may choose the new agent's id (the node records its privacy first), in the id's form only.
        chosen = await trio.to_thread.run_sync(
            call, data_dir, "run", {"module_path": str(module), "args": ["forking"], "agent_id": "0123456789ab", "wait": False})
        assert chosen["agent_id"] == "0123456789ab"
        await manager.wait_family(chosen["agent_id"])
        for bad in ("../../etc", "0123456789AB", 12):
            with pytest.raises(ControlError, match="12 lowercase hex digits"):
                await trio.to_thread.run_sync(call, data_dir, "run", {"module_path": str(module), "agent_id": bad})
        nursery.cancel_scope.cancel()


async def test_suspend_returns_a_snapshot_that_resumes_elsewhere(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    gated = GatedLlm()
    here = AgentManager(modules=modules, services=gated)
    there = AgentManager(modules=ModuleCache(modules.engine), services=ScriptedLlm())
    async with trio.open_nursery() as nursery:
        await nursery.start(here.run)
        await nursery.start(there.run)
        agent_id = await here.launch(wasm("retry"), args=["agent"])
        await trio.to_thread.run_sync(gated.entered.wait)
        agent = here.agent(agent_id)

        def answer_once_suspending() -> None:
            while not agent.suspend_requested:
                time.sleep(0.01)
            gated.gate.set()

        threading.Thread(target=answer_once_suspending, daemon=True).start()
        snap = await here.suspend(agent_id, "moving to a bigger model")
        assert here.info(agent_id).status == "suspended"
        moved = await there.adopt(snap)
        outcome = await there.wait(moved)
        nursery.cancel_scope.cancel()
    assert outcome.exit_code == 0 and b"answer 42 accepted" in outcome.stdout
    with pytest.raises(AgentNotFound):
        here.info("nope")


async def test_join_a_child_that_moved_to_another_node(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    """A forked child is suspended, handed over (forgotten here) and finishes elsewhere; the parent joins it."""
    results: dict[str, trio.Event] = {}
    outputs: dict[str, bytes] = {}

    async def remote_result(child_id: str) -> bytes:
        await results.setdefault(child_id, trio.Event()).wait()
        return outputs[child_id]

    class HoldChildren(ScriptedLlm):
        def llm(self, agent_id: str, prompt: str, options: LlmOptions) -> str:
            if prompt.startswith("child"):
                raise Suspend("this child's step runs on another node")
            return super().llm(agent_id, prompt, options)

    here = AgentManager(modules=modules, services=HoldChildren(), remote_result=remote_result)
    there = AgentManager(modules=ModuleCache(modules.engine), services=ScriptedLlm())
    async with trio.open_nursery() as nursery:
        await nursery.start(here.run)
        await nursery.start(there.run)
        root = await here.launch(wasm("forking"), args=["forking"])
        while len(here.family(root)) < 4 or any(here.info(c).status == "running" for c in here.family(root)[1:]):
            await here.changed()
        for child in here.family(root)[1:]:
            snap = await here.suspend(child)
            here.forget(child)
            outcome = await there.wait(await there.adopt(snap))
            outputs[child] = outcome.stdout
            results.setdefault(child, trio.Event()).set()
        parent = await here.wait(root)
        nursery.cancel_scope.cancel()
    assert parent.exit_code == 0
    for child, out in outputs.items():
        assert out in parent.stdout and out.startswith(b"before fork\n")


async def test_cli_talks_to_the_node_through_the_control_api(tmp_path: Path, build: Callable[[str], Path],
                                                            modules: ModuleCache, project_dir: Path) -> None:
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    data_dir = tmp_path / "node"
    data_dir.mkdir(mode=0o700)
    manager = AgentManager(modules=modules, services=ScriptedLlm(), store=NodeStore.open(data_dir))

    async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return await trio.run_process([sys.executable, "-m", "meshagent", *args, "--data-dir", str(data_dir)],
                                      cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False)

    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        await nursery.start(ControlServer(data_dir, control_handlers(manager)).run)
        done = await cli("run", str(build("code_review")), "--json", "--dir", str(project_dir))
        assert done.returncode == 0, done.stderr
        (row,) = [json.loads(line) for line in done.stdout.decode().splitlines()]
        assert row["exit_code"] == 0 and "reviewed 4 file(s)" in row["stdout"]
        listed = await cli("agents", "--json")
        assert [a["agent_id"] for a in json.loads(listed.stdout)] == [row["agent_id"]]
        logs = await cli("logs", row["agent_id"])
        assert logs.stdout.decode() == row["stdout"] and b"code review started" in logs.stderr
        missing = await cli("kill", "nope")
        assert missing.returncode == 1 and b"no agent 'nope'" in missing.stderr
        nursery.cancel_scope.cancel()


async def test_kill_stops_an_agent_still_waiting_for_a_slot_and_delete_leaves_no_trace(
    tmp_path: Path, wasm: Callable[[str], bytes], modules: ModuleCache
) -> None:
    """One slot, held by an agent in its LLM call: a second agent waiting for the slot is killed at once
    (not when the slot frees), and deleting it overwrites its files and journal in the store and its WAL."""
    store = NodeStore.open(tmp_path)
    gated = GatedLlm()
    manager = AgentManager(modules=modules, services=gated, store=store, limits=SandboxLimits(max_instances=1))
    marker = b"queued-secret-7f3a9c"
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        holder = await manager.launch(wasm("retry"), args=["agent"])
        await trio.to_thread.run_sync(gated.entered.wait)
        waiting = await manager.launch(wasm("retry"), args=["agent"], vfs=VirtualFs(files={"secret.txt": marker}))
        assert marker in (tmp_path / "node.sqlite").read_bytes() + (tmp_path / "node.sqlite-wal").read_bytes()
        with trio.fail_after(10):  # the holder keeps its slot all along: only a cancelled wait ends this
            info = await manager.kill(waiting)
        assert info.status == "killed" and manager.is_active(holder)
        await manager.delete(waiting)
        await trio.to_thread.run_sync(store.scrub)
        assert not manager.is_known(waiting) and store.status_of(waiting) is None
        files = [p for p in tmp_path.iterdir() if p.name.startswith("node.sqlite")]
        assert files and not any(marker in p.read_bytes() for p in files)
        with pytest.raises(AgentError, match="still running"):
            await manager.delete(holder)
        gated.gate.set()
        assert (await manager.wait(holder)).exit_code == 0
        nursery.cancel_scope.cancel()
    store.close()
