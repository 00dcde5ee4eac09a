"""Host services: LLM options, the engine adapter, suspension by a service, module cache, builds."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from meshagent.errors import BuildError
from meshagent.inference.engine import LlmEngine
from meshagent.runtime.build import build_agent
from meshagent.runtime.manager import AgentManager
from meshagent.runtime.modules import ModuleCache
from meshagent.runtime.sandbox import KNOWN_IMPORTS
from meshagent.runtime.services import EngineServices, LlmOptions, Suspend, parse_llm_options
from tests.conftest import ROOT
from tests.runtime.fakes import FakeEngine, ScriptedLlm
from tests.runtime.helpers import run_alone


def test_llm_options_parsing() -> None:
    base = LlmOptions()
    parsed = parse_llm_options("model=big; max_tokens=128, temperature=0.5\nprivacy=private", base)
    assert parsed == LlmOptions(model="big", max_tokens=128, temperature=0.5, privacy="private")
    assert parse_llm_options("privacy=public", base) is None
    timed = parse_llm_options("deadline=2.5", base)
    assert timed is not None and timed.deadline_s == 2.5
    assert parse_llm_options("deadline=-1", base) is None and parse_llm_options("deadline=nan", base) is None
    # A deadline travels in snapshots; options without one keep their old wire form (and journal digests).
    assert LlmOptions.from_wire(timed.to_wire()) == timed and len(base.to_wire()) == 5
    assert parse_llm_options("max_tokens=0", base) is None
    assert parse_llm_options("temperature=nan", base) is None
    assert parse_llm_options("colour=red", base) is None
    assert parse_llm_options("", parsed) == LlmOptions()  # type: ignore[arg-type]


def test_code_review_steps_are_private(wasm: Callable[[str], bytes], modules: ModuleCache, project_dir: Path) -> None:
    from meshagent.runtime.local import run_local
    from meshagent.runtime.vfs import VirtualFs

    services = ScriptedLlm()
    result = run_local(wasm("code_review"), args=["code_review"], vfs=VirtualFs.from_directory(project_dir), services=services)
    (outcome,) = result.outcomes
    assert outcome.exit_code == 0
    reviewed = [p.split("File ", 1)[1].split(" ", 1)[0] for _, p, _ in services.calls]
    assert reviewed == ["README.md", "notes.txt", "src/main.c", "src/util.h"]
    assert all(o.privacy == "private" and o.max_tokens == 96 for _, _, o in services.calls)
    assert b"reviewed 4 file(s)" in outcome.stdout


def test_engine_adapter_runs_agents_on_an_llm_engine(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    engine = FakeEngine()
    assert isinstance(engine, LlmEngine)
    from meshagent.runtime.local import run_local

    result = run_local(wasm("forking"), args=["forking"], services=EngineServices(engine))
    parent, *children = result.outcomes
    assert all(o.exit_code == 0 for o in result.outcomes)
    assert b"llm=tiny#1:child 0 as" in children[0].stdout
    assert {c.agent_id for c in children} == set(engine.sessions)  # each child got its own (forked) session
    assert parent.agent_id not in engine.sessions


def test_engine_adapter_suspends_steps_that_need_another_model() -> None:
    services = EngineServices(FakeEngine("tiny"))
    with pytest.raises(Suspend, match="needs model 'huge'"):
        services.llm("a", "hi", LlmOptions(model="huge"))
    assert services.llm("a", "hi", LlmOptions(model="small")).startswith("tiny#")


class MovingLlm(ScriptedLlm):
    """Suspends every agent at its first LLM step: the step should run on another node."""

    def llm(self, agent_id: str, prompt: str, options: LlmOptions) -> str:
        raise Suspend("this step runs better elsewhere")


async def test_a_service_can_suspend_an_agent_for_migration(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    expected, _ = run_alone(modules, wasm("retry"))
    here = AgentManager(modules=modules, services=MovingLlm())
    there = AgentManager(modules=ModuleCache(modules.engine), services=ScriptedLlm())
    async with trio.open_nursery() as nursery:
        await nursery.start(here.run)
        await nursery.start(there.run)
        agent_id = await here.launch(wasm("retry"), args=["agent"])
        stopped = await here.wait(agent_id)
        assert stopped.status == "suspended" and stopped.error is None
        snap = await here.suspend(agent_id)
        assert [e.name for e in snap.journal][-2:] == ["checkpoint", "fd_write"]  # stopped just before the LLM call
        assert all(e.name != "llm" for e in snap.journal)
        outcome = await there.wait(await there.adopt(snap))
        nursery.cancel_scope.cancel()
    assert outcome.stdout == expected.stdout


def test_compiled_modules_are_cached_on_disk(wasm: Callable[[str], bytes], modules: ModuleCache, tmp_path: Path) -> None:
    raw = wasm("retry")
    first = ModuleCache(modules.engine, tmp_path).load(raw, KNOWN_IMPORTS)
    files = list(tmp_path.glob("*.cwasm"))
    assert len(files) == 1 and files[0].name.startswith(first.sha256)
    again = ModuleCache(modules.engine, tmp_path).load(raw, KNOWN_IMPORTS)
    assert again.sha256 == first.sha256 and again.style == "command"
    cache = ModuleCache(modules.engine)
    assert cache.load(raw, KNOWN_IMPORTS) is cache.load(raw, KNOWN_IMPORTS)


def test_build_reports_compiler_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.c"
    bad.write_text('#include "meshagent.h"\nint main(void) { return mesh_llm(1, 2); }\n')
    with pytest.raises(BuildError, match="too few arguments"):
        build_agent(bad, tmp_path / "bad.wasm")
    done = subprocess.run([sys.executable, "-m", "meshagent", "build", str(bad), "-o", str(tmp_path / "x.wasm")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "too few arguments" in done.stderr


@pytest.mark.parametrize("verify", [False, True], ids=["plain", "verify-replay"])
def test_too_small_buffer_consumes_nothing(wasm: Callable[[str], bytes], project_dir: Path, verify: bool) -> None:
    from meshagent.runtime.local import run_local
    from meshagent.runtime.vfs import VirtualFs

    services = ScriptedLlm(long_answers=True)
    result = run_local(wasm("code_review"), args=["code_review"], vfs=VirtualFs.from_directory(project_dir),
                       services=services, verify_replay=verify)
    (outcome,) = result.outcomes
    assert outcome.exit_code == 0
    # code_review first offers a 4 KiB buffer, gets -(bytes needed), then asks again with a bigger one:
    # the LLM was asked once per file and the second call got the same answer.
    assert len(services.calls) == 4
    first_answer = services.llm("x", services.calls[0][1], services.calls[0][2])
    assert len(first_answer) > 4096
    assert first_answer[:4096].encode() in outcome.stdout


class ReplayRecorder(ScriptedLlm):
    def __init__(self) -> None:
        super().__init__()
        self.replayed: list[tuple[str, str, str]] = []

    def llm_replayed(self, agent_id: str, prompt: str, answer: str, options: LlmOptions) -> None:
        self.replayed.append((agent_id, prompt, answer))


def test_replay_aware_services_see_the_replayed_llm_steps(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    from meshagent.runtime.sandbox import Agent
    from meshagent.runtime.snapshot import AgentSnapshot

    first = ScriptedLlm()
    outcome, agent = run_alone(modules, wasm("retry"), services=first)
    recorder = ReplayRecorder()
    again = Agent(AgentSnapshot.from_bytes(agent.snapshot().to_bytes()), modules=modules, services=recorder)
    assert again.run().stdout == outcome.stdout
    assert recorder.calls == []  # nothing live
    assert [(p, a) for _, p, a in recorder.replayed] == [(p, first.llm("x", p, o)) for _, p, o in first.calls[-1:]]
