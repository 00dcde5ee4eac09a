"""``meshagent bench tools``: the cost of tools inside the container.

Figures (issue 11), each with a baseline measured in the same run:

``host_call_us_p50``        a trivial ``mesh_tool`` round trip (``sys.echo``): guest → host,
                            argument digest, tool, journal entry, answer copied back;
                            timed between consecutive journal entries of a tight loop;
``baseline_wasi_call_us_p50``  the same loop over ``sched_yield``, a journaled WASI call
                            with no tool behind it (the floor of any host call);
``file_tool_us_p50``        a built-in file tool (``fs.read`` of a small file) the same way;
``wasi_tool_cold_ms``       a WASI tool (``lines`` over a small tree) never seen before:
                            compile, instantiate, run;
``wasi_tool_warm_ms_p50``   the same tool again: instantiate the cached compiled module and run;
``wasi_tool_call_ms_p50``   the warm tool through ``mesh_tool`` from an agent (journaled);
``baseline_spawn_ms_p50``   starting a native process (``/bin/true``), what a tool as a
                            subprocess would cost before doing anything;
``journal_bytes_per_call``  journal growth per ``sys.echo`` call (16-byte arguments).
Targets: host call < 50 µs, warm WASI tool < 5 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshagent.config import SandboxLimits
from meshagent.runtime.build import AGENTS_DIR, build_cached
from meshagent.runtime.journal import Entry, Journal
from meshagent.runtime.modules import ModuleCache, engine_for, sha256_hex
from meshagent.runtime.sandbox import KNOWN_IMPORTS, Agent
from meshagent.runtime.services import NoServices
from meshagent.runtime.snapshot import AgentSnapshot
from meshagent.runtime.tools.runtime import TOOL_STACK_BYTES, ToolRuntime
from meshagent.runtime.tools.sections import with_custom_section
from meshagent.runtime.tools.spec import MANIFEST_SECTION, ToolManifest, ToolSpec
from meshagent.runtime.tools.store import default_build_dir, shipped_tool
from meshagent.runtime.tools.wasi_tool import ToolModules, run_wasi_tool
from meshagent.runtime.vfs import FileView, VirtualFs

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = "tools inside the container: mesh_tool round trip, WASI tool cold/warm, journal bytes per call"

_FILES = {
    "src/main.c": b"#include <stdio.h>\nint main(void) {\n  puts(\"hi\"); /* TODO */\n  return 0;\n}\n" * 20,
    "src/util.h": b"#define MAX(a, b) ((a) > (b) ? (a) : (b))\n" * 40,
    "README.md": b"# demo\nA tiny project with a TODO list.\n" * 10,
}
_LINES_ARGV = ("lines", "-e", "TODO|return", "-m", "src", "README.md")


class _Timer:
    """AgentHooks that timestamp every journal entry (the agent runs without a supervisor)."""

    def __init__(self) -> None:
        self.stamps: list[tuple[str, int]] = []

    def spawn(self, parent: Agent, children: Sequence[AgentSnapshot]) -> None:
        raise RuntimeError("the benchmark agent does not fork")

    def join(self, parent: Agent, child_id: str) -> bytes:
        raise RuntimeError("the benchmark agent does not join")

    def entry_added(self, agent: Agent, index: int, entry: Entry) -> None:
        self.stamps.append((entry.name, time.perf_counter_ns()))

    def truncated(self, agent: Agent, length: int) -> None:
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=2000, help="host calls per loop")
    parser.add_argument("--repeat", type=int, default=50, help="warm WASI tool runs")


def _loop(modules: ModuleCache, wasm: bytes, tools: ToolRuntime, *argv: str, carried: dict[str, bytes] | None = None
          ) -> tuple[list[float], Agent]:
    """Run the bench agent; per-call microseconds between consecutive entries of the looped call."""
    loaded = modules.load(wasm, KNOWN_IMPORTS)
    snap = AgentSnapshot(agent_id="bench", module_sha256=loaded.sha256, module=wasm, journal=Journal(),
                         args=("tool_bench", *argv), vfs=VirtualFs(dict(_FILES)), tools=carried or {})
    timer = _Timer()
    agent = Agent(snap, modules=modules, services=NoServices(), limits=SandboxLimits(), hooks=timer,
                  loaded=loaded, tools=tools)
    outcome = agent.run()
    if outcome.status != "exited" or outcome.exit_code != 0:
        raise RuntimeError(f"the benchmark agent failed: {outcome.error_message or outcome.exit_code}")
    name = "sched_yield" if argv[1] == "-" else "tool"
    times = [t for n, t in timer.stamps if n == name]
    deltas = [(b - a) / 1e3 for a, b in zip(times, times[1:])]
    return deltas[len(deltas) // 10 :], agent  # drop the warm-up tenth


def run(args: argparse.Namespace) -> dict[str, Any]:
    build_dir = default_build_dir()
    lines = shipped_tool("lines", build_dir)
    sha = sha256_hex(lines)
    spec = ToolSpec("lines", sha, 16 << 20, 500_000_000)
    base = build_cached(AGENTS_DIR / "tool_bench.c", build_dir).read_bytes()
    wasm = with_custom_section(base, MANIFEST_SECTION, ToolManifest((spec,)).encode())
    modules = ModuleCache(engine_for(SandboxLimits().stack_bytes))
    n = max(20, args.calls)

    runtime = ToolRuntime.create()
    echo_us, echo_agent = _loop(modules, wasm, runtime, str(n), "sys.echo", "0123456789abcdef")
    yield_us, _ = _loop(modules, wasm, runtime, str(n), "-")
    read_us, _ = _loop(modules, wasm, runtime, str(n), "fs.read", '{"path":"src/util.h","start":1,"end":2}')
    tool_entries = [e for e in echo_agent.journal if e.name == "tool"]
    journal_per_call = sum(e.size for e in tool_entries) / len(tool_entries)
    encoded_per_call = len(Journal(tool_entries).encode()) / len(tool_entries)

    fs = FileView(VirtualFs(dict(_FILES)), {})
    with tempfile.TemporaryDirectory() as tmp:
        cold_modules = ToolModules(engine_for(TOOL_STACK_BYTES), Path(tmp))  # nothing compiled yet
        t0 = time.perf_counter()
        compiled = cold_modules.compile(sha, lines)
        first = run_wasi_tool(cold_modules, compiled, argv=_LINES_ARGV, fs=fs, memory_bytes=spec.memory_bytes, fuel=spec.fuel)
        cold_ms = (time.perf_counter() - t0) * 1e3
        warm_ms: list[float] = []
        for _ in range(max(5, args.repeat)):
            t0 = time.perf_counter()
            again = run_wasi_tool(cold_modules, cold_modules.compile(sha, lines), argv=_LINES_ARGV, fs=fs,
                                  memory_bytes=spec.memory_bytes, fuel=spec.fuel)
            warm_ms.append((time.perf_counter() - t0) * 1e3)
        if first.exit_code != 0 or again.stdout != first.stdout:
            raise RuntimeError(f"the lines tool did not run as expected: {first}")

    calls = max(10, args.repeat)
    wasi_args = '{"args":["-e","TODO|return","-m","src","README.md"]}'
    wasi_us, _ = _loop(modules, wasm, runtime, str(calls), "lines", wasi_args, carried={sha: lines})

    spawn_ms: list[float] = []
    for _ in range(20):
        t0 = time.perf_counter()
        subprocess.run(["/bin/true"], check=True)
        spawn_ms.append((time.perf_counter() - t0) * 1e3)

    host_p50 = statistics.median(echo_us)
    warm_p50 = statistics.median(warm_ms)
    return {
        "calls": n,
        "host_call_us_p50": host_p50,
        "host_call_us_p90": statistics.quantiles(echo_us, n=10)[-1],
        "baseline_wasi_call_us_p50": statistics.median(yield_us),
        "file_tool_us_p50": statistics.median(read_us),
        "wasi_tool_cold_ms": cold_ms,
        "wasi_tool_warm_ms_p50": warm_p50,
        "wasi_tool_call_ms_p50": statistics.median(wasi_us) / 1e3,
        "wasi_tool_fuel": first.fuel_used,
        "baseline_spawn_ms_p50": statistics.median(spawn_ms),
        "journal_bytes_per_call": journal_per_call,
        "journal_encoded_bytes_per_call": encoded_per_call,
        "target_met": host_p50 < 50.0 and warm_p50 < 5.0,
    }
