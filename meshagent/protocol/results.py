"""The results relay (``/meshagent/result/2``): custody of an agent and its result, owed to its owner.

An agent belongs to the node that started it (its *owner*); it may run
anywhere. The owner keeps a **custody record** per agent it owns — which peer
holds it now, at which handoff generation — and accepts the agent's result
only from that peer. The record moves only on the word of the current holder:

* a holder that hands the agent on tells the owner (:class:`CustodyNotice`,
  "agent X at generation g is now held by B");
* a holder on which the agent forks tells the owner of the children
  (:class:`ChildrenNotice`); they are held where they were born;
* whoever ends the agent reports its result (:class:`ResultReport`).

Each is owed durably by the sender and re-sent until the owner answers
:class:`Reply` ``ok``. Notices about one agent are sent in the order they were
made, and a message the owner cannot accept yet (its holder's notice has not
arrived) is answered ``ok=False`` and re-sent later; nothing is stored for it.
The owner answers :class:`FetchRequest` (a result by agent id) only to its
paired devices and to the peer holding the agent's parent (a ``mesh_join``).

This module is pure: the messages with their bounded codec, and the owner's
decisions (:func:`judge_report`, :func:`judge_custody`, :func:`judge_children`,
:func:`may_fetch`). The node's shell is :mod:`meshagent.node.results`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from meshagent.errors import DecodeError
from meshagent.protocol import codec
from meshagent.protocol.signed import PeerId

__all__ = [
    "RESULT_PROTOCOL",
    "MAX_MESSAGE",
    "MAX_OUTPUT",
    "MAX_CHILDREN",
    "MAX_HELD_PER_PEER",
    "ENDED",
    "AgentResult",
    "ResultReport",
    "CustodyNotice",
    "ChildrenNotice",
    "FetchRequest",
    "Request",
    "Reply",
    "FetchReply",
    "Custody",
    "Verdict",
    "encode",
    "decode_request",
    "decode_reply",
    "decode_fetch_reply",
    "judge_report",
    "judge_custody",
    "judge_children",
    "may_fetch",
]

RESULT_PROTOCOL: Final = "/meshagent/result/2.0.0"
MAX_OUTPUT: Final = 1 << 20
"""stdout plus stderr carried in one result (the sandbox's default output limit); more is cut by the sender."""
MAX_ERROR: Final = 4096
MAX_CHILDREN: Final = 1024
"""Children listed in one result or notice (a fork makes at most 64 at a time)."""
MAX_MESSAGE: Final = MAX_OUTPUT + MAX_ERROR + MAX_CHILDREN * 66 + 1024
"""The largest frame on the protocol: one result at its limits, and its envelope."""
MAX_REPLY: Final = MAX_MESSAGE
MAX_HELD_PER_PEER: Final = 256
"""Agents an owner records as held (and not ended) by one peer that is not one of its devices: a
stranger's children notices past this are refused, so its word cannot fill the owner's store."""
ENDED: Final = frozenset({"exited", "failed", "killed"})
"""The statuses a result may carry (an agent that ended)."""


@dataclass(frozen=True, slots=True)
class AgentResult:
    """How an agent ended, as relayed to its owner and answered to a fetch."""

    agent_id: str
    parent_id: str | None
    status: str
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    host_calls: int
    error: str | None
    children: tuple[str, ...] = ()

    def bounded(self) -> AgentResult:
        """The result cut to the protocol's limits (output beyond :data:`MAX_OUTPUT` dropped, marked)."""
        stdout = self.stdout[:MAX_OUTPUT]
        stderr = self.stderr[: MAX_OUTPUT - len(stdout)]
        error = self.error
        if len(stdout) + len(stderr) < len(self.stdout) + len(self.stderr):
            note = f"output cut to {MAX_OUTPUT} bytes for the results relay"
            error = f"{error}; {note}" if error else note
        if error is not None and len(error.encode()) > MAX_ERROR:
            error = error.encode()[:MAX_ERROR].decode("utf-8", "ignore")
        return AgentResult(self.agent_id, self.parent_id, self.status, self.exit_code, stdout, stderr,
                           self.host_calls, error, self.children[:MAX_CHILDREN])

    def to_wire(self) -> dict[str, codec.Value]:
        return {
            "agent_id": self.agent_id,
            "parent_id": self.parent_id or "",
            "status": self.status,
            "exit_code": -1 if self.exit_code is None else self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "host_calls": self.host_calls,
            "error": self.error or "",
            "children": list(self.children),
        }

    @classmethod
    def from_wire(cls, m: Mapping[str | int, codec.Value]) -> AgentResult:
        """Decode and bound-check a result map (from a peer or this node's store)."""
        status = codec.field(m, "status", str)
        if status not in ENDED:
            raise DecodeError(f"a result's status must be one of {sorted(ENDED)}, not {status[:20]!r}")
        exit_code = codec.field(m, "exit_code", int)
        host_calls = codec.field(m, "host_calls", int)
        if not -(1 << 31) <= exit_code < 1 << 31 or not 0 <= host_calls < 1 << 62:
            raise DecodeError("a result's exit code or host call count is out of range")
        stdout, stderr = codec.field(m, "stdout", bytes), codec.field(m, "stderr", bytes)
        if len(stdout) + len(stderr) > MAX_OUTPUT:
            raise DecodeError(f"a result carries more than {MAX_OUTPUT} bytes of output")
        error = codec.field(m, "error", str)
        if len(error) > MAX_ERROR:
            raise DecodeError(f"a result's error text is longer than {MAX_ERROR}")
        children = _ids(codec.field(m, "children", list), "children")
        return cls(
            agent_id=_id(codec.field(m, "agent_id", str)),
            parent_id=_id(codec.field(m, "parent_id", str), empty=True) or None,
            status=status,
            exit_code=None if exit_code == -1 else exit_code,
            stdout=stdout,
            stderr=stderr,
            host_calls=host_calls,
            error=error or None,
            children=children,
        )

    def to_json(self) -> dict[str, object]:
        """The control API's shape (the same keys as an outcome of an agent that ended here)."""
        return {
            "agent_id": self.agent_id,
            "parent_id": self.parent_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "stdout": self.stdout.decode("utf-8", "replace"),
            "stderr": self.stderr.decode("utf-8", "replace"),
            "host_calls": self.host_calls,
            "error": self.error,
            "children": list(self.children),
        }


@dataclass(frozen=True, slots=True)
class ResultReport:
    """The holder that ended an agent reports how it ended."""

    result: AgentResult


@dataclass(frozen=True, slots=True)
class CustodyNotice:
    """The holder handed the agent on: at ``generation`` it is held by ``holder``."""

    agent_id: str
    generation: int
    holder: PeerId


@dataclass(frozen=True, slots=True)
class ChildrenNotice:
    """The agent forked on its holder (the sender): these children are held there."""

    parent_id: str
    children: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """Ask the owner for an agent's result (it waits a while for one that has not arrived)."""

    agent_id: str


Request = ResultReport | CustodyNotice | ChildrenNotice | FetchRequest


@dataclass(frozen=True, slots=True)
class Reply:
    """The owner's answer to a report or notice: ``ok`` (recorded, stop sending) or not (send again later)."""

    ok: bool
    why: str = ""


@dataclass(frozen=True, slots=True)
class FetchReply:
    result: AgentResult | None
    refused: str = ""


_ID: Final = re.compile(r"[0-9A-Za-z_-]{1,64}")
_PEER: Final = re.compile(r"[0-9A-Za-z]{1,128}")


def _id(value: str, *, empty: bool = False) -> str:
    if not (empty and value == "") and _ID.fullmatch(value) is None:
        raise DecodeError(f"not an agent id: {value[:64]!r}")
    return value


def _ids(values: list[codec.Value], what: str) -> tuple[str, ...]:
    if len(values) > MAX_CHILDREN:
        raise DecodeError(f"{len(values)} {what}; the limit is {MAX_CHILDREN}")
    if not all(isinstance(v, str) for v in values):
        raise DecodeError(f"{what} must be agent ids")
    return tuple(_id(v) for v in values)  # type: ignore[arg-type]


def encode(msg: Request | Reply | FetchReply) -> bytes:
    match msg:
        case ResultReport(result):
            return codec.encode({"t": "result", "result": result.to_wire()})
        case CustodyNotice(agent_id, generation, holder):
            return codec.encode({"t": "custody", "agent_id": agent_id, "generation": generation, "holder": str(holder)})
        case ChildrenNotice(parent_id, children):
            return codec.encode({"t": "children", "parent_id": parent_id, "children": list(children)})
        case FetchRequest(agent_id):
            return codec.encode({"t": "fetch", "agent_id": agent_id})
        case Reply(ok, why):
            return codec.encode({"ok": ok, "why": why[:200]})
        case FetchReply(result, refused):
            return codec.encode({"result": None if result is None else result.to_wire(), "refused": refused[:200]})
    raise TypeError(f"not a results relay message: {msg!r}")


def decode_request(data: bytes) -> Request:
    """A request from a peer; any violation is a :class:`DecodeError` (a ``RemoteProtocolError``)."""
    m = codec.decode_map(data, max_size=MAX_MESSAGE, max_depth=3)
    match codec.field(m, "t", str):
        case "result":
            return ResultReport(AgentResult.from_wire(codec.field(m, "result", dict)))
        case "custody":
            generation = codec.field(m, "generation", int)
            if not 0 <= generation < 1 << 63:
                raise DecodeError("a custody notice's generation is out of range")
            holder = codec.field(m, "holder", str)
            if _PEER.fullmatch(holder) is None:
                raise DecodeError("a custody notice's holder is not a peer id")
            return CustodyNotice(_id(codec.field(m, "agent_id", str)), generation, PeerId(holder))
        case "children":
            children = _ids(codec.field(m, "children", list), "children")
            if not children:
                raise DecodeError("a children notice names no child")
            return ChildrenNotice(_id(codec.field(m, "parent_id", str)), children)
        case "fetch":
            return FetchRequest(_id(codec.field(m, "agent_id", str)))
        case other:
            raise DecodeError(f"unknown results relay message {other[:20]!r}")


def decode_reply(data: bytes) -> Reply:
    m = codec.decode_map(data, max_size=1024, max_depth=2)
    return Reply(codec.field(m, "ok", bool), codec.opt_field(m, "why", str, "")[:200])


def decode_fetch_reply(data: bytes) -> FetchReply:
    m = codec.decode_map(data, max_size=MAX_REPLY, max_depth=3)
    raw = m.get("result")
    result = AgentResult.from_wire(raw) if isinstance(raw, dict) else None
    if raw is not None and result is None:
        raise DecodeError("a fetch reply's result must be a map or null")
    return FetchReply(result, codec.opt_field(m, "refused", str, "")[:200])


# --- the owner's decisions --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Custody:
    """The owner's record of one agent it owns: who holds it, since which handoff generation."""

    holder: PeerId
    generation: int = -1
    """-1 until the agent is first handed over (a fresh agent, or a child born where its parent was)."""


class Verdict(enum.Enum):
    ACCEPT = "accept"
    """Record it and answer ok."""
    DUPLICATE = "duplicate"
    """Already recorded (or older than the record): answer ok and change nothing."""
    LATER = "later"
    """Not from the holder this node knows (yet): answer not ok, store nothing; an honest sender retries."""
    REFUSE = "refuse"
    """Never acceptable (over a limit): answer not ok, store nothing."""


def judge_report(custody: Custody | None, sender: PeerId, *, have_result: bool) -> Verdict:
    """A result for an agent: only from its holder, and only for an agent this node owns (``custody``)."""
    if custody is None or custody.holder != sender:
        return Verdict.LATER
    return Verdict.DUPLICATE if have_result else Verdict.ACCEPT


def judge_custody(custody: Custody | None, sender: PeerId, notice: CustodyNotice) -> Verdict:
    """A holder's custody notice: a newer generation moves the record only on the current holder's word.

    An old or repeated notice changes nothing (notices about one agent may arrive out of order from
    different holders); a newer one from anyone but the current holder waits for that holder's own notice.
    """
    if custody is None:
        return Verdict.LATER
    if notice.generation <= custody.generation:
        return Verdict.DUPLICATE
    return Verdict.ACCEPT if custody.holder == sender else Verdict.LATER


def judge_children(parent: Custody | None, sender: PeerId, notice: ChildrenNotice, *, new: int,
                   held_by_sender: int, sender_trusted: bool) -> Verdict:
    """A fork on the parent's holder: ``new`` of the named children are not yet recorded here;
    ``held_by_sender`` agents this node owns are recorded as held (and not ended) by the sender."""
    if parent is None or parent.holder != sender:
        return Verdict.LATER
    if new == 0:
        return Verdict.DUPLICATE
    if not sender_trusted and held_by_sender + new > MAX_HELD_PER_PEER:
        return Verdict.REFUSE
    return Verdict.ACCEPT


def may_fetch(requester: PeerId, *, trusted: bool, parent: Custody | None) -> bool:
    """Whether to answer a fetch: the owner's paired devices, and the holder of the agent's parent."""
    return trusted or (parent is not None and parent.holder == requester)
