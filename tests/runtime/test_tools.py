"""Issue 11: tools inside the container, journaled so that replay and migration never re-run them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from meshagent.config import SandboxLimits
from meshagent.runtime.build import build_cached
from meshagent.runtime.modules import ModuleCache, sha256_hex
from meshagent.runtime.sandbox import Agent
from meshagent.runtime.snapshot import AgentSnapshot
from meshagent.runtime.tools.runtime import ToolRuntime, manifest_of
from meshagent.runtime.tools.sections import with_custom_section
from meshagent.runtime.tools.spec import MANIFEST_SECTION, ToolManifest, ToolSpec
from meshagent.runtime.tools.store import TOOL_FLAGS, ToolStore, resolve_tools, shipped_tool
from meshagent.runtime.vfs import VirtualFs
from tests.runtime.conftest import BUILD_CACHE, PROGRAMS
from tests.runtime.fakes import ScriptedLlm
from tests.runtime.helpers import new_snapshot

FILES = {
    "src/main.c": b"#include <string.h>\nint main(void) {\n  char b[4];\n  strcpy(b, \"x\"); // TODO\n  return 0;\n}\n",
    "src/util.h": b"#define MAX(a, b) ((a) > (b) ? (a) : (b))\n",
    "README.md": b"# demo\nA tiny project.\n",
}


def tool_module(name: str) -> bytes:
    if name in ("lines", "ccheck"):
        return shipped_tool(name, BUILD_CACHE)
    return build_cached(PROGRAMS / f"{name}.c", BUILD_CACHE, flags=TOOL_FLAGS).read_bytes()


@pytest.fixture(scope="module")
def tooluser() -> Callable[..., tuple[bytes, dict[str, bytes]]]:
    """``tooluser(name=(memory, fuel), ...)`` → (agent module with that manifest, tool modules by sha256)."""
    base = build_cached(PROGRAMS / "tooluser.c", BUILD_CACHE).read_bytes()

    def make(**tools: tuple[int, int]) -> tuple[bytes, dict[str, bytes]]:
        specs, modules = [], {}
        for name, (memory, fuel) in tools.items():
            wasm = tool_module(name)
            specs.append(ToolSpec(name, sha256_hex(wasm), memory, fuel))
            modules[sha256_hex(wasm)] = wasm
        return with_custom_section(base, MANIFEST_SECTION, ToolManifest(tuple(specs)).encode()), modules

    return make


def snapshot_of(modules: ModuleCache, wasm: bytes, tools: dict[str, bytes], *args: str) -> AgentSnapshot:
    snap = new_snapshot(modules, wasm, *args)
    return dataclasses.replace(snap, vfs=VirtualFs(dict(FILES)), tools=tools)


def answers(stdout: bytes) -> list[dict[str, object]]:
    return [json.loads(line.split(" -> ", 1)[1]) for line in stdout.decode().splitlines() if " -> {" in line]


def fresh_node() -> ToolRuntime:
    """The tool side of a node that has never seen any tool."""
    return ToolRuntime.create()


CALLS = (
    'fs.search={"pattern":"strcpy|TODO","glob":"*.c"}',
    'lines={"args":["-e","return","-m","src"]}',
    'fs.write={"path":"REVIEW.md","text":"first\\n"}',
    "llm:midway",
    'ccheck={"args":["src"]}',
    'fs.patch={"diff":"--- a/REVIEW.md\\n+++ b/REVIEW.md\\n@@ -1 +1,2 @@\\n first\\n+second\\n"}',
    'fs.read={"path":"REVIEW.md"}',
    "cat:REVIEW.md",
)
TOOL_CALLS = sum(1 for c in CALLS if "=" in c)


def test_tool_results_come_from_the_journal_on_replay(modules: ModuleCache, limits: SandboxLimits, tooluser) -> None:
    wasm, tools = tooluser(lines=(16 << 20, 10**8), ccheck=(16 << 20, 10**8))
    plain = Agent(snapshot_of(modules, wasm, tools, *CALLS), modules=modules, services=ScriptedLlm(), limits=limits,
                  tools=fresh_node())
    out = plain.run()
    assert out.status == "exited", out.error_message
    assert plain.tools.executions == TOOL_CALLS
    got = answers(out.stdout)
    assert got[0]["ok"] and [m["line"] for m in got[0]["matches"]] == [4]
    assert "src/main.c:5:  return 0;\n1 2 12 src/main.c\n" in got[1]["stdout"] and got[1]["exit_code"] == 0
    assert "src/main.c:4: warning: strcpy() can overflow" in got[3]["stdout"] and got[3]["exit_code"] == 0
    assert got[5]["text"] == "first\nsecond\n"
    assert b"cat REVIEW.md: first\nsecond\n" in out.stdout

    # --verify-replay restores the agent from its own snapshot bytes after every host call:
    # dozens of replays, and still each tool ran exactly once.
    verified = Agent(snapshot_of(modules, wasm, tools, *CALLS), modules=modules, services=ScriptedLlm(), limits=limits,
                     verify_replay=True, tools=fresh_node())
    again = verified.run()
    assert verified.replays > 20
    assert verified.tools.executions == TOOL_CALLS
    assert again.stdout == out.stdout

    # Replaying the finished journal into a fresh agent (another node) runs no tool at all.
    replay = Agent(dataclasses.replace(plain.snapshot(), status="ready"), modules=modules, services=ScriptedLlm(),
                   limits=limits, tools=fresh_node())
    assert replay.run().stdout == out.stdout
    assert replay.tools.executions == 0


def test_an_agent_with_wasi_tools_resumes_on_a_node_that_never_saw_them(modules: ModuleCache, limits: SandboxLimits,
                                                                        tooluser) -> None:
    wasm, tools = tooluser(lines=(16 << 20, 10**8), ccheck=(16 << 20, 10**8))
    whole = Agent(snapshot_of(modules, wasm, tools, *CALLS), modules=modules, services=ScriptedLlm(), limits=limits,
                  tools=fresh_node())
    expected = whole.run().stdout
    midway = next(i for i, e in enumerate(whole.journal) if e.name == "llm")

    first = Agent(snapshot_of(modules, wasm, tools, *CALLS), modules=modules, services=ScriptedLlm(), limits=limits,
                  tools=fresh_node())
    first.suspend_at = midway
    assert first.run().status == "suspended"
    executed_before = first.tools.executions
    data = first.snapshot().to_bytes()

    there = fresh_node()
    assert not any(there.store.has(sha) for sha in tools)
    restored = AgentSnapshot.from_bytes(data)
    assert set(restored.tools) == set(tools)  # the tools travel in the snapshot
    second = Agent(dataclasses.replace(restored, status="ready"), modules=modules, services=ScriptedLlm(), limits=limits,
                   tools=there)
    out = second.run()
    assert out.status == "exited" and out.stdout == expected
    assert executed_before == 3 and second.tools.executions == TOOL_CALLS - executed_before
    assert second.fs.get("REVIEW.md") == b"first\nsecond\n"


@pytest.mark.parametrize("tool, limit", [("tool_spin", "CpuLimitExceeded"), ("tool_hog", "MemoryLimitExceeded")])
def test_a_runaway_wasi_tool_is_stopped_by_its_own_limits(modules: ModuleCache, limits: SandboxLimits, tooluser,
                                                          tool: str, limit: str) -> None:
    wasm, tools = tooluser(**{tool: (4 << 20, 50_000_000)})
    agent = Agent(snapshot_of(modules, wasm, tools, f'{tool}={{"args":[]}}', 'fs.read={"path":"README.md"}'),
                  modules=modules, services=ScriptedLlm(), limits=limits, tools=fresh_node())
    out = agent.run()
    assert out.status == "exited" and out.exit_code == 0, out.error_message  # the agent goes on
    stopped, after = answers(out.stdout)
    assert stopped["ok"] is False and stopped["exit_code"] is None and str(stopped["error"]).startswith(limit)
    assert after["ok"] is True and after["text"] == "# demo\nA tiny project.\n"


def test_tools_cannot_read_outside_the_agent_directory(modules: ModuleCache, limits: SandboxLimits, tooluser,
                                                       tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the host's secret\n")
    wasm, tools = tooluser(lines=(16 << 20, 10**8))
    climb = "../" * 12 + str(secret).lstrip("/")
    calls = (
        f'lines={{"args":["-m","{secret}"]}}',
        f'lines={{"args":["-m","{climb}"]}}',
        'lines={"args":["-m","/etc/hostname"]}',
        f'fs.read={{"path":"{climb}"}}',
        f'fs.write={{"path":"{climb}","text":"x"}}',
        'fs.list={"path":"../.."}',
    )
    agent = Agent(snapshot_of(modules, wasm, tools, *calls), modules=modules, services=ScriptedLlm(), limits=limits,
                  tools=fresh_node())
    out = agent.run()
    assert out.status == "exited"
    assert b"secret" not in out.stdout.replace(b"secret.txt", b"")
    got = answers(out.stdout)
    for run in got[:3]:
        assert run["exit_code"] == 2 and "no such file" in str(run["stderr"]) and ":1:" not in str(run["stdout"])
    for refused in got[3:]:
        assert refused["ok"] is False and "outside the agent's directory" in str(refused["error"])
    assert secret.read_text() == "the host's secret\n"


def test_wasi_tool_writes_are_journaled_and_undone_by_rollback(modules: ModuleCache, limits: SandboxLimits, tooluser) -> None:
    wasm, tools = tooluser(tool_write=(4 << 20, 10**8))
    calls = ("cat:notes/out.txt", 'tool_write={"args":["notes/out.txt","alpha","beta"]}', "cat:notes/out.txt",
             "put:mine.txt:by wasi", "cat:mine.txt")
    agent = Agent(snapshot_of(modules, wasm, tools, *calls), modules=modules, services=ScriptedLlm(), limits=limits,
                  tools=fresh_node())
    out = agent.run()
    assert out.stdout.startswith(b"cat notes/out.txt: missing\n")
    assert b"cat notes/out.txt: alpha\nbeta\n" in out.stdout and b"cat mine.txt: by wasi" in out.stdout
    entry = next(e for e in agent.journal if e.name == "tool")
    assert b"alpha\nbeta\n" in (entry.data or b"")  # the write is in the journal entry, not on a disk
    assert agent.fs.get("notes/out.txt") == b"alpha\nbeta\n" and agent.fs.get("mine.txt") == b"by wasi"
    assert agent.vfs.files == FILES  # the base files never change

    # Rolled back past the writes (tool and WASI), the agent sees the base files again.
    calls = ("cp:a", '0?tool_write={"args":["notes/out.txt","alpha"]}', "0?put:mine.txt:by wasi", "rb:a",
             "cat:notes/out.txt", "cat:mine.txt")
    agent = Agent(snapshot_of(modules, wasm, tools, *calls), modules=modules, services=ScriptedLlm(), limits=limits,
                  tools=fresh_node())
    out = agent.run()
    assert out.stdout == b"checkpoint a 1\ncat notes/out.txt: missing\ncat mine.txt: missing\n"
    assert agent.tools.executions == 1 and agent.fs.get("notes/out.txt") is None


def test_unknown_tools_go_to_the_host_services(modules: ModuleCache, limits: SandboxLimits, tooluser) -> None:
    wasm, tools = tooluser()
    agent = Agent(snapshot_of(modules, wasm, tools, 'weather={"city":"Oslo"}', "sys.echo=ping"), modules=modules,
                  services=ScriptedLlm(), limits=limits, tools=fresh_node())
    out = agent.run()
    assert b'weather -> weather:{"city":"Oslo"}\n' in out.stdout and b"sys.echo -> ping\n" in out.stdout


def test_a_missing_tool_module_is_an_error_result(modules: ModuleCache, limits: SandboxLimits, tooluser) -> None:
    wasm, _ = tooluser(lines=(16 << 20, 10**8))
    agent = Agent(snapshot_of(modules, wasm, {}, 'lines={"args":[]}'), modules=modules, services=ScriptedLlm(),
                  limits=limits, tools=fresh_node())
    (got,) = answers(agent.run().stdout)
    assert got["ok"] is False and "not available on this node" in str(got["error"])


def test_code_review_uses_the_tools(build: Callable[[str], Path], modules: ModuleCache, limits: SandboxLimits,
                                    project_dir: Path) -> None:
    (project_dir / "src" / "bad.c").write_text('#include <string.h>\nvoid f(char *s) {\n  char b[4];\n  strcpy(b, s);\n')
    wasm = build("code_review").read_bytes()
    tools = resolve_tools(manifest_of(sha256_hex(wasm), wasm), ToolStore(), build_dir=BUILD_CACHE)  # as a launch does
    snap = dataclasses.replace(new_snapshot(modules, wasm), vfs=VirtualFs.from_directory(project_dir), tools=tools)
    services = ScriptedLlm()
    agent = Agent(snap, modules=modules, services=services, limits=limits, tools=fresh_node())
    out = agent.run()
    assert out.status == "exited" and out.exit_code == 0, out.error_message
    assert [s.name for s in agent.manifest.tools] == ["ccheck"]
    assert agent.tools.executions == 2 + 5 + 3 + 1  # list, search, a read per file, ccheck per C file, the write
    bad = next(p for _, p, _ in services.calls if "File src/bad.c" in p)
    assert "A checker reported:\nsrc/bad.c:4: warning: strcpy() can overflow" in bad
    assert "src/bad.c:2: error: '{' is never closed\n" in bad
    assert "Risky lines found by search:\nsrc/bad.c:4:   strcpy(b, s);" in bad
    review = (agent.fs.get("REVIEW.md") or b"").decode()
    assert review.startswith("## README.md\n") and "## src/bad.c\n" in review and review.endswith("reviewed 5 file(s)\n")
    assert out.stdout.decode() == review + "wrote REVIEW.md\n"


def test_bench_tools_reports_the_issue_figures() -> None:
    import argparse

    from meshagent.bench.tools import run

    figures = run(argparse.Namespace(calls=40, repeat=5))
    for key in ("host_call_us_p50", "wasi_tool_cold_ms", "wasi_tool_warm_ms_p50", "journal_bytes_per_call",
                "baseline_wasi_call_us_p50", "baseline_spawn_ms_p50"):
        assert figures[key] > 0, key
    assert figures["journal_bytes_per_call"] < 200  # one small entry per echo call, no hidden copies


def test_run_out_dir_writes_the_agents_files(build: Callable[[str], Path], project_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "meshagent", "run", str(build("code_review")), "--local", "--dir",
                           str(project_dir), "--out-dir", str(out), "--services", "tests.runtime.fakes:scripted_services"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    review = (out / "REVIEW.md").read_text()
    assert review.startswith("## README.md\n") and done.stdout == review + "wrote REVIEW.md\n"
    assert not (project_dir / "REVIEW.md").exists()  # the owner's directory itself is never written
