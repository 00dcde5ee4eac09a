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
