"""The handoff protocol ``/meshagent/handoff/1``: pure state machines for sender and receiver.

One stream carries one handoff::

    sender                                 receiver
    Offer(signed snapshot header)   ─────▶ verify signature, recipient, expiry,
                                           sizes, generation — before the body
                                    ◀───── Accept(have, bulk addrs, token) | Reject(reason)
    Body(via)  then the sealed body ─────▶ (on this stream, or on the bulk side channel)
                                           authenticate every chunk, persist sealed bytes
                                    ◀───── Stored
    persist "committed", then
    Commit                          ─────▶ persist "committed", adopt, run
                                    ◀───── Resumed
    delete the escrow copy; done

Messages are frames: one type byte, then for :class:`Offer` the raw header
envelope (verified before anything is decoded) and for every other message a
small strict-CBOR map. A separate stream may carry :class:`Query` (a receiver
asking what became of a handoff) answered by :class:`Status`, or a re-sent
:class:`Commit` answered by :class:`Resumed`.

The machines are h11-style: ``send(message) -> bytes`` and
``receive(message)`` move along a plain transition table; a pair not in the
table raises :class:`LocalProtocolError` (we misused it) or
:class:`RemoteProtocolError` (the peer did). They do no I/O and keep no clock.

Crash recovery — the written rules
----------------------------------

Invariant: the agent is never lost and never runs in two places. The sender
is the one who decides; its decision is the durable record ``committed`` or
``aborted``. Both sides persist every step *before* sending the message that
announces it, and persist the highest generation they have seen per agent
(an offer at an older or equal generation is refused: ``stale``).

Sender (persisted state → what to do after a crash or a broken stream):

S1. ``offering``/``sending``/``awaiting_stored`` (no ``stored`` heard): abort.
    Persist ``aborted``, then thaw the agent (from the runtime, or from its
    escrow copy of the sealed bytes, which the sender can open). A receiver
    that did store a copy learns ``aborted`` when it asks, and deletes it.
S2. ``stored`` heard but ``committed`` not yet persisted: persist ``committed``
    (the receiver already holds a durable copy), then as S3.
S3. ``committed``: never thaw. Re-send ``Commit`` (new streams, backing off)
    until the receiver answers ``Resumed``; keep the escrow copy until then.
S4. ``resumed``/``done``: delete the escrow copy and release the agent.
S5. A ``Query`` is answered from the durable record: ``committed`` (or later)
    → ``committed``; any pre-commit state → first persist ``aborted`` (S1),
    then answer ``aborted``; nothing known → ``unknown`` (treated as aborted).

Receiver:

R1. ``receiving`` (body incomplete): delete the partial bytes. Nothing was
    adopted; the generation stays recorded as seen.
R2. ``stored`` (sealed copy persisted, no ``Commit``): never resume on its
    own. Ask the sender (``Query``) until it answers: ``committed`` → as R3;
    ``aborted``/``unknown`` → delete the copy. A re-sent ``Commit`` is as good
    as the answer ``committed``.
R3. ``committed``: open the stored copy (it is sealed to this node) and adopt
    the agent unless the runtime already holds it (adopting is idempotent),
    persist ``resumed``, then answer ``Resumed``.
R4. ``resumed``: answer any re-sent ``Commit`` with ``Resumed``; the stored
    copy has been deleted.

:func:`recovery_action` states these rules as a table the node applies.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from meshagent.errors import DecodeError, LocalProtocolError, RemoteProtocolError
from meshagent.protocol import codec
from meshagent.protocol.codec import Value, field as get

__all__ = [
    "HANDOFF_PROTOCOL",
    "MAX_MESSAGE",
    "RejectReason",
    "Via",
    "Offer",
    "Accept",
    "Reject",
    "Body",
    "Stored",
    "Commit",
    "Resumed",
    "Abort",
    "Query",
    "Status",
    "Message",
    "encode",
    "decode",
    "SenderState",
    "ReceiverState",
    "HandoffSender",
    "HandoffReceiver",
    "Action",
    "recovery_action",
]

HANDOFF_PROTOCOL: Final = "/meshagent/handoff/1"
MAX_MESSAGE: Final = 32 << 10
_MAX_ID: Final = 128
_MAX_ITEMS: Final = 16


class RejectReason(enum.StrEnum):
    FULL = "full"
    PRIVACY = "privacy"
    TOO_LARGE = "too_large"
    EXPIRED = "expired"
    STALE = "stale"
    BAD_SEAL = "bad_seal"
    WRONG_RECIPIENT = "wrong_recipient"
    BUSY = "busy"
    POLICY = "policy"


class Via(enum.StrEnum):
    STREAM = "stream"
    BULK = "bulk"


@dataclass(frozen=True, slots=True)
class Offer:
    header_blob: bytes
    """The signed snapshot header envelope; checked before it is decoded."""


@dataclass(frozen=True, slots=True)
class Accept:
    have: tuple[str, ...] = ()
    """Cacheable sections the receiver already holds (the sender omits them)."""
    bulk_addrs: tuple[str, ...] = ()
    """``host:port`` of a one-shot TCP listener for the body, or empty."""
    token: bytes = b""
    """One-time token the sender must present first on the bulk connection."""


@dataclass(frozen=True, slots=True)
class Reject:
    reason: RejectReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Body:
    via: Via
    size: int
    """Exact number of sealed body bytes that follow."""


@dataclass(frozen=True, slots=True)
class Stored:
    agent_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class Commit:
    agent_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class Resumed:
    agent_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class Abort:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Query:
    agent_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class Status:
    agent_id: str
    generation: int
    decision: str
    """``committed``, ``aborted`` or ``unknown``."""


Message = Offer | Accept | Reject | Body | Stored | Commit | Resumed | Abort | Query | Status

_TYPES: Final[Mapping[type, int]] = {
    Offer: 1, Accept: 2, Reject: 3, Body: 4, Stored: 5, Commit: 6, Resumed: 7, Abort: 8, Query: 9, Status: 10,
}
DECISIONS: Final = ("committed", "aborted", "unknown")


# --- wire ----------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    tag = bytes([_TYPES[type(msg)]])
    match msg:
        case Offer(blob):
            return tag + blob
        case Accept(have, addrs, token):
            body: dict[str, object] = {"have": list(have), "bulk": list(addrs), "token": token}
        case Reject(reason, detail):
            body = {"reason": str(reason), "detail": detail}
        case Body(via, size):
            body = {"via": str(via), "size": size}
        case Stored(a, g) | Commit(a, g) | Resumed(a, g) | Query(a, g):
            body = {"agent": a, "gen": g}
        case Abort(reason):
            body = {"reason": reason}
        case Status(a, g, decision):
            body = {"agent": a, "gen": g, "decision": decision}
    return tag + codec.encode(body)


def decode(frame: bytes) -> Message:
    """Decode one frame from a peer. Raises DecodeError (a RemoteProtocolError) only."""
    if not frame:
        raise DecodeError("empty handoff frame")
    if len(frame) > MAX_MESSAGE:
        raise DecodeError("handoff frame too large")
    tag, rest = frame[0], bytes(frame[1:])
    if tag == _TYPES[Offer]:
        if not rest:
            raise DecodeError("empty offer")
        return Offer(rest)
    m = codec.decode_map(rest, max_size=MAX_MESSAGE, max_depth=3)
    match tag:
        case 2:
            return Accept(_names(get(m, "have", list)), _names(get(m, "bulk", list)), _token(get(m, "token", bytes)))
        case 3:
            try:
                reason = RejectReason(get(m, "reason", str))
            except ValueError as exc:
                raise DecodeError(f"unknown reject reason {m.get('reason')!r}") from exc
            return Reject(reason, _short(get(m, "detail", str), 512))
        case 4:
            try:
                via = Via(get(m, "via", str))
            except ValueError as exc:
                raise DecodeError(f"unknown body channel {m.get('via')!r}") from exc
            return Body(via, _count(get(m, "size", int)))
        case 5:
            return Stored(_ident(get(m, "agent", str)), _count(get(m, "gen", int)))
        case 6:
            return Commit(_ident(get(m, "agent", str)), _count(get(m, "gen", int)))
        case 7:
            return Resumed(_ident(get(m, "agent", str)), _count(get(m, "gen", int)))
        case 9:
            return Query(_ident(get(m, "agent", str)), _count(get(m, "gen", int)))
        case 8:
            return Abort(_short(get(m, "reason", str), 512))
        case 10:
            decision = get(m, "decision", str)
            if decision not in DECISIONS:
                raise DecodeError(f"unknown decision {decision!r}")
            return Status(_ident(get(m, "agent", str)), _count(get(m, "gen", int)), decision)
    raise DecodeError(f"unknown handoff message type {tag}")


def _short(s: str, n: int) -> str:
    if len(s) > n:
        raise DecodeError("string field too long")
    return s


def _ident(s: str) -> str:
    if not 0 < len(s) <= _MAX_ID:
        raise DecodeError("invalid agent id")
    return s


def _count(n: int) -> int:
    if not 0 <= n < 1 << 63:
        raise DecodeError("integer out of range")
    return n


def _token(b: bytes) -> bytes:
    if len(b) > 64:
        raise DecodeError("bulk token too long")
    return b


def _names(items: list[Value]) -> tuple[str, ...]:
    if len(items) > _MAX_ITEMS or not all(isinstance(i, str) and 0 < len(i) <= 256 for i in items):
        raise DecodeError("invalid list of names")
    return tuple(items)  # type: ignore[arg-type]


# --- state machines --------------------------------------------------------------


class SenderState(enum.StrEnum):
    IDLE = "idle"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    SENDING = "sending"
    AWAITING_STORED = "awaiting_stored"
    STORED = "stored"
    COMMITTED = "committed"
    DONE = "done"
    REJECTED = "rejected"
    ABORTED = "aborted"


class ReceiverState(enum.StrEnum):
    IDLE = "idle"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    RECEIVING = "receiving"
    RECEIVED = "received"
    STORED = "stored"
    COMMITTED = "committed"
    DONE = "done"
    REJECTED = "rejected"
    ABORTED = "aborted"


S = SenderState
R = ReceiverState

# (state, direction, message type) → next state
_SENDER: Final[Mapping[tuple[SenderState, str, type], SenderState]] = {
    (S.IDLE, "send", Offer): S.OFFERED,
    (S.OFFERED, "recv", Accept): S.ACCEPTED,
    (S.OFFERED, "recv", Reject): S.REJECTED,
    (S.ACCEPTED, "send", Body): S.SENDING,
    (S.STORED, "send", Commit): S.COMMITTED,
    (S.AWAITING_STORED, "recv", Stored): S.STORED,
    (S.COMMITTED, "recv", Resumed): S.DONE,
    **{(s, "send", Abort): S.ABORTED for s in (S.OFFERED, S.ACCEPTED, S.SENDING, S.AWAITING_STORED)},
    **{(s, "recv", Abort): S.ABORTED for s in (S.OFFERED, S.ACCEPTED, S.SENDING, S.AWAITING_STORED)},
}

_RECEIVER: Final[Mapping[tuple[ReceiverState, str, type], ReceiverState]] = {
    (R.IDLE, "recv", Offer): R.OFFERED,
    (R.OFFERED, "send", Accept): R.ACCEPTED,
    (R.OFFERED, "send", Reject): R.REJECTED,
    (R.ACCEPTED, "recv", Body): R.RECEIVING,
    (R.RECEIVED, "send", Stored): R.STORED,
    (R.STORED, "recv", Commit): R.COMMITTED,
    (R.COMMITTED, "send", Resumed): R.DONE,
    **{(s, "send", Abort): R.ABORTED for s in (R.OFFERED, R.ACCEPTED, R.RECEIVING, R.RECEIVED)},
    **{(s, "recv", Abort): R.ABORTED for s in (R.OFFERED, R.ACCEPTED, R.RECEIVING, R.RECEIVED, R.STORED)},
}


class _Machine:
    _table: Mapping[tuple[enum.StrEnum, str, type], enum.StrEnum]

    def __init__(self, state: enum.StrEnum) -> None:
        self.state = state

    def _move(self, direction: str, msg: Message) -> None:
        nxt = self._table.get((self.state, direction, type(msg)))
        if nxt is None:
            text = f"{type(msg).__name__} cannot be {direction}d in state {self.state}"
            raise LocalProtocolError(text) if direction == "send" else RemoteProtocolError(text)
        self.state = nxt

    def send(self, msg: Message) -> bytes:
        """Move along the table for an outgoing message; return its frame payload."""
        self._move("send", msg)
        return encode(msg)


class HandoffSender(_Machine):
    """The sender's side of one handoff. The shell persists before it sends."""

    _table = _SENDER  # type: ignore[assignment]

    def __init__(self, agent_id: str, generation: int) -> None:
        super().__init__(S.IDLE)
        self.agent_id = agent_id
        self.generation = generation
        self.body_size = 0
        self._body_sent = 0

    def receive(self, msg: Message) -> Message:
        self._move("recv", msg)
        match msg:
            case Stored(a, g) | Resumed(a, g) if (a, g) != (self.agent_id, self.generation):
                raise RemoteProtocolError(f"peer acknowledged {a}@{g}, not {self.agent_id}@{self.generation}")
        return msg

    def send(self, msg: Message) -> bytes:
        match msg:
            case Body(_, size):
                self.body_size = size
            case Commit(a, g) if (a, g) != (self.agent_id, self.generation):
                raise LocalProtocolError("commit for another handoff")
        return super().send(msg)

    def body_progress(self, n: int) -> None:
        """``n`` more body bytes went out; after the last one we await ``Stored``."""
        if self.state is not S.SENDING:
            raise LocalProtocolError(f"no body is being sent in state {self.state}")
        self._body_sent += n
        if self._body_sent > self.body_size:
            raise LocalProtocolError("sent more body bytes than announced")
        if self._body_sent == self.body_size:
            self.state = S.AWAITING_STORED


class HandoffReceiver(_Machine):
    """The receiver's side of one handoff; the shell verifies and persists the body."""

    _table = _RECEIVER  # type: ignore[assignment]

    def __init__(self, max_body: int) -> None:
        super().__init__(R.IDLE)
        self.max_body = max_body
        self.agent_id = ""
        self.generation = -1
        self.body_size = 0
        self._received = 0

    def accepted_header(self, agent_id: str, generation: int) -> None:
        """The shell verified the offer's header: remember what it binds."""
        self.agent_id, self.generation = agent_id, generation

    def receive(self, msg: Message) -> Message:
        match msg:
            case Body(_, size) if size > self.max_body:
                raise RemoteProtocolError(f"announced body of {size} bytes exceeds {self.max_body}")
        self._move("recv", msg)
        match msg:
            case Body(_, size):
                self.body_size = size
                if size == 0:
                    self.state = R.RECEIVED
            case Commit(a, g) if (a, g) != (self.agent_id, self.generation):
                raise RemoteProtocolError(f"commit for {a}@{g}, not {self.agent_id}@{self.generation}")
        return msg

    def body_progress(self, n: int) -> None:
        if self.state is not R.RECEIVING:
            raise RemoteProtocolError(f"body bytes in state {self.state}")
        self._received += n
        if self._received > self.body_size:
            raise RemoteProtocolError("more body bytes than announced")
        if self._received == self.body_size:
            self.state = R.RECEIVED


# --- recovery ---------------------------------------------------------------------


class Action(enum.StrEnum):
    ABORT_AND_THAW = "abort_and_thaw"
    """S1: persist aborted, thaw the agent (or reopen the escrow copy)."""
    COMMIT = "commit"
    """S2: persist committed, then re-send Commit."""
    RESEND_COMMIT = "resend_commit"
    """S3: re-send Commit until Resumed."""
    CLEAN_UP = "clean_up"
    """S4 / R4 / terminal states: delete leftover sealed bytes."""
    DISCARD_PARTIAL = "discard_partial"
    """R1: delete partial bytes; nothing was adopted."""
    ASK_SENDER = "ask_sender"
    """R2: Query the sender until it decides; never resume on our own."""
    ADOPT = "adopt"
    """R3: adopt from the stored copy (idempotent), persist resumed, answer Resumed."""


_RECOVERY: Final[Mapping[tuple[str, str], Action]] = {
    **{("sender", s): Action.ABORT_AND_THAW for s in ("offered", "accepted", "sending", "awaiting_stored")},
    ("sender", "stored"): Action.COMMIT,
    ("sender", "committed"): Action.RESEND_COMMIT,
    **{("sender", s): Action.CLEAN_UP for s in ("done", "rejected", "aborted")},
    **{("receiver", s): Action.DISCARD_PARTIAL for s in ("offered", "accepted", "receiving", "received")},
    ("receiver", "stored"): Action.ASK_SENDER,
    ("receiver", "committed"): Action.ADOPT,
    **{("receiver", s): Action.CLEAN_UP for s in ("done", "rejected", "aborted")},
}


def recovery_action(role: str, state: str) -> Action:
    """What a restarted node does with a handoff persisted in ``state`` (rules S1–S4, R1–R4)."""
    try:
        return _RECOVERY[(role, state)]
    except KeyError as exc:
        raise LocalProtocolError(f"no recovery rule for {role} in state {state!r}") from exc
