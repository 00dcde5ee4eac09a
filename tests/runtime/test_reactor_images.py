"""Reactor agents: entry points called by the node, memory images that bound the replay."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from meshagent.runtime.modules import ModuleCache
from meshagent.runtime.sandbox import Agent
from meshagent.runtime.snapshot import AgentSnapshot
from tests.runtime.fakes import ScriptedLlm
from tests.runtime.helpers import new_snapshot


def _agent(modules: ModuleCache, snap: AgentSnapshot) -> Agent:
    return Agent(snap, modules=modules, services=ScriptedLlm())


def test_reactor_image_restores_state_without_replay(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    agent = _agent(modules, new_snapshot(modules, wasm("reactor")))
    assert agent.style == "reactor"
    assert agent.run().status == "idle"  # _initialize ran; waiting for entry-point calls
    first = agent.invoke("add", 5)
    second = agent.invoke("add", 7)
    assert isinstance(first, int) and isinstance(second, int) and second > first

    snap = agent.snapshot()  # idle: a fresh image at the end of the journal
    assert snap.image is not None and snap.image.position == len(snap.journal)
    assert snap.image.globals  # the shadow stack pointer travels with the image
    restored = _agent(modules, AgentSnapshot.from_bytes(snap.to_bytes()))
    restored.run()
    assert restored.invoke("get") == second
    assert restored.position == len(snap.journal) + 1  # nothing was replayed: the image bounded it
    assert agent.invoke("get") == second  # same journal position on both sides from here
    assert restored.invoke("add", 1) == agent.invoke("add", 1)


def test_image_plus_journal_suffix_replays_only_the_suffix(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    agent = _agent(modules, new_snapshot(modules, wasm("reactor")))
    agent.run()
    agent.invoke("add", 2)
    early = agent.snapshot()
    assert early.image is not None
    total = agent.invoke("add", 3)
    late = replace(agent.snapshot(capture_image=False), image=early.image)
    assert late.image is not None and late.image.position < len(late.journal)

    services = ScriptedLlm()
    restored = Agent(AgentSnapshot.from_bytes(late.to_bytes()), modules=modules, services=services)
    restored.run()
    assert restored.invoke("get") == total
    assert services.calls == [] and services.world_calls == 0  # the suffix came from the journal


def test_rollback_before_the_image_drops_it(wasm: Callable[[str], bytes], modules: ModuleCache) -> None:
    agent = _agent(modules, new_snapshot(modules, wasm("reactor")))
    agent.run()
    agent.add_label("start")
    agent.invoke("add", 4)
    agent.snapshot()
    assert agent.image is not None
    agent.status = "exited"
    agent.request_rollback("start")
    assert agent.image is None or agent.image.position <= len(agent.journal)
    agent.run()
    assert agent.invoke("get") == 0


def test_manager_invokes_reactors_and_restores_them_from_store_images(
    tmp_path, wasm: Callable[[str], bytes], modules: ModuleCache  # type: ignore[no-untyped-def]
) -> None:
    import trio

    from meshagent.node.store import NodeStore
    from meshagent.runtime.manager import AgentManager

    async def first_life() -> tuple[str, int | float | None]:
        manager = AgentManager(modules=modules, services=ScriptedLlm(), store=NodeStore.open(tmp_path))
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            agent_id = await manager.launch(wasm("reactor"), args=["reactor"])
            assert (await manager.wait(agent_id)).status == "idle"
            from meshagent.runtime.control_ops import control_handlers

            async def emit(event: dict[str, object]) -> None:
                return None

            await manager.invoke(agent_id, "add", 3)
            total = (await control_handlers(manager)["invoke"]({"agent_id": agent_id, "export": "add", "args": [4]}, emit))["result"]
            nursery.cancel_scope.cancel()
        return agent_id, total

    agent_id, total = trio.run(first_life)
    store = NodeStore.open(tmp_path)
    snap = store.load_agent(agent_id)
    assert snap.image is not None and snap.image.position == len(snap.journal)

    async def second_life() -> None:
        services = ScriptedLlm()
        manager = AgentManager(modules=ModuleCache(modules.engine), services=services, store=store)
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            assert (await manager.wait(agent_id)).status == "idle"
            assert await manager.invoke(agent_id, "get") == total
            nursery.cancel_scope.cancel()
        assert services.calls == []  # restored from the image, nothing replayed live

    trio.run(second_life)
