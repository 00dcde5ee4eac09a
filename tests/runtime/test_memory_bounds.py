"""Compiled code kept in memory is bounded: a stream of distinct agents cannot grow a node without end."""

from __future__ import annotations

import wasmtime

from meshagent.runtime.compile_cache import Recent
from meshagent.runtime.modules import MODULES_IN_MEMORY, ModuleCache, engine_for
from meshagent.runtime.sandbox import KNOWN_IMPORTS


def _module(n: int) -> bytes:
    return wasmtime.wat2wasm(f'(module (memory (export "memory") 1) (func (export "_start")) (global i32 (i32.const {n})))')


def test_recent_keeps_the_most_recently_used() -> None:
    recent: Recent[int] = Recent(2)
    recent.put("a", 1)
    recent.put("b", 2)
    assert recent.get("a") == 1  # "a" is now the most recent
    recent.put("c", 3)
    assert (recent.get("a"), recent.get("b"), recent.get("c"), len(recent)) == (1, None, 3, 2)


def test_module_cache_drops_the_least_recently_used_and_loads_it_again(tmp_path) -> None:
    cache = ModuleCache(engine_for(1 << 20), tmp_path)
    first = cache.load(_module(0), KNOWN_IMPORTS)
    for n in range(1, MODULES_IN_MEMORY + 10):
        cache.load(_module(n), KNOWN_IMPORTS)
    assert cache.get(first.sha256) is None  # evicted from memory...
    again = cache.load(_module(0), KNOWN_IMPORTS)  # ...and read back from the disk cache
    assert again.sha256 == first.sha256 and cache.get(first.sha256) is again


def test_failed_agents_leave_no_store_behind(tmp_path) -> None:
    """An agent that fails keeps its error but not the error's frames: they held its Store, which
    wasmtime's global table of host functions kept alive through the agent (a leak of every failed
    agent's memory mappings, found by the long fuzz run)."""
    import gc

    from meshagent.config import SandboxLimits
    from meshagent.runtime.journal import Journal
    from meshagent.runtime.sandbox import Agent
    from meshagent.runtime.snapshot import AgentSnapshot
    from meshagent.runtime.vfs import VirtualFs
    from tests.hostile.test_fuzz_host_calls import _wat
    from tests.runtime.fakes import ScriptedLlm

    cache = ModuleCache(engine_for(1 << 20), tmp_path)
    gc.collect()
    before = sum(isinstance(o, wasmtime.Store) for o in gc.get_objects())
    for n in range(20):
        wasm = _wat(("mesh", "embed"), [[0x7FFF0000 + n] * 8], b"")  # pointers far outside memory
        loaded = cache.load(wasm, KNOWN_IMPORTS)
        snap = AgentSnapshot(agent_id=f"a{n}", module_sha256=loaded.sha256, module=wasm, journal=Journal(), args=("a",),
                             vfs=VirtualFs())
        outcome = Agent(snap, modules=cache, services=ScriptedLlm(), limits=SandboxLimits(), loaded=loaded).run()
        assert outcome.status == "failed" and outcome.error is not None
    gc.collect()
    assert sum(isinstance(o, wasmtime.Store) for o in gc.get_objects()) == before
