"""Differential tests: plain run == --verify-replay == snapshot to a file, then resume in a new process.

Every example agent and every small C test program. The host services are the
deterministic test double (ScriptedLlm, a clock and randomness that are pure
functions of the journal position), so three independent executions must agree
exactly — unless the runtime loses or corrupts state on the way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from meshagent.config import SandboxLimits
from meshagent.runtime.local import run_local
from meshagent.runtime.vfs import VirtualFs
from tests.conftest import ROOT
from tests.runtime.fakes import ScriptedLlm
from tests.runtime.helpers import family_view

SERVICES = "tests.runtime.fakes:scripted_services"

# name, agent args, needs the project dir, host call at which to snapshot
CASES = [
    ("code_review", [], True, 12),
    ("brainstorm", ["names for a hiking club"], False, 3),
    ("retry", [], False, 4),
    ("heap", [], False, 9),
    ("clockrand", [], False, 10),
    ("files", [], True, 15),
    ("forking", [], False, 6),
]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshagent", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _family(stdout: str) -> list[tuple[str, int | None, str, int]]:
    rows = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return [(r["status"], r["exit_code"], r["stdout"], r["host_calls"]) for r in rows]


@pytest.mark.parametrize(("name", "args", "needs_dir", "cut"), CASES, ids=[c[0] for c in CASES])
def test_plain_equals_verify_replay_equals_resume_in_new_process(
    build: Callable[[str], Path], project_dir: Path, tmp_path: Path,
    name: str, args: list[str], needs_dir: bool, cut: int,
) -> None:
    module = build(name)
    wasm = module.read_bytes()
    vfs = VirtualFs.from_directory(project_dir) if needs_dir else None
    limits = SandboxLimits()

    plain_services = ScriptedLlm()
    plain = run_local(wasm, args=[module.name, *args], vfs=vfs, services=plain_services, limits=limits)
    verified_services = ScriptedLlm()
    verified = run_local(wasm, args=[module.name, *args], vfs=vfs, services=verified_services, limits=limits,
                         verify_replay=True)

    assert all(o.status == "exited" for o in plain.outcomes), [o.error_message for o in plain.outcomes]
    assert family_view(verified.outcomes) == family_view(plain.outcomes)
    # Replays were answered from the journal: the world and the LLM were asked exactly as often.
    assert len(verified_services.calls) == len(plain_services.calls)
    assert verified_services.world_calls == plain_services.world_calls

    # Snapshot the family to a file at host call `cut`; the process ends; a new process resumes it.
    snapshot = tmp_path / f"{name}.snapshot"
    dir_args = ["--dir", str(project_dir)] if needs_dir else []
    first = _cli("run", str(module), "--local", "--services", SERVICES, *dir_args, "--snapshot-at", str(cut), str(snapshot),
                 "--", *args)
    assert first.returncode == 0, first.stderr
    assert "wrote a snapshot" in first.stderr
    assert plain.outcomes[0].host_calls > cut  # the cut really is in the middle of the run
    resumed = _cli("resume", str(snapshot), "--json", "--services", SERVICES)
    assert resumed.returncode == 0, resumed.stderr
    assert _family(resumed.stdout) == family_view(plain.outcomes)


def test_verify_replay_really_restores_from_snapshots(wasm: Callable[[str], bytes]) -> None:
    from meshagent.runtime.modules import ModuleCache, engine_for
    from tests.runtime.helpers import run_alone

    modules = ModuleCache(engine_for(SandboxLimits().stack_bytes))
    outcome, agent = run_alone(modules, wasm("heap"), verify=True)
    assert outcome.status == "exited"
    assert agent.replays == outcome.host_calls  # one snapshot/restore per host call


def test_cli_run_json_fields(build: Callable[[str], Path]) -> None:
    done = _cli("run", str(build("retry")), "--local", "--json", "--services", SERVICES)
    assert done.returncode == 0, done.stderr
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert {"agent_id", "parent_id", "exit_code", "stdout", "host_calls", "error"} <= row.keys()
    assert row["parent_id"] is None and row["exit_code"] == 0 and row["error"] is None
    assert "answer 42 accepted after 2 rollback(s)" in row["stdout"]
