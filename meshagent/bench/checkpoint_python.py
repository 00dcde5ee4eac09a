"""``meshagent bench checkpoint --python``: capture, restore and replay of a Python agent.

The agent (``meshagent/agents/host_calls_bench.py``, a component with CPython) makes
``--calls`` journaled host calls (wall clock, randomness, ``llm``, a tool in turn) and
is stopped before its next one. Figures:

* ``capture_s`` — the agent's snapshot bytes (journal; the component travels by hash);
* ``restore_s`` — decode the snapshot and load the compiled component (from the cache);
* ``replay_s`` — a fresh instance (CPython inside) replayed through the journal to the
  same point; components have no memory images, so restore is always replay;
* ``snapshot_bytes`` / ``journal_bytes``;
* baselines measured in the same run: ``live_s`` (the same calls made live) and
  ``compile_s`` (compiling the component without a cache, what the cache saves).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from meshagent.bench.checkpoint import ConstantLlm, _cache_dir
from meshagent.config import SandboxLimits
from meshagent.runtime.build import AGENTS_DIR
from meshagent.runtime.component_agent import ComponentAgent, component_snapshot
from meshagent.runtime.components import ComponentCache
from meshagent.runtime.modules import engine_for
from meshagent.runtime.snapshot import AgentSnapshot
from meshagent.sdk.build import build_python_cached

__all__ = ["run_python"]


def run_python(args: argparse.Namespace) -> dict[str, Any]:
    calls = int(getattr(args, "calls", 1000))
    repeat = max(1, int(getattr(args, "repeat", 3)))
    limits = SandboxLimits()
    wasm = build_python_cached(AGENTS_DIR / "host_calls_bench.py", _cache_dir()).read_bytes()
    cache_dir = _cache_dir().parent / "modules"
    engine = engine_for(limits.stack_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ComponentCache(engine, Path(tmp)).load(wasm)
        compile_s = time.perf_counter() - t0
    cache = ComponentCache(engine, cache_dir)
    cache.load(wasm)
    services = ConstantLlm()
    best: dict[str, float] = {}
    for _ in range(repeat):
        snap = component_snapshot(wasm, cache, agent_id="bench", args=("host_calls_bench", str(calls + 100)))
        agent = ComponentAgent(snap, components=cache, services=services, limits=limits)  # type: ignore[arg-type]
        agent.suspend_at = calls  # stop before host call N (CPython's startup randomness counts too)
        t0 = time.perf_counter()
        if agent.run().status != "suspended":
            raise RuntimeError("the benchmark agent did not stop where asked")
        live_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = agent.snapshot(include_module=False).to_bytes()
        capture_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        restored = AgentSnapshot.from_bytes(data, journal_limit=limits.journal_bytes)
        again = ComponentAgent(dataclasses.replace(restored, module=wasm, status="ready"), components=cache,
                               services=services, limits=limits)  # type: ignore[arg-type]
        restore_s = time.perf_counter() - t0
        again.suspend_at = len(restored.journal)
        t0 = time.perf_counter()
        if again.run().status != "suspended" or len(again.journal) != len(restored.journal):
            raise RuntimeError("the replay did not reach the captured point")
        replay_s = time.perf_counter() - t0
        figures = {"live_s": live_s, "capture_s": capture_s, "restore_s": restore_s, "replay_s": replay_s}
        best = {k: min(v, best.get(k, v)) for k, v in figures.items()}
    return {
        "agent": "host_calls_bench.py",
        "host_calls": len(restored.journal),
        "component_bytes": len(wasm),
        "snapshot_bytes": len(data),
        "journal_bytes": restored.journal.bytes,
        **best,
        "restore_and_replay_s": best["restore_s"] + best["replay_s"],
        "compile_s": compile_s,
    }
