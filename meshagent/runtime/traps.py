"""Turning wasmtime traps into the agent errors of :mod:`meshagent.errors`."""

from __future__ import annotations

import wasmtime

from meshagent.config import SandboxLimits
from meshagent.errors import (
    AgentTrap,
    CpuLimitExceeded,
    MemoryLimitExceeded,
    MeshError,
    StackLimitExceeded,
    WallClockLimitExceeded,
)

__all__ = ["map_trap", "trap_text", "wall_clock_exceeded"]


def map_trap(exc: Exception, memory_size: int, limits: SandboxLimits) -> MeshError:
    """The MeshError for a trap, given the agent's memory size when it trapped."""
    code = getattr(exc, "trap_code", None)
    text = trap_text(exc)
    # wasmtime answers a refused memory.grow with -1, not a trap; an agent that then
    # traps (abort on NULL) or spins close to its limit is reported as out of memory.
    headroom = limits.memory_bytes - memory_size
    near_limit = memory_size > 0 and headroom < max(2 << 20, limits.memory_bytes // 16)
    mib = limits.memory_bytes >> 20
    if code == wasmtime.TrapCode.INTERRUPT:
        return wall_clock_exceeded(limits)
    if code == wasmtime.TrapCode.STACK_OVERFLOW:
        return StackLimitExceeded(
            f"the agent overflowed its wasm stack of {limits.stack_bytes} bytes (unbounded recursion?); "
            "raise sandbox.stack_bytes if it really needs a deeper stack"
        )
    if near_limit:
        return MemoryLimitExceeded(
            f"the agent reached its memory limit of {mib} MiB and then stopped ({text}); "
            "raise sandbox.memory_bytes or make the agent use less memory"
        )
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return CpuLimitExceeded(
            f"the agent used its whole CPU budget of {limits.fuel} fuel units (an infinite loop?); "
            "raise sandbox.fuel if it needs more"
        )
    return AgentTrap(f"the agent trapped: {text}")


def wall_clock_exceeded(limits: SandboxLimits) -> WallClockLimitExceeded:
    return WallClockLimitExceeded(
        f"the agent ran for longer than this node's wall-clock limit of {limits.wall_clock_s:g} s "
        "(sleeps and joins included); raise sandbox.wall_clock_s if it needs longer"
    )


def trap_text(exc: Exception) -> str:
    """The useful line of a wasmtime error ("wasm trap: ..."), not its backtrace header."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("wasm trap:"):
            return line[len("wasm trap:"):].strip()
    return lines[-1] if lines else type(exc).__name__
