"""``meshagent bench checkpoint``: capture, restore and replay costs of an agent snapshot.

The agent (``meshagent/agents/heap_bench.c``, reactor style) fills a heap of
``--heap-mib`` MiB, then makes ``--calls`` journaled host calls (clock,
randomness and ``mesh_llm`` in turn). Figures:

* ``memory_bytes`` — linear memory in the image;
* ``capture_s`` — memory image + snapshot bytes, with the agent idle;
* ``restore_s`` — decode the snapshot, fresh sandbox, apply the image (no replay);
* ``replay_calls`` / ``replay_s`` — restore from the image taken before the calls,
  then replay the calls from the journal (``replay_s`` is the replay alone;
  ``restore_and_replay_s`` the whole restore);
* ``seal_s`` — seal that snapshot for a recipient (sections, zstd, AEAD, signed
  header; sealed to a throwaway identity of this run) as a handoff would;
* baselines measured in the same run: ``plain_setup_s`` and ``plain_calls_s`` (the
  same work done live) and ``replay_from_start_s`` (no image: everything replayed).

The LLM is a constant-answer stand-in so that the figures are the runtime's own.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from meshagent.config import SandboxLimits, user_cache_dir
from meshagent.runtime.build import build_cached, example_source
from meshagent.runtime.journal import Journal
from meshagent.runtime.modules import ModuleCache, engine_for
from meshagent.runtime.sandbox import KNOWN_IMPORTS, Agent
from meshagent.runtime.services import LlmOptions
from meshagent.runtime.snapshot import AgentSnapshot

__all__ = ["DESCRIPTION", "add_arguments", "run", "ConstantLlm"]

DESCRIPTION = "snapshot capture/restore/replay of an agent with a large heap and many journaled host calls"


class ConstantLlm:
    """Benchmark stand-in for the host services: answers instantly, always the same."""

    def llm(self, agent_id: str, prompt: str, options: LlmOptions) -> str:
        return "ok"

    def embed(self, agent_id: str, text: str) -> Sequence[float]:
        return [0.0]

    def tool(self, agent_id: str, name: str, args: bytes) -> bytes:
        return b""

    def fork(self, parent_id: str, child_ids: Sequence[str]) -> None:
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heap-mib", type=int, default=64, help="heap size of the agent (default 64)")
    parser.add_argument("--calls", type=int, default=1000, help="journaled host calls (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="report the fastest of this many runs (default 3)")
    parser.add_argument("--python", action="store_true",
                        help="a Python agent (component) instead: capture, restore and replay after --calls host calls")


def _cache_dir() -> Path:
    return user_cache_dir() / "agents"


def run(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "python", False):
        from meshagent.bench.checkpoint_python import run_python

        return run_python(args)
    heap_mib = int(getattr(args, "heap_mib", 64))
    calls = int(getattr(args, "calls", 1000))
    repeat = max(1, int(getattr(args, "repeat", 3)))
    limits = SandboxLimits(memory_bytes=max(256 << 20, (heap_mib + 64) << 20))
    wasm = build_cached(example_source("heap_bench"), _cache_dir(), reactor=True).read_bytes()
    modules = ModuleCache(engine_for(limits.stack_bytes))
    loaded = modules.load(wasm, KNOWN_IMPORTS)
    services = ConstantLlm()

    def agent(snap: AgentSnapshot) -> Agent:
        return Agent(snap, modules=modules, services=services, limits=limits, loaded=loaded)

    fresh = AgentSnapshot(agent_id="bench", module_sha256=loaded.sha256, module=wasm, journal=Journal(limit=limits.journal_bytes))
    live = agent(fresh)
    live.run()
    t = time.perf_counter()
    if live.invoke("setup", heap_mib) != 0:
        raise RuntimeError("the benchmark agent could not allocate its heap")
    plain_setup_s = time.perf_counter() - t
    before_calls = live.snapshot()  # image after setup, before the calls
    journal_before = len(live.journal)

    t = time.perf_counter()
    live.invoke("work", calls)
    plain_calls_s = time.perf_counter() - t
    expected = live.invoke("checksum")

    def best(action: Callable[[], Agent | bytes]) -> float:
        """Fastest of ``--repeat`` runs: these machines are shared and noisy."""
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            action()
            times.append(time.perf_counter() - t)
        return min(times)

    snap = live.snapshot()
    data = snap.to_bytes()
    assert snap.image is not None
    capture_s = best(lambda: live.snapshot().to_bytes())

    def restore(blob: bytes) -> Agent:
        restored = agent(AgentSnapshot.from_bytes(blob, journal_limit=limits.journal_bytes))
        restored.run()
        return restored

    restore_s = best(lambda: restore(data))
    if restore(data).invoke("checksum") != expected:
        raise RuntimeError("restored agent differs from the original")

    late = replace(live.snapshot(capture_image=False), image=before_calls.image).to_bytes()
    restore_and_replay_s = best(lambda: restore(late))
    replay_times = []
    for _ in range(repeat):
        stats = restore(late).last_restore
        assert stats is not None
        replay_times.append(stats.replay_s)
    replay_s = min(replay_times)
    replay_calls = len(live.journal) - journal_before
    if restore(late).invoke("checksum") != expected:
        raise RuntimeError("replayed agent differs from the original")

    no_image = replace(live.snapshot(capture_image=False), image=None).to_bytes()
    replay_from_start_s = best(lambda: restore(no_image))
    if restore(no_image).invoke("checksum") != expected:
        raise RuntimeError("agent replayed from the start differs from the original")

    seal_s, sealed_bytes = _seal_to_self(snap, best)

    return {
        "memory_bytes": snap.image.memory_size,
        "seal_s": seal_s,
        "sealed_bytes": sealed_bytes,
        "snapshot_bytes": len(data),
        "journal_entries": len(snap.journal),
        "capture_s": capture_s,
        "restore_s": restore_s,
        "replay_calls": replay_calls,
        "replay_s": replay_s,
        "restore_and_replay_s": restore_and_replay_s,
        "replay_from_start_s": replay_from_start_s,
        "repeat": repeat,
        "plain_setup_s": plain_setup_s,
        "plain_calls_s": plain_calls_s,
    }


def _seal_to_self(snap: AgentSnapshot, best: Callable[[Callable[[], object]], float]) -> tuple[float, int]:
    """Time sealing the snapshot as a handoff does (to a throwaway identity)."""
    import tempfile

    from meshagent.node.identity import load_or_create_identity
    from meshagent.node.snapshots import FrozenAgent, seal_agent

    with tempfile.TemporaryDirectory() as d:
        ident = load_or_create_identity(Path(d) / "id")
    frozen = FrozenAgent(snapshot=snap)
    size = [0]

    def seal() -> None:
        sealed = seal_agent(frozen, ident, recipient=ident.peer_id, recipient_key=ident.sealing_public, generation=1,
                            now=time.time(), ttl_s=60.0, data_key=os.urandom(32))
        size[0] = sum(len(piece) for piece in sealed.container())

    return best(seal), size[0]
