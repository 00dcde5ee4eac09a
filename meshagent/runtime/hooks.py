"""What an agent needs from its supervisor: forks, joins and persistence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from meshagent.errors import AgentError
from meshagent.runtime.journal import Entry
from meshagent.runtime.snapshot import AgentSnapshot

if TYPE_CHECKING:
    from meshagent.runtime.sandbox import Agent

__all__ = ["AgentHooks", "StandaloneHooks"]


class AgentHooks(Protocol):
    """Called on the agent's worker thread. :class:`~meshagent.runtime.manager.AgentManager` implements it."""

    def spawn(self, parent: Agent, children: Sequence[AgentSnapshot]) -> None: ...

    def join(self, parent: Agent, child_id: str) -> bytes:
        """Block until the child ends; return its stdout. May raise :class:`Suspend`."""
        ...

    def sleep(self, agent: Agent, seconds: float) -> None:
        """Sleep for the agent (``agent.doze``); a supervisor gives the agent's execution slot back meanwhile."""
        ...

    def entry_added(self, agent: Agent, index: int, entry: Entry) -> None: ...

    def truncated(self, agent: Agent, length: int) -> None: ...


class StandaloneHooks:
    """Hooks for an agent run without a supervisor: forks and joins are refused."""

    def spawn(self, parent: Agent, children: Sequence[AgentSnapshot]) -> None:
        raise AgentError("mesh_fork needs an agent manager (run the agent through AgentManager or `meshagent run`)")

    def join(self, parent: Agent, child_id: str) -> bytes:
        raise AgentError("mesh_join needs an agent manager")

    def sleep(self, agent: Agent, seconds: float) -> None:
        agent.doze(seconds)

    def entry_added(self, agent: Agent, index: int, entry: Entry) -> None:
        return None

    def truncated(self, agent: Agent, length: int) -> None:
        return None
