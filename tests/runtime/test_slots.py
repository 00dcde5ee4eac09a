"""Execution slots and the wall clock: sleepers, strangers' agents and spinners cannot pin a node.

Real agents in the real sandbox under a real :class:`AgentManager`. No timing thresholds: each
test waits for the state it expects (a generous ``fail_after`` only turns a hang into a failure)
and asserts the order of events and the slot counts the manager reports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import trio

from meshagent.config import SandboxLimits
from meshagent.errors import WallClockLimitExceeded
from meshagent.runtime.ids import AgentId
from meshagent.runtime.manager import AgentManager
from meshagent.runtime.modules import ModuleCache
from meshagent.runtime.services import LlmOptions, RealWorld
from tests.runtime.fakes import ScriptedLlm
from tests.runtime.helpers import run_alone

SAFETY_S = 180
"""Only turns a hang (what these tests catch) into a failure; never reached when the feature works."""


class GatedLlm(ScriptedLlm):
    """Answers the agents in ``gated`` only once ``gate`` is set (they hold their slot meanwhile)."""

    def __init__(self, gated: set[str]) -> None:
        super().__init__()
        self.gated = gated
        self.gate = threading.Event()
        self.inside: set[str] = set()

    def llm(self, agent_id: str, prompt: str, options: LlmOptions) -> str:
        if agent_id in self.gated:
            self.inside.add(agent_id)
            self.gate.wait(SAFETY_S)
        return super().llm(agent_id, prompt, options)


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(0.02)


async def test_a_sleeping_agent_gives_its_slot_back(modules: ModuleCache, wasm: Callable[[str], bytes]) -> None:
    expected, _ = run_alone(modules, wasm("retry"))
    manager = AgentManager(modules=modules, services=ScriptedLlm(), world=RealWorld(), limits=SandboxLimits(max_instances=1))
    with trio.fail_after(SAFETY_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            sleeper = await manager.launch(wasm("hostile"), args=["hostile", "sleep"])
            await until(lambda: manager.slots()["sleeping"] == 1)
            assert manager.slots()["busy"] == 0 and manager.info(sleeper).slot == "sleeping"
            good = await manager.launch(wasm("retry"), args=["agent"])
            outcome = await manager.wait(good)
            assert outcome.status == "exited" and outcome.stdout == expected.stdout
            assert manager.is_active(sleeper)  # the only slot went to the good agent while the sleeper slept
            killed = await manager.kill(sleeper)  # a sleep is cut short by the node's requests
            assert killed.status == "killed"
            nursery.cancel_scope.cancel()


async def test_sleeping_and_spinning_agents_end_at_their_wall_clock_limit(modules: ModuleCache,
                                                                         wasm: Callable[[str], bytes]) -> None:
    limits = SandboxLimits(wall_clock_s=1.0, fuel=10**14)  # the fuel would last for hours
    manager = AgentManager(modules=modules, services=ScriptedLlm(), world=RealWorld(), limits=limits)
    with trio.fail_after(SAFETY_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            sleeper = await manager.launch(wasm("hostile"), args=["hostile", "sleep"])
            spinner = await manager.launch(wasm("hostile"), args=["hostile", "loop"])  # no host call at all
            for agent_id in (sleeper, spinner):
                outcome = await manager.wait(agent_id)
                assert outcome.status == "failed" and isinstance(outcome.error, WallClockLimitExceeded), outcome.error_message
                assert "sandbox.wall_clock_s" in str(outcome.error)
            nursery.cancel_scope.cancel()


async def test_other_owners_agents_run_within_their_quotas_and_leave_a_slot_to_the_nodes_own(
        modules: ModuleCache, wasm: Callable[[str], bytes]) -> None:
    strangers = {"a1": "owner-a", "a2": "owner-a", "a3": "owner-a", "b1": "owner-b", "b2": "owner-b"}
    services = GatedLlm(set(strangers))
    limits = SandboxLimits(max_instances=3, reserved_slots=1, owner_slots=1)
    manager = AgentManager(modules=modules, services=services, limits=limits, quota_of=strangers.get)
    with trio.fail_after(SAFETY_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            for agent_id in strangers:
                await manager.launch(wasm("retry"), args=["agent"], agent_id=AgentId(agent_id))
            await until(lambda: len(services.inside) == 2 and manager.slots()["waiting"] == 3)
            slots = manager.slots()
            # One slot per owner (owner_slots), two for all other owners (max_instances - reserved_slots).
            assert slots["owners"] == {"owner-a": 1, "owner-b": 1} and slots["foreign_busy"] == 2 == slots["busy"]
            assert services.inside == {"a1", "b1"}
            own = await manager.launch(wasm("retry"), args=["agent"])
            outcome = await manager.wait(own)  # the reserved slot: it ends while every stranger is still held up
            assert outcome.status == "exited" and not services.gate.is_set()
            assert all(manager.is_active(a) for a in strangers)
            assert (await manager.kill("a3")).status == "killed"  # waiting for a slot: stopped without one
            services.gate.set()
            for agent_id in strangers:
                assert (await manager.wait(agent_id)).status == ("killed" if agent_id == "a3" else "exited")
            assert manager.slots()["busy"] == 0 and manager.slots()["owners"] == {}
            nursery.cancel_scope.cancel()
