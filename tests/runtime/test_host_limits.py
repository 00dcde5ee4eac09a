"""What a hostile agent can make the host allocate and do: sizes checked first, host work charged.

* File sizes and offsets an agent passes (``fd_filestat_set_size``, ``fd_pwrite``, ``fd_seek`` +
  ``fd_write`` at a far offset, iovecs over its whole memory) are refused before the host
  allocates: a hostile agent with a 1 MiB memory limit, in the real sandbox, in a fresh process
  whose peak RSS is measured, leaves the peak within its limits plus a small constant. So does a
  WASI tool whose manifest asks for 1 GiB of memory: the node's ``tool_memory_bytes`` caps it.
* Tools: memory and fuel clamped to the node's caps; a tool's fuel comes out of its agent's.
* Host work (bytes read, written, searched, embedded) is paid from the agent's fuel.
* ``fs.search`` runs under one deadline per call; a write at an offset copies only its bytes;
  ``fs.patch`` is linear in the number of files.
* ``mesh_log`` reaches the operator log escaped and bounded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshagent.config import SandboxLimits
from meshagent.errors import JournalError
from meshagent.runtime.agent_log import MAX_LINE_CHARS, escape_log_text
from meshagent.runtime.build import build_cached
from meshagent.runtime.costs import Meter
from meshagent.runtime.modules import ModuleCache, sha256_hex
from meshagent.runtime.sandbox import Agent
from meshagent.runtime.tools import files
from meshagent.runtime.tools.files import FILE_TOOLS, ToolArgsError, fs_search
from meshagent.runtime.tools.node_tools import NodeTools
from meshagent.runtime.tools.runtime import ToolRuntime
from meshagent.runtime.tools.sections import with_custom_section
from meshagent.runtime.tools.spec import MANIFEST_SECTION, ToolManifest, ToolSpec
from meshagent.runtime.tools.store import TOOL_FLAGS
from meshagent.runtime.vfs import FileView, Overlay, VirtualFs
from tests.conftest import ROOT
from tests.runtime.conftest import BUILD_CACHE, PROGRAMS
from tests.runtime.fakes import ScriptedLlm
from tests.runtime.helpers import new_snapshot, run_alone

SMALL_STACK = ("-Wl,-z,stack-size=65536",)
"""A 64 KiB stack (zig's default is 16 MiB), so the agents fit a 1 MiB memory limit."""
PEAK_SLACK = 16 << 20
"""What a run may add to the host's peak RSS beyond the agent's own limits (journal, Python objects)."""
FILE_ATTACKS = ("set_size", "pwrite_far", "seek_write", "iov_flood")


def plenty() -> Meter:
    return Meter(10**15, tool_memory_bytes=1 << 30, tool_fuel=10**11)


def answers(stdout: bytes) -> list[dict[str, object]]:
    return [json.loads(line.split(" -> ", 1)[1]) for line in stdout.decode().splitlines() if " -> {" in line]


def with_tools(base: bytes, **tools: tuple[bytes, int, int]) -> tuple[bytes, dict[str, bytes]]:
    """``base`` with a manifest declaring ``name=(module, memory, fuel)``, and the tool modules by sha256."""
    specs = [ToolSpec(name, sha256_hex(wasm), memory, fuel) for name, (wasm, memory, fuel) in tools.items()]
    carried = {sha256_hex(wasm): wasm for wasm, _, _ in tools.values()}
    return with_custom_section(base, MANIFEST_SECTION, ToolManifest(tuple(specs)).encode()), carried


def tool(name: str) -> bytes:
    return build_cached(PROGRAMS / f"{name}.c", BUILD_CACHE, flags=TOOL_FLAGS).read_bytes()


def run_tooluser(modules: ModuleCache, limits: SandboxLimits, wasm: bytes, tools: dict[str, bytes], *calls: str,
                 vfs: VirtualFs | None = None) -> Agent:
    snap = dataclasses.replace(new_snapshot(modules, wasm, *calls), tools=tools, vfs=vfs or VirtualFs())
    agent = Agent(snap, modules=modules, services=ScriptedLlm(), limits=limits, tools=ToolRuntime.create())
    agent.run()
    return agent


# --- sizes checked before allocation, in the real sandbox ------------------------------------------


def test_hostile_sizes_and_tools_leave_the_hosts_peak_rss_within_the_agents_limits(tmp_path: Path) -> None:
    limits = {"memory_bytes": 1 << 20, "fuel": 2_000_000_000, "tool_memory_bytes": 4 << 20}
    spec = {
        "limits": limits,
        "hostile": str(build_cached(PROGRAMS / "hostile.c", BUILD_CACHE, flags=SMALL_STACK)),
        "tooluser": str(build_cached(PROGRAMS / "tooluser.c", BUILD_CACHE, flags=SMALL_STACK)),
        "tool": str(build_cached(PROGRAMS / "tool_fill.c", BUILD_CACHE, flags=TOOL_FLAGS)),
        "cases": [*FILE_ATTACKS, "tool_fill"],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "tests.runtime.rss_probe", str(tmp_path / "spec.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    for attack in FILE_ATTACKS:
        case = report[attack]
        assert case["status"] == "exited" and case["stdout"] == f"{attack}: -1 File too large\n", case
        assert case["peak_growth_kib"] * 1024 < limits["memory_bytes"] + PEAK_SLACK, (attack, case)
    filled = report["tool_fill"]
    result = answers(filled["stdout"].encode())[0]
    assert result["ok"] is True and int(str(result["stdout"]).split()[1]) < 4, filled  # within the node's 4 MiB cap
    assert filled["peak_growth_kib"] * 1024 < limits["memory_bytes"] + limits["tool_memory_bytes"] + PEAK_SLACK, filled


def test_file_view_checks_sizes_before_it_allocates() -> None:
    fs = FileView(VirtualFs({"a": b"x" * 10}), Overlay(), limit=1 << 20)
    tracemalloc.start()
    try:
        for attempt in (lambda: fs.truncate("a", 1 << 31), lambda: fs.write_at("a", 1 << 31, b"y"),
                        lambda: fs.write_at("new", (1 << 20) - 5, b"123456"), lambda: fs.put("b", bytes(1 << 20))):
            with pytest.raises(JournalError):
                attempt()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20  # the last attempt's own argument is 1 MiB; nothing else was allocated
    assert fs.get("a") == b"x" * 10 and fs.total_bytes() == 10 and not fs.overlay
    with pytest.raises(JournalError):
        fs.put("d/" + "n" * 2000, b"")  # names are bounded too: they are not counted in the budget


OPS = st.lists(st.one_of(
    st.tuples(st.just("write_at"), st.sampled_from(["a", "b/c", "b/d", "e"]), st.integers(0, 300), st.binary(max_size=40)),
    st.tuples(st.just("truncate"), st.sampled_from(["a", "b/c", "e"]), st.integers(0, 300), st.just(b"")),
    st.tuples(st.just("put"), st.sampled_from(["a", "b/c", "f/g/h"]), st.just(0), st.binary(max_size=60)),
    st.tuples(st.just("delete"), st.sampled_from(["a", "b/c", "b/d", "f/g/h"]), st.just(0), st.just(b"")),
    st.tuples(st.just("copy"), st.just(""), st.just(0), st.just(b"")),
), max_size=40)


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_running_totals_and_in_place_writes_match_a_plain_model(ops: list[tuple[str, str, int, bytes]]) -> None:
    base = VirtualFs({"a": b"0123456789", "b/c": b"abc"})
    fs = FileView(base, Overlay(), limit=400)
    model: dict[str, bytes] = dict(base.files)
    copies: list[tuple[Overlay, dict[str, bytes | None]]] = []
    for op, path, n, data in ops:
        old = model.get(path, b"")
        match op:
            case "write_at":
                new = old[:n].ljust(n, b"\0") + data + old[n + len(data):]
                change: Callable[[], object] = lambda: fs.write_at(path, n, data)
            case "truncate":
                new = old[:n].ljust(n, b"\0")
                change = lambda: fs.truncate(path, n)
            case "put":
                new = data
                change = lambda: fs.put(path, data)
            case "delete":
                model.pop(path, None)
                fs.delete(path)
                continue
            case _:
                copy = fs.overlay.copy()
                copies.append((copy, copy.to_dict()))
                continue
        if sum(map(len, model.values())) - len(old) + len(new) > 400:
            with pytest.raises(JournalError):
                change()
            continue
        change()
        model[path] = new
    assert {p: bytes(fs.get(p) or b"") for p in fs.paths()} == model
    assert fs.total_bytes() == sum(map(len, model.values())) and fs.file_count() == len(model)
    dirs = {"/".join(p.split("/")[:i]) for p in model for i in range(1, p.count("/") + 1)}
    assert all(fs.is_dir(d) for d in dirs) and not any(fs.is_dir(p) for p in model)
    for copy, then in copies:  # a copy never sees the writes made after it (nor does it change the original)
        assert copy.to_dict() == then


def test_a_one_byte_write_into_a_large_file_copies_one_byte() -> None:
    size = 16 << 20
    fs = FileView(VirtualFs({"big": bytes(size)}), Overlay())
    assert fs.write_at("big", 5, b"x") == size + 1  # the first change copies the base content once...
    tracemalloc.start()
    try:
        copied = [fs.write_at("big", 1000 + i * 4096, b"y") for i in range(100)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert copied == [1] * 100  # ...after which each write copies its one byte
    assert peak < 64 << 10
    assert fs.size("big") == size and fs.get("big")[5:6] == b"x" and fs.get("big")[1000:1001] == b"y"


def _python_lines(fn: Callable[[], object]) -> int:
    """Lines of meshagent code executed by ``fn()``: a deterministic count of the host's work."""
    count = 0

    def trace(frame, event, arg):  # type: ignore[no-untyped-def]
        nonlocal count
        if "/meshagent/" not in frame.f_code.co_filename:
            return None
        if event == "line":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def test_patching_n_files_is_linear_in_n() -> None:
    def work(n: int) -> int:
        base = VirtualFs({f"src/f{i}.c": b"one\ntwo\n" for i in range(n)})
        diff = "".join(f"--- a/src/f{i}.c\n+++ b/src/f{i}.c\n@@ -1,2 +1,2 @@\n one\n-two\n+two and three\n" for i in range(n))
        fs = FileView(base, Overlay())
        fs.put("warm", b"")  # the running totals exist before the measured call
        return _python_lines(lambda: FILE_TOOLS["fs.patch"]({"diff": diff}, fs, plenty()))

    small, large = work(100), work(800)
    assert large < 10 * small, (small, large)  # 8x the files: linear is 8x, quadratic 64x


# --- tools clamped, tool fuel and host work charged -------------------------------------------------


def test_a_tools_manifest_cannot_ask_for_more_memory_or_fuel_than_the_node_allows(modules: ModuleCache) -> None:
    base = build_cached(PROGRAMS / "tooluser.c", BUILD_CACHE).read_bytes()
    wasm, tools = with_tools(base, hog=(tool("tool_hog"), 1 << 30, 10**9), spin=(tool("tool_spin"), 4 << 20, 10**11))
    limits = SandboxLimits(fuel=2_000_000_000, memory_bytes=64 << 20, tool_memory_bytes=8 << 20, tool_fuel=20_000_000)
    agent = run_tooluser(modules, limits, wasm, tools, 'hog={"args":[]}', 'spin={"args":[]}')
    hog, spin = answers(agent.outcome().stdout)
    assert str(hog["error"]).startswith("MemoryLimitExceeded") and "8 MiB" in str(hog["error"]), hog
    assert str(spin["error"]).startswith("CpuLimitExceeded") and "20000000 fuel" in str(spin["error"]), spin
    assert spin["fuel"] == 20_000_000


def test_a_wasi_tools_fuel_is_paid_by_its_agent(modules: ModuleCache) -> None:
    base = build_cached(PROGRAMS / "tooluser.c", BUILD_CACHE).read_bytes()
    wasm, tools = with_tools(base, spin=(tool("tool_spin"), 4 << 20, 2_000_000_000))
    limits = SandboxLimits(fuel=300_000_000, memory_bytes=64 << 20)
    agent = run_tooluser(modules, limits, wasm, tools, 'spin={"args":[]}', 'fs.list={}')
    out = agent.outcome()
    # The tool ran on what the agent had left, spent it, and the agent could not go on.
    assert out.status == "failed" and type(out.error).__name__ == "CpuLimitExceeded", out.error_message
    spin = answers(out.stdout)
    assert not spin or int(spin[0]["fuel"]) < 300_000_000  # type: ignore[call-overload]


@pytest.mark.parametrize("work, text, what", [
    # 20 searches of 1 MiB at 17 fuel a byte: about 360 M fuel.
    ('fs.search={"pattern":"zzz"}', b"0123456789abcde\n" * (1 << 16), "fs.search"),
    # 20 embedding searches of 80 chunks of about 320 bytes, at 1 M + 10 k a byte each: about 7 G fuel.
    ('embed.search={"query":"x"}', b"0123456789abcdefghi\n" * 1600, "embed.search"),
])
def test_host_work_is_paid_from_the_agents_fuel(modules: ModuleCache, work: str, text: bytes, what: str) -> None:
    base = build_cached(PROGRAMS / "tooluser.c", BUILD_CACHE).read_bytes()
    files_ = VirtualFs({"big.txt": text})
    calls = [work] * 20
    rich = run_tooluser(modules, SandboxLimits(fuel=20_000_000_000), base, {}, *calls, vfs=files_).outcome()
    assert rich.status == "exited" and [a["ok"] for a in answers(rich.stdout)] == [True] * 20, rich.error_message
    poor = run_tooluser(modules, SandboxLimits(fuel=200_000_000), base, {}, *calls, vfs=files_).outcome()
    assert poor.status == "failed" and f"host work ({what})" in str(poor.error), poor.error_message


def test_the_nodes_own_tools_are_paid_by_the_calling_agent() -> None:
    node_tools = NodeTools(ToolRuntime.create(), BUILD_CACHE)
    args = json.dumps({"args": ["-m", "x.txt"], "files": {"x.txt": "a\nb\n"}}).encode()
    rich = Meter(10**9, tool_memory_bytes=8 << 20, tool_fuel=10**9)
    assert json.loads(node_tools.call("agent", "lines", args, rich))["ok"] is True and 0 < rich.used < rich.budget
    poor = Meter(5_000, tool_memory_bytes=8 << 20, tool_fuel=10**9)  # less than the run needs
    answer = json.loads(node_tools.call("agent", "lines", args, poor))
    assert answer["ok"] is False and str(answer["error"]).startswith("CpuLimitExceeded") and poor.used == poor.budget


# --- fs.search: one deadline per call -----------------------------------------------------------------


def test_a_search_has_one_deadline_for_all_its_lines() -> None:
    fs = FileView(VirtualFs({"a.txt": b"".join(b"line %d\n" % i for i in range(12))}), Overlay())
    ticks = iter(i * 0.4 * files.SEARCH_TIMEOUT_S for i in range(100))  # each line "takes" 40 % of the deadline
    with pytest.raises(ToolArgsError, match=r"ran out of its 2 s \(it stopped at a.txt line 3\)"):
        fs_search({"pattern": "line"}, fs, plenty(), clock=lambda: next(ticks))


def test_a_pathological_pattern_ends_with_a_clear_tool_error(modules: ModuleCache, monkeypatch) -> None:
    monkeypatch.setattr(files, "SEARCH_TIMEOUT_S", 0.5)
    base = build_cached(PROGRAMS / "tooluser.c", BUILD_CACHE).read_bytes()
    lines = VirtualFs({"a.txt": b"a" * 40 + b"\n" * 1} | {f"b{i}.txt": b"a" * 40 + b"\n" for i in range(12)})
    agent = run_tooluser(modules, SandboxLimits(), base, {}, 'fs.search={"pattern":"(a|aa)+$x"}', 'fs.list={}', vfs=lines)
    out = agent.outcome()
    assert out.status == "exited", out.error_message  # the agent goes on after the tool's error
    searched, listed = answers(out.stdout)
    assert searched["ok"] is False and "ran out of its 0.5 s" in str(searched["error"]), searched
    assert listed["ok"] is True


# --- mesh_log ---------------------------------------------------------------------------------------------


def test_log_text_is_escaped_and_cut() -> None:
    assert escape_log_text("ok\n2030 INFO forged\x1b[2J\r\u202e\\") == "ok\\x0a2030 INFO forged\\x1b[2J\\x0d\\u202e\\x5c"
    long = escape_log_text("é" * 5000)
    assert long.startswith("é" * MAX_LINE_CHARS) and long.endswith("(4000 more characters)")


def test_mesh_log_reaches_the_operator_log_escaped_and_bounded(modules: ModuleCache, wasm: Callable[[str], bytes],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    limits = SandboxLimits(log_bytes=20_000)
    with caplog.at_level(logging.INFO, logger="meshagent.runtime.sandbox"):
        outcome, _ = run_alone(modules, wasm("hostile"), "log_flood", limits=limits)
    assert outcome.status == "exited" and outcome.stdout == b"logged\n", outcome.error_message
    lines = [r.getMessage() for r in caplog.records if r.name == "meshagent.runtime.sandbox" and "agent0" in r.getMessage()]
    logged = [line for line in lines if ": [info] " in line]
    assert logged and all("\n" not in line and "\r" not in line and "\x1b" not in line for line in lines)
    assert all(len(line) < MAX_LINE_CHARS + 100 for line in logged)
    assert sum(len(line.split(": [info] ", 1)[1]) for line in logged) <= limits.log_bytes
    assert len(logged) < 200 and sum("further log lines are dropped" in line for line in lines) == 1
