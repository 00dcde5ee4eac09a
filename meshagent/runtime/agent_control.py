"""What core WASI agents and component (Python) agents share: their truth and the node's requests.

An agent's truth (identity, inputs, journal, labels, rollback counts, status) is
loaded from a snapshot and rewound by a rollback the same way for both kinds.
Suspension, outside labels and rollbacks: the node asks from another thread, and
the agent acts on the request at its next *live* host call (:meth:`AgentControl._before_live`),
never in the middle of a replay.
"""

from __future__ import annotations

import abc

import time
from typing import Final

from meshagent.config import SandboxLimits
from meshagent.errors import CheckpointNotFound, MeshError
from meshagent.runtime.agent_log import OperatorLog
from meshagent.runtime.costs import Meter
from meshagent.runtime.host_state import HostState
from meshagent.runtime.journal import REALTIME, Journal, last_clock_reading
from meshagent.runtime.mesh_abi import Rollback
from meshagent.runtime.outcome import Outcome
from meshagent.runtime.services import Suspend, World
from meshagent.runtime.snapshot import AgentSnapshot
from meshagent.runtime.traps import wall_clock_exceeded
from meshagent.runtime.vfs import FileView, VirtualFs

__all__ = ["AgentControl", "DOZE_SLICE_S"]

DOZE_SLICE_S: Final = 0.25
"""A sleeping agent looks at the node's requests (suspend, kill) and its deadline this often."""


class AgentControl(abc.ABC):
    """Mixin of :class:`~meshagent.runtime.sandbox.Agent` and :class:`~meshagent.runtime.component_agent.ComponentAgent`.

    The class using it loads its truth with :meth:`_load_truth`, sets ``limits``, ``suspend_at``,
    ``_suspend_reason``, ``_rollback_request`` and ``_error``, and implements :meth:`_apply_rollback`
    around :meth:`_rewind` (what else a rollback discards differs: a core agent also drops its
    Store and memory image).
    """

    limits: SandboxLimits
    agent_id: str
    parent_id: str | None
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    journal: Journal
    rollbacks: dict[str, int]
    labels: dict[str, int]
    status: str
    exit_code: int | None
    error_text: str | None
    vfs: VirtualFs
    state: HostState
    suspend_at: int | None
    """Suspend before the live host call that would make the journal this long (tests, benchmarks)."""
    deadline: float | None = None
    """``time.monotonic()`` past which the agent may not run (its wall-clock limit); set by its supervisor."""
    world: World
    operator_log: OperatorLog
    _pos: int
    _error: MeshError | None
    _suspend_reason: str | None
    _rollback_request: Rollback | None

    def _load_truth(self, snap: AgentSnapshot) -> None:
        """Identity, inputs, journal, labels and status from ``snap``; no run yet (position 0)."""
        self.agent_id = snap.agent_id
        self.parent_id = snap.parent_id
        self.argv = snap.args
        self.env = snap.env
        self.vfs = snap.vfs
        self.journal = Journal(list(snap.journal), limit=self.limits.journal_bytes)
        self.rollbacks = dict(snap.rollbacks)
        self.labels = dict(snap.labels)
        self.status = snap.status
        self.exit_code = snap.exit_code
        self.error_text = snap.error
        self.state = HostState()
        self._pos = 0
        self._clock_offsets: dict[int, int] = {}

    def steady_now_ns(self, clock: int, real_ns: int) -> int:
        """A live reading of clock ``clock``: realtime (0) as it is; the monotonic and CPU-time
        clocks shifted so they never go back below what the journal already told the agent —
        after a move the new node's clock may have started later than the old one's."""
        if clock == REALTIME:
            return real_ns
        if clock not in self._clock_offsets:
            last = last_clock_reading(self.journal, clock)
            self._clock_offsets[clock] = max(0, last - real_ns)
        return real_ns + self._clock_offsets[clock]

    @staticmethod
    def _without_frames(error: MeshError | None) -> MeshError | None:
        """The error to keep, without its tracebacks (and its causes'): their frames hold the
        Store, whose host functions wasmtime keeps in a global table that refers back to the
        agent — a cycle the garbage collector cannot free, leaking the agent's memory mappings."""
        seen: set[int] = set()
        exc: BaseException | None = error
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            exc.__traceback__ = None
            exc = exc.__cause__ or exc.__context__
        return error

    def _rewind(self, rb: Rollback) -> None:
        """Count the rollback and cut the journal (and the labels past it) back to ``rb.position``."""
        self.rollbacks[rb.label] = self.rollbacks.get(rb.label, 0) + 1
        self.journal.truncate(rb.position)
        self.labels = {k: v for k, v in self.labels.items() if v <= rb.position}

    @property
    def position(self) -> int:
        return self._pos

    @property
    def fs(self) -> FileView:
        """The agent's files at this point of its run: the snapshot's files plus its writes so far."""
        return FileView(self.vfs, self.state.written, limit=self.limits.files_bytes)

    def request_suspend(self, reason: str = "suspended by the node") -> None:
        """Stop at the next live host call (thread-safe); ``run`` then returns a suspended outcome."""
        self._suspend_reason = reason

    def clear_suspend(self) -> None:
        self._suspend_reason = None

    @property
    def suspend_requested(self) -> bool:
        return self._suspend_reason is not None

    @property
    def suspend_reason(self) -> str | None:
        return self._suspend_reason

    def add_label(self, label: str) -> int:
        """An outside checkpoint at the current end of the journal; returns its position."""
        position = len(self.journal)
        self.labels[label] = position
        return position

    def find_label(self, label: str) -> int:
        """The latest ``checkpoint(label)`` in the journal, else the outside label of that name."""
        raw = label.encode()
        for index in range(len(self.journal) - 1, -1, -1):
            entry = self.journal[index]
            if entry.name == "checkpoint" and entry.data == raw:
                return index
        if label in self.labels:
            return self.labels[label]
        raise CheckpointNotFound(f"agent {self.agent_id} has no checkpoint labelled {label!r}")

    def request_rollback(self, label: str) -> int:
        """Roll back to ``label`` at the next live host call (or now if the agent is not running)."""
        position = self.find_label(label)
        request = Rollback(label, position)
        if self.status == "running":
            self._rollback_request = request
        else:
            self._apply_rollback(request)
            self.status, self.exit_code, self.error_text = "ready", None, None
        return position

    @abc.abstractmethod
    def _apply_rollback(self, rb: Rollback) -> None:
        """Truncate to the rollback's position and restart from there (each kind of agent its own way)."""

    def check_deadline(self) -> None:
        """Raise :class:`WallClockLimitExceeded` once the agent's wall-clock limit has passed."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise wall_clock_exceeded(self.limits)

    def doze(self, seconds: float) -> None:
        """Sleep ``seconds`` for the agent, in slices: a suspend request (or a kill) cuts the sleep short
        (:class:`Suspend`, before the call is journaled), and the wall-clock limit ends it."""
        left = seconds
        while True:
            if self._suspend_reason is not None:
                raise Suspend(self._suspend_reason)
            self.check_deadline()
            if left <= 0:
                return
            step = min(left, DOZE_SLICE_S)
            if self.deadline is not None:
                step = min(step, max(0.0, self.deadline - time.monotonic()) + 0.001)
            self.world.sleep(step)
            left -= step

    def meter(self) -> Meter:
        """A meter for the host work of one call, against the fuel the agent has left now."""
        return Meter(self.fuel_left(), tool_memory_bytes=self.limits.tool_memory_bytes, tool_fuel=self.limits.tool_fuel,
                     deadline=self.deadline, fuel_limit=self.limits.fuel)

    @abc.abstractmethod
    def fuel_left(self) -> int:
        """Fuel the agent has left, inside a host call."""

    @abc.abstractmethod
    def charge(self, units: int, what: str) -> None:
        """Take ``units`` of fuel for host work done for the agent, inside a host call
        (:class:`~meshagent.errors.CpuLimitExceeded` when it has less left)."""

    def _before_live(self) -> None:
        """Act on the node's requests before a live host call: raise :class:`Suspend` or the :class:`Rollback`;
        past the agent's wall-clock limit, raise :class:`WallClockLimitExceeded`."""
        if self._suspend_reason is not None:
            raise Suspend(self._suspend_reason)
        self.check_deadline()
        if self.suspend_at is not None and len(self.journal) >= self.suspend_at:
            self.suspend_at = None
            raise Suspend(f"suspended at host call {len(self.journal)} as requested")
        if self._rollback_request is not None:
            request, self._rollback_request = self._rollback_request, None
            raise request

    def outcome(self) -> Outcome:
        return Outcome(
            agent_id=self.agent_id,
            parent_id=self.parent_id,
            status=self.status,
            exit_code=self.exit_code,
            stdout=bytes(self.state.stdout),
            stderr=bytes(self.state.stderr),
            host_calls=len(self.journal),
            error=self._error,
            error_text=self.error_text,
        )
