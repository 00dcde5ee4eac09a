"""Hostile and broken agents end with a specific MeshError; the host and other agents keep going."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import trio

from meshagent.config import SandboxLimits
from meshagent.errors import (
    AgentError,
    AgentTrap,
    CheckpointNotFound,
    CpuLimitExceeded,
    GuestMemoryError,
    LinkError,
    MemoryLimitExceeded,
    ModuleError,
    OutputLimitExceeded,
    StackLimitExceeded,
)
from meshagent.runtime.manager import AgentManager
from meshagent.runtime.modules import ModuleCache
from tests.runtime.fakes import ScriptedLlm
from tests.runtime.helpers import run_alone

LIMITS = SandboxLimits(fuel=300_000_000, memory_bytes=32 << 20, stack_bytes=256 << 10, output_bytes=64 << 10)


@pytest.mark.parametrize(
    ("behaviour", "error", "hint"),
    [
        ("loop", CpuLimitExceeded, "sandbox.fuel"),
        ("grow", MemoryLimitExceeded, "sandbox.memory_bytes"),
        ("recurse", StackLimitExceeded, "sandbox.stack_bytes"),
        ("flood", OutputLimitExceeded, "sandbox.output_bytes"),
        ("trap", AgentTrap, "trapped"),
        ("rollback_unknown", CheckpointNotFound, "never reached"),
        ("join_index", AgentError, "mesh_join(5)"),
    ],
)
def test_resource_abuse_ends_the_agent_with_a_specific_error(
    modules: ModuleCache, wasm: Callable[[str], bytes], behaviour: str, error: type[Exception], hint: str
) -> None:
    outcome, agent = run_alone(modules, wasm("hostile"), behaviour, limits=LIMITS)
    assert outcome.status == "failed"
    assert type(outcome.error) is error, outcome.error_message
    assert hint in str(outcome.error)
    assert agent._store is None  # the Store is discarded after the trap


BAD_POINTERS = [
    "fd_write", "fd_write_len", "fd_read", "random_get", "random_len", "clock_time_get", "args_get", "path_open",
    "fd_readdir", "poll_oneoff", "llm_prompt", "llm_out", "llm_len", "llm_options", "checkpoint", "rollback",
    "tool_name", "tool_out", "embed_out", "embed_len", "log",
]


@pytest.mark.parametrize("call", BAD_POINTERS)
def test_out_of_bounds_pointers_are_the_agents_error(modules: ModuleCache, wasm: Callable[[str], bytes], call: str) -> None:
    services = ScriptedLlm()
    outcome, _ = run_alone(modules, wasm("hostile"), call, limits=LIMITS, services=services)
    assert outcome.status == "failed"
    assert isinstance(outcome.error, GuestMemoryError), outcome.error_message
    assert "out-of-bounds" in str(outcome.error) or "NUL" in str(outcome.error)
    assert services.calls == []  # the LLM was never asked with garbage


def test_missing_import_is_a_link_error(modules: ModuleCache, wasm: Callable[[str], bytes]) -> None:
    with pytest.raises(LinkError, match="mesh.teleport"):
        modules.load(wasm("missing_import"), frozenset({("wasi_snapshot_preview1", "proc_exit")}))
    from meshagent.runtime.sandbox import KNOWN_IMPORTS

    with pytest.raises(LinkError, match="mesh.teleport"):
        modules.load(wasm("missing_import"), KNOWN_IMPORTS)


@pytest.mark.parametrize("corrupt", [b"", b"\0asm\x01\0\0\0\x01\xff", b"not wasm at all", b"\0asm\x01\0\0\0\x0a\x05\x01\x03\x00\x00\x0b"])
def test_corrupt_module_is_a_module_error(modules: ModuleCache, corrupt: bytes) -> None:
    from meshagent.runtime.sandbox import KNOWN_IMPORTS

    with pytest.raises(ModuleError, match="not a valid WebAssembly module"):
        modules.load(corrupt, KNOWN_IMPORTS)


def test_truncated_real_module_is_a_module_error(modules: ModuleCache, wasm: Callable[[str], bytes]) -> None:
    from meshagent.runtime.sandbox import KNOWN_IMPORTS

    raw = wasm("retry")
    with pytest.raises(ModuleError):
        modules.load(raw[: len(raw) // 2], KNOWN_IMPORTS)


async def test_hostile_agents_do_not_stop_the_node_or_other_agents(modules: ModuleCache, wasm: Callable[[str], bytes]) -> None:
    services = ScriptedLlm()
    manager = AgentManager(modules=modules, services=services, limits=replace(LIMITS, max_instances=8))
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        hostile = [await manager.launch(wasm("hostile"), args=["hostile", b]) for b in ("loop", "recurse", "grow", "llm_out")]
        good = await manager.launch(wasm("retry"), args=["retry"])
        outcomes = {agent_id: await manager.wait(agent_id) for agent_id in [*hostile, good]}
        nursery.cancel_scope.cancel()
    assert [type(outcomes[h].error) for h in hostile] == [CpuLimitExceeded, StackLimitExceeded, MemoryLimitExceeded, GuestMemoryError]
    assert outcomes[good].status == "exited" and outcomes[good].exit_code == 0
    assert b"answer 42 accepted after 2 rollback(s)" in outcomes[good].stdout


def test_journal_flood_ends_the_agent(modules: ModuleCache, wasm: Callable[[str], bytes]) -> None:
    from meshagent.errors import JournalLimitExceeded

    outcome, _ = run_alone(modules, wasm("hostile"), "flood", limits=replace(LIMITS, journal_bytes=4096, output_bytes=1 << 20))
    assert isinstance(outcome.error, JournalLimitExceeded), outcome.error_message
    assert "sandbox.journal_bytes" in str(outcome.error)


GROW_BOMB_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $grow
      (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (loop $spin (br $spin))))
"""


def test_raw_memory_grow_bomb(modules: ModuleCache) -> None:
    import wasmtime

    from meshagent.runtime.sandbox import Agent
    from tests.runtime.helpers import new_snapshot

    wasm = wasmtime.wat2wasm(GROW_BOMB_WAT)
    outcome = Agent(new_snapshot(modules, wasm), modules=modules, limits=LIMITS).run()
    assert isinstance(outcome.error, MemoryLimitExceeded), outcome.error_message
    assert "32 MiB" in str(outcome.error)


def test_reactor_under_verify_replay(modules: ModuleCache, wasm: Callable[[str], bytes]) -> None:
    from meshagent.runtime.sandbox import Agent
    from tests.runtime.helpers import new_snapshot

    results = []
    for verify in (False, True):
        agent = Agent(new_snapshot(modules, wasm("reactor")), modules=modules, services=ScriptedLlm(), verify_replay=verify)
        agent.run()
        results.append([agent.invoke("add", 2), agent.invoke("add", 5), agent.invoke("get")])
        assert (agent.replays > 0) == verify
    assert results[0] == results[1]
