"""Issue 10: Python agents (components with CPython inside) under the same journal semantics as C agents."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from meshagent.config import SandboxLimits
from meshagent.errors import DivergenceError
from meshagent.runtime.build import AGENTS_DIR
from meshagent.runtime.bundle import decode_family
from meshagent.runtime.component_agent import ComponentAgent
from meshagent.runtime.components import ComponentCache, is_component
from meshagent.runtime.journal import Entry, Journal
from meshagent.runtime.local_component import resume_component, run_component
from meshagent.runtime.modules import engine_for
from meshagent.runtime.vfs import VirtualFs
from meshagent.sdk.build import build_python_cached
from tests.conftest import ROOT
from tests.runtime.conftest import BUILD_CACHE
from tests.runtime.fakes import ScriptedLlm
from tests.runtime.helpers import component_journal

COMPILED = ROOT / ".cache" / "components"
SERVICES = "tests.runtime.fakes:scripted_services"

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def py_agent() -> Callable[[str], Path]:
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_python_cached(AGENTS_DIR / f"{name}.py", BUILD_CACHE)
        return built[name]

    return get


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(home), "HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "meshagent", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=env)


def test_retry_py_plain_equals_verify_replay_equals_resume_in_a_new_process(py_agent: Callable[[str], Path],
                                                                            tmp_path: Path) -> None:
    module = py_agent("retry")
    wasm = module.read_bytes()
    assert is_component(wasm)
    plain_llm = ScriptedLlm()
    plain = run_component(wasm, args=["retry"], services=plain_llm, cache_dir=COMPILED).outcomes[0]
    assert plain.status == "exited" and plain.exit_code == 0, plain.error_message
    # Two failed attempts were rolled back (their output with them); the third was accepted.
    assert plain.stdout == b"retry agent: checking answers\nattempt 2\nanswer 42 accepted after 2 rollback(s)\n"
    assert len(plain_llm.calls) == 3 and plain.stderr == b""  # the failed attempts' logs were rolled back too

    verified_llm = ScriptedLlm()
    verified = run_component(wasm, args=["retry"], services=verified_llm, verify_replay=True, cache_dir=COMPILED).outcomes[0]
    assert (verified.stdout, verified.exit_code, verified.host_calls) == (plain.stdout, 0, plain.host_calls)
    assert len(verified_llm.calls) == 3 and verified_llm.world_calls == plain_llm.world_calls

    # Snapshot to a file after the first LLM answer, end the process, resume in another one.
    home = tmp_path / "home"
    (home / "meshagent").mkdir(parents=True)
    (home / "meshagent" / "modules").symlink_to(COMPILED.resolve(), target_is_directory=True)  # compiled once
    snapshot = tmp_path / "retry.snapshot"
    cut = next(i for i, e in enumerate(component_journal(wasm, COMPILED, "retry")) if e.name == "rollback" or e.name == "llm") + 1
    first = _cli("run", str(module), "--local", "--services", SERVICES, "--snapshot-at", str(cut), str(snapshot), home=home)
    assert first.returncode == 0 and "wrote a snapshot" in first.stderr, first.stderr
    (saved,) = decode_family(snapshot.read_bytes())
    assert len(saved.journal) == cut
    resumed = _cli("resume", str(snapshot), "--json", "--services", SERVICES, home=home)
    assert resumed.returncode == 0, resumed.stderr
    (row,) = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert (row["stdout"].encode(), row["exit_code"], row["host_calls"]) == (plain.stdout, 0, plain.host_calls)


def test_a_python_agent_whose_journal_was_tampered_with_diverges(py_agent: Callable[[str], Path]) -> None:
    wasm = py_agent("retry").read_bytes()
    cache = ComponentCache(engine_for(SandboxLimits().stack_bytes), COMPILED)
    from meshagent.runtime.component_agent import component_snapshot

    agent = ComponentAgent(component_snapshot(wasm, cache, agent_id="a", args=("retry",)), components=cache,
                           services=ScriptedLlm())
    assert agent.run().exit_code == 0
    entries = list(agent.journal)
    index = next(i for i, e in enumerate(entries) if e.name == "llm")
    entries[index] = Entry("llm", b"\x00" * 32, entries[index].ret, entries[index].data)
    forged = dataclasses.replace(agent.snapshot(), journal=Journal(entries), status="ready")
    outcome = resume_component(forged, services=ScriptedLlm(), cache_dir=COMPILED).outcomes[0]
    assert outcome.status == "failed" and isinstance(outcome.error, DivergenceError)


def test_code_review_py_uses_tools_and_writes_its_review(py_agent: Callable[[str], Path], project_dir: Path) -> None:
    wasm = py_agent("code_review").read_bytes()
    llm = ScriptedLlm()
    cache = ComponentCache(engine_for(SandboxLimits().stack_bytes), COMPILED)
    from meshagent.runtime.component_agent import component_snapshot

    from meshagent.runtime.modules import sha256_hex
    from meshagent.runtime.tools.runtime import manifest_of
    from meshagent.runtime.tools.store import ToolStore, resolve_tools

    tools = resolve_tools(manifest_of(sha256_hex(wasm), wasm), ToolStore(), build_dir=BUILD_CACHE)  # as a launch does
    snap = dataclasses.replace(component_snapshot(wasm, cache, agent_id="cr", args=("code_review",)),
                               vfs=VirtualFs.from_directory(project_dir), tools=tools)
    agent = ComponentAgent(snap, components=cache, services=llm, verify_replay=True)
    outcome = agent.run()
    assert outcome.exit_code == 0, outcome.stderr.decode()[-2000:]
    reviewed = [p.split("File ", 1)[1].split(" ", 1)[0] for _, p, _ in llm.calls]
    assert reviewed == ["README.md", "notes.txt", "src/main.c", "src/util.h"]
    assert all(o.privacy == "private" and o.max_tokens == 96 for _, _, o in llm.calls)
    assert [s.name for s in agent.manifest.tools] == ["ccheck"]  # code_review.tools.toml, shared with the C agent
    # list, search, four reads, ccheck on the two C files, the write: once each despite the replays
    assert agent.tools.executions == 1 + 1 + 4 + 2 + 1
    main_c = next(p for _, p, _ in llm.calls if "File src/main.c" in p)
    assert "A checker reported:\nchecked 1 file(s): 0 error(s), 0 warning(s)\n" in main_c
    review = (agent.fs.get("REVIEW.md") or b"").decode()
    assert review.endswith("reviewed 4 file(s)\n") and outcome.stdout.decode() == review + "wrote REVIEW.md\n"


def test_brainstorm_py_forks_joins_and_matches_the_c_agent(py_agent: Callable[[str], Path],
                                                            build: Callable[[str], Path]) -> None:
    from meshagent.runtime.local import run_local

    topic = "names for a hiking club"
    py = run_local(py_agent("brainstorm").read_bytes(), args=["brainstorm", topic], services=ScriptedLlm(),
                   cache_dir=COMPILED)
    parent, *children = py.outcomes
    assert parent.status == "exited" and parent.exit_code == 0, parent.error_message
    assert len(children) == 3 and all(c.exit_code == 0 and c.parent_id == parent.agent_id for c in children)
    c_run = run_local(build("brainstorm").read_bytes(), args=["brainstorm", topic], services=ScriptedLlm())
    # The same prompts, seeds and options reach the (scripted) LLM: the same ideas, scores and choice.
    assert parent.stdout == c_run.outcomes[0].stdout
    assert sorted(c.stdout for c in children) == sorted(c.stdout for c in c_run.outcomes[1:])

    verified = run_local(py_agent("brainstorm").read_bytes(), args=["brainstorm", topic], services=ScriptedLlm(),
                         verify_replay=True, cache_dir=COMPILED)
    assert [o.stdout for o in verified.outcomes] == [o.stdout for o in py.outcomes]


@pytest.mark.parametrize("limits, error", [(SandboxLimits(fuel=100_000), "CpuLimitExceeded"),
                                           (SandboxLimits(memory_bytes=4 << 20), "MemoryLimitExceeded")],
                         ids=["fuel", "memory"])
def test_python_agents_are_held_to_their_limits(py_agent: Callable[[str], Path], limits: SandboxLimits, error: str) -> None:
    outcome = run_component(py_agent("retry").read_bytes(), args=["retry"], services=ScriptedLlm(), limits=limits,
                            cache_dir=COMPILED).outcomes[0]
    assert outcome.status == "failed" and type(outcome.error).__name__ == error, outcome.error_message


def test_a_python_agents_output_is_limited_while_it_runs() -> None:
    """print() goes through the host, which ends the agent at the limit (not after the run);
    raw writes to fd 1 reach WASI's closed stdout and keep nothing."""
    wasm = build_python_cached(Path(__file__).parent / "programs" / "flood.py", BUILD_CACHE).read_bytes()
    limits = SandboxLimits(output_bytes=64 << 10)
    flood = run_component(wasm, args=["flood"], services=ScriptedLlm(), limits=limits, cache_dir=COMPILED).outcomes[0]
    assert flood.status == "failed" and type(flood.error).__name__ == "OutputLimitExceeded", flood.error_message
    assert flood.stdout.startswith(b"started\n") and len(flood.stdout) + len(flood.stderr) <= 64 << 10
    assert flood.stderr == b"[info] flooding\n"

    raw = run_component(wasm, args=["flood", "raw"], services=ScriptedLlm(), limits=limits, cache_dir=COMPILED).outcomes[0]
    assert raw.status == "exited", raw.error_message
    assert raw.stdout == b"started\nraw writes done\n"


def test_a_python_agents_log_lines_reach_the_operator_log_escaped_and_bounded(caplog: pytest.LogCaptureFixture) -> None:
    wasm = build_python_cached(Path(__file__).parent / "programs" / "flood.py", BUILD_CACHE).read_bytes()
    limits = SandboxLimits(log_bytes=20_000)
    with caplog.at_level(logging.INFO, logger="meshagent.runtime.component_agent"):
        out = run_component(wasm, args=["flood", "log"], services=ScriptedLlm(), limits=limits, cache_dir=COMPILED).outcomes[0]
    assert out.status == "exited" and out.stdout == b"started\nlogged\n", out.error_message
    lines = [r.getMessage() for r in caplog.records if r.name == "meshagent.runtime.component_agent"]
    logged = [line for line in lines if ": [info] " in line]
    assert logged and all("\n" not in line and "\x1b" not in line and "\r" not in line for line in lines)
    assert sum(len(line.split(": [info] ", 1)[1]) for line in logged) <= limits.log_bytes
    assert len(logged) < 100 and sum("further log lines are dropped" in line for line in lines) == 1
