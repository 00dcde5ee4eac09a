"""Fork, join, checkpoint and rollback semantics; divergence on a forged journal."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

import pytest

from meshagent.errors import DivergenceError
from meshagent.runtime.journal import Entry, Journal
from meshagent.runtime.local import run_local
from meshagent.runtime.modules import ModuleCache
from meshagent.runtime.sandbox import Agent
from tests.runtime.fakes import ScriptedLlm
from tests.runtime.helpers import new_snapshot, run_alone


@pytest.mark.parametrize("verify", [False, True], ids=["plain", "verify-replay"])
def test_fork_children_share_the_prefix_and_the_parent_joins_their_outputs(wasm: Callable[[str], bytes], verify: bool) -> None:
    services = ScriptedLlm()
    result = run_local(wasm("forking"), args=["forking"], services=services, verify_replay=verify)
    parent, *children = result.outcomes
    assert len(children) == 3
    assert all(c.parent_id == parent.agent_id for c in children)
    assert len({c.agent_id for c in children} | {parent.agent_id}) == 4  # own ids
    prefix = b"before fork\n"
    assert parent.stdout.startswith(prefix)
    for i, child in enumerate(children):
        assert child.stdout.startswith(prefix)  # agrees with the parent up to the fork
        assert child.stdout[len(prefix):].startswith(f"child {i} ".encode())  # differs by its index after it
    assert len({c.stdout for c in children}) == 3
    # The parent's joined results are exactly the children's outputs.
    joined = re.findall(rb"joined (\d) \((\d+) bytes\):\n(.*?)(?=joined \d|\Z)", parent.stdout, re.S)
    assert [int(i) for i, _, _ in joined] == [0, 1, 2]
    for (i, size, body), child in zip(joined, children):
        assert body == child.stdout and int(size) == len(child.stdout)
    # Children continue the parent's LLM conversation: the services were told about the fork.
    assert services.forks == [(parent.agent_id, tuple(c.agent_id for c in children))]


def test_fork_journal_is_parent_prefix_plus_fork_result(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    import trio

    from meshagent.runtime.manager import AgentManager

    async def main() -> tuple[list[Agent], list[str]]:
        manager = AgentManager(modules=modules, services=ScriptedLlm())
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            root = await manager.launch(wasm("forking"), args=["forking"])
            await manager.wait_family(root)
            family = manager.family(root)
            nursery.cancel_scope.cancel()
        return [manager.agent(a) for a in family], family

    agents, ids = trio.run(main)
    parent, children = agents[0], agents[1:]
    fork_at = next(i for i, e in enumerate(parent.journal) if e.name == "fork")
    assert parent.journal[fork_at].ret == -1
    for i, child in enumerate(children):
        assert list(child.journal)[:fork_at] == list(parent.journal)[:fork_at]
        assert child.journal[fork_at].name == "fork" and child.journal[fork_at].ret == i


def test_rollback_retries_and_checkpoint_returns_the_rollback_count(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    services = ScriptedLlm(rules=[("(attempt 0)", "forty-two"), ("(attempt 1)", "42")])
    outcome, agent = run_alone(modules, wasm("retry"), services=services)
    assert outcome.exit_code == 0
    # Output of the failed attempt was rolled back; the retried branch saw mesh_checkpoint return 1.
    assert outcome.stdout == b"retry agent: checking answers\nattempt 1\nanswer 42 accepted after 1 rollback(s)\n"
    assert agent.rollbacks == {"attempt": 1}
    checkpoints = [e for e in agent.journal if e.name == "checkpoint"]
    assert [e.ret for e in checkpoints] == [1]  # the journal holds only the surviving branch
    assert [p for _, p, _ in services.calls] == [
        "What is six times seven? Answer with digits only. (attempt 0)",
        "What is six times seven? Answer with digits only. (attempt 1)",
    ]


def test_rollback_count_survives_snapshot_and_resume(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    services = ScriptedLlm()
    outcome, agent = run_alone(modules, wasm("retry"), services=services)
    snap = agent.snapshot()
    from meshagent.runtime.snapshot import AgentSnapshot

    again = Agent(AgentSnapshot.from_bytes(snap.to_bytes()), modules=modules, services=ScriptedLlm())
    assert again.rollbacks == {"attempt": 2}
    replayed = again.run()
    assert replayed.stdout == outcome.stdout and replayed.exit_code == 0


def test_external_checkpoint_and_rollback(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    first, agent = run_alone(modules, wasm("heap"))
    total = len(agent.journal)
    agent2 = Agent(replace(agent.snapshot(), journal=Journal(list(agent.journal)[:10])), modules=modules, services=ScriptedLlm())
    assert agent2.add_label("mid") == 10
    outcome = agent2.run()
    assert outcome.stdout == first.stdout and len(agent2.journal) == total
    assert agent2.request_rollback("mid") == 10
    assert len(agent2.journal) == 10 and agent2.status == "ready"
    assert agent2.run().stdout == first.stdout


def test_forged_journal_is_a_divergence_naming_the_call(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    outcome, agent = run_alone(modules, wasm("retry"))
    entries = list(agent.journal)
    index = next(i for i, e in enumerate(entries) if e.name == "llm")
    entries[index] = Entry("random_get", entries[index].digest, 0, b"\0" * 8)
    forged = Agent(replace(agent.snapshot(), journal=Journal(entries)), modules=modules, services=ScriptedLlm())
    result = forged.run()
    assert isinstance(result.error, DivergenceError)
    assert "called llm" in str(result.error) and "recorded random_get" in str(result.error)

    entries = list(agent.journal)
    index = next(i for i, e in enumerate(entries) if e.name == "fd_write")
    entries[index] = Entry("fd_write", b"\1" * 32, entries[index].ret, None)
    result = Agent(replace(agent.snapshot(), journal=Journal(entries)), modules=modules, services=ScriptedLlm()).run()
    assert isinstance(result.error, DivergenceError) and "fd_write with other arguments" in str(result.error)


def test_replay_of_a_different_module_diverges(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    _, agent = run_alone(modules, wasm("heap"))
    other = new_snapshot(modules, wasm("files"))
    mixed = replace(other, journal=agent.snapshot().journal)
    result = Agent(mixed, modules=modules, services=ScriptedLlm()).run()
    assert isinstance(result.error, DivergenceError)
