"""What host work done for an agent costs it in fuel, and the meter that charges it.

An agent pays with its wasmtime fuel (about one unit per wasm instruction) for
what the host does on its behalf: bytes read, written or copied in its files,
files visited by a listing or a search, text searched, text embedded, and the
fuel its WASI tools burn. So a few cheap host calls cannot make the host do
unbounded work: the agent's fuel runs out first, and it ends with
:class:`~meshagent.errors.CpuLimitExceeded` as if it had done the work itself.

The prices are rough equivalents in wasm instructions of the host's work
(a byte copied is cheaper than one instruction; a byte embedded by the ONNX
model costs thousands).
"""

from __future__ import annotations

from typing import Final

from meshagent.errors import CpuLimitExceeded

__all__ = [
    "FUEL_PER_BYTE",
    "FUEL_PER_FILE",
    "FUEL_PER_SEARCHED_BYTE",
    "FUEL_PER_EMBED",
    "FUEL_PER_EMBEDDED_BYTE",
    "Meter",
    "out_of_fuel",
]

FUEL_PER_BYTE: Final = 1
"""A byte the host reads, writes, copies or zero-fills in the agent's files or output."""
FUEL_PER_FILE: Final = 200
"""A file visited when the host lists, selects or searches the agent's files."""
FUEL_PER_SEARCHED_BYTE: Final = 16
"""A byte of text a regular expression is run over (``fs.search``), on top of reading it."""
FUEL_PER_EMBED: Final = 1_000_000
"""One text embedded (``mesh_embed``, a chunk of ``embed.search``)."""
FUEL_PER_EMBEDDED_BYTE: Final = 10_000
"""A byte of text embedded."""


def out_of_fuel(fuel: int, what: str) -> CpuLimitExceeded:
    return CpuLimitExceeded(
        f"the agent used its whole CPU budget of {fuel} fuel units, the last of it paying for host work ({what}); "
        "raise sandbox.fuel if it needs more"
    )


class Meter:
    """The host work of one host call (a tool call): charged as it happens, against the fuel the agent has left.

    ``tool_memory_bytes`` and ``tool_fuel`` are the node's caps for one WASI tool run; a run
    gets at most what the agent has left (:meth:`tool_limits`). The agent pays ``used`` when
    the call returns.
    """

    __slots__ = ("budget", "used", "tool_memory_bytes", "tool_fuel", "deadline", "fuel_limit")

    def __init__(self, budget: int, *, tool_memory_bytes: int, tool_fuel: int, deadline: float | None = None,
                 fuel_limit: int = 0) -> None:
        self.budget = max(0, budget)
        self.used = 0
        self.tool_memory_bytes = tool_memory_bytes
        self.tool_fuel = tool_fuel
        self.deadline = deadline
        """``time.monotonic()`` at which the agent's wall-clock limit ends (tool runs stop there too)."""
        self.fuel_limit = fuel_limit
        """The agent's whole fuel budget (for the error message)."""

    @property
    def left(self) -> int:
        return max(0, self.budget - self.used)

    def charge(self, units: int, what: str) -> None:
        """Count ``units`` of fuel; :class:`CpuLimitExceeded` once the agent could not pay them."""
        if units <= 0:
            return
        self.used += units
        if self.used > self.budget:
            raise out_of_fuel(self.fuel_limit or self.budget, what)

    def tool_limits(self, memory_bytes: int, fuel: int) -> tuple[int, int]:
        """(memory, fuel) for a tool whose manifest asks for ``memory_bytes`` and ``fuel``: the node's caps
        and, for fuel, what the agent has left."""
        return min(memory_bytes, self.tool_memory_bytes), min(fuel, self.tool_fuel, self.left)
