"""Moving an agent: the real handoff state machines of :mod:`meshagent.protocol.handoff`, wired in memory.

Sealing and signing are left out (nothing is verified in the simulation), so the
offer carries a placeholder header; every message still goes through
``send()``/``receive()`` of :class:`HandoffSender` and :class:`HandoffReceiver`,
which enforce the transition table. Timing follows the exchange::

    Offer -> Accept            one round trip
    Body (sealed snapshot)     size / bandwidth
    Stored -> Commit           one round trip; the receiver resumes on Commit
    Resumed                    travels back while the step already runs

which is the ``2 * rtt + bytes / bandwidth`` a bid's transfer estimate assumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeVar

from meshagent.protocol.handoff import (
    Abort,
    Accept,
    Body,
    Commit,
    HandoffReceiver,
    HandoffSender,
    Message,
    Offer,
    ReceiverState,
    Resumed,
    SenderState,
    Stored,
    Via,
)

__all__ = ["Handoff", "begin", "finish", "abort", "MAX_BODY"]

MAX_BODY: Final = 64 << 30
M = TypeVar("M", bound=Message)
_HEADER: Final = b"simulated snapshot header"


@dataclass(slots=True)
class Handoff:
    sender: HandoffSender
    receiver: HandoffReceiver
    frames: int = 0
    """Protocol messages exchanged so far (the body counts as one)."""


def begin(agent_id: str, generation: int, body_bytes: int) -> Handoff:
    """Offer, accept and send the whole body: the receiver holds a stored copy."""
    h = Handoff(HandoffSender(agent_id, generation), HandoffReceiver(MAX_BODY))
    h.receiver.receive(_through(h, h.sender.send(Offer(_HEADER)), Offer(_HEADER)))
    h.receiver.accepted_header(agent_id, generation)
    h.sender.receive(_through(h, h.receiver.send(Accept()), Accept()))
    body = Body(Via.BULK, body_bytes)
    h.receiver.receive(_through(h, h.sender.send(body), body))
    if body_bytes:
        h.sender.body_progress(body_bytes)
        h.receiver.body_progress(body_bytes)
    return h


def finish(h: Handoff) -> None:
    """Stored, Commit, Resumed: the agent now lives at the receiver, exactly once."""
    a, g = h.sender.agent_id, h.sender.generation
    h.sender.receive(_through(h, h.receiver.send(Stored(a, g)), Stored(a, g)))
    h.receiver.receive(_through(h, h.sender.send(Commit(a, g)), Commit(a, g)))
    h.sender.receive(_through(h, h.receiver.send(Resumed(a, g)), Resumed(a, g)))
    assert h.sender.state is SenderState.DONE and h.receiver.state is ReceiverState.DONE


def abort(h: Handoff) -> None:
    """The receiver vanished before storing: the sender aborts and thaws the agent (rule S1)."""
    h.sender.send(Abort("receiver left"))
    h.frames += 1
    assert h.sender.state is SenderState.ABORTED


def _through(h: Handoff, frame: bytes, msg: M) -> M:
    h.frames += 1
    assert frame  # the machine produced a frame for it
    return msg
