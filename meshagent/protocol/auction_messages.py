"""Auction messages and their signed wire form (see :mod:`meshagent.protocol.auction`).

Every message is a frozen dataclass, signed by its author as a whole, with its
own domain separator per kind. :func:`decode` checks the signature before it
decodes anything, and then every field: strings and numbers bounded, numbers
finite, privacy and policy parsed into their enums, the model requirement
parsed. So a message that decodes can be acted on without a later surprise, and
anything a peer got wrong is a :class:`~meshagent.errors.RemoteProtocolError`
at the receive boundary.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import asdict, dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshagent.errors import DecodeError, ExpiredError, LocalProtocolError, SignatureError
from meshagent.protocol import codec, signed
from meshagent.protocol.codec import Value, field as get, opt_field
from meshagent.protocol.requirement import ModelRequirement, parse_requirement
from meshagent.protocol.scoring import Estimate, Policy, PrivacyClass
from meshagent.protocol.signed import PeerId

__all__ = [
    "MAX_MESSAGE_BYTES",
    "CallForBids",
    "Bid",
    "Decline",
    "Award",
    "Release",
    "Report",
    "Message",
    "MESSAGE_KINDS",
    "encode",
    "decode",
]

MAX_MESSAGE_BYTES: Final = 16 * 1024
_MAX_STR: Final = 256
_PRIVACY: Final = tuple(p.value for p in PrivacyClass)
_POLICY: Final = tuple(p.value for p in Policy)


@dataclass(frozen=True, slots=True)
class CallForBids:
    auction_id: str
    agent_id: str
    home: PeerId
    owner: PeerId
    """Peer id of the agent owner's device (privacy ``private`` means: devices paired with it)."""
    requirement: str
    """Which models may serve the step (:class:`~meshagent.protocol.requirement.ModelRequirement` text)."""
    context_tokens: int
    output_tokens: int
    privacy: PrivacyClass
    policy: Policy
    snapshot_bytes: int
    issued_at: float
    bid_deadline: float
    """Bids arriving after this are ignored."""
    deadline_s: float | None = None
    """Soft completion deadline for the step, in seconds from ``issued_at``."""
    kv_model_sha256: str = ""
    """The model whose KV cache the agent can bring ("" = none)."""
    max_price: float | None = None
    fresh_tokens: int = 0
    """Context tokens the KV cache does not cover yet (new tool output): prefilled even with the KV."""
    kv_bytes: int = 0
    """Size of that KV cache; a bidder holding the model adds it to the transfer, or recomputes if cheaper."""
    tool_memory_bytes: int = 0
    """The largest sandbox memory one of the agent's WASI tools needs (its manifest): a bidder must allow it."""
    tool_fuel: int = 0
    """The largest fuel budget one of the agent's WASI tools needs."""

    def __post_init__(self) -> None:
        # Checked when made, so that a call that exists can be bid on: text given as
        # strings becomes the closed sets' enums, and the requirement must parse.
        if self.privacy not in _PRIVACY:
            raise LocalProtocolError(f"unknown privacy class {self.privacy!r}; classes are {', '.join(_PRIVACY)}")
        if self.policy not in _POLICY:
            raise LocalProtocolError(f"unknown policy {self.policy!r}; policies are {', '.join(_POLICY)}")
        object.__setattr__(self, "privacy", PrivacyClass(self.privacy))
        object.__setattr__(self, "policy", Policy(self.policy))
        ModelRequirement(self.requirement)

    @property
    def need(self) -> ModelRequirement:
        """The parsed requirement."""
        return ModelRequirement(self.requirement)


@dataclass(frozen=True, slots=True)
class Bid:
    auction_id: str
    bidder: PeerId
    model_name: str
    model_sha256: str
    transfer_s: float
    queue_s: float
    prefill_s: float
    decode_s: float
    price: float
    expires_at: float
    energy: str = ""
    """e.g. ``mains`` or ``battery 35%``."""

    @property
    def estimate(self) -> Estimate:
        return Estimate(self.transfer_s, self.queue_s, self.prefill_s, self.decode_s, self.price)


@dataclass(frozen=True, slots=True)
class Decline:
    auction_id: str
    bidder: PeerId
    reason: str


@dataclass(frozen=True, slots=True)
class Award:
    auction_id: str
    agent_id: str
    winner: PeerId
    expires_at: float
    """The winner keeps its reservation until then; the handoff must start before it."""


@dataclass(frozen=True, slots=True)
class Release:
    auction_id: str
    """Sent to losing bidders: drop the reservation."""


@dataclass(frozen=True, slots=True)
class Report:
    """What a winner reports after the step: the truth its reputation is judged on."""

    auction_id: str
    bidder: PeerId
    estimated_s: float
    actual_s: float


Message = CallForBids | Bid | Decline | Award | Release | Report

MESSAGE_KINDS: Final[dict[type, str]] = {
    CallForBids: "auction-cfb/1",
    Bid: "auction-bid/1",
    Decline: "auction-decline/1",
    Award: "auction-award/1",
    Release: "auction-release/1",
    Report: "auction-report/1",
}
_BY_KIND: Final = {v: k for k, v in MESSAGE_KINDS.items()}


def encode(msg: Message, key: Ed25519PrivateKey) -> bytes:
    kind = MESSAGE_KINDS[type(msg)]
    return codec.encode({"k": kind, "e": signed.sign(kind, codec.encode(asdict(msg)), key)})


def decode(data: bytes, *, now: float | None = None) -> tuple[PeerId, Message]:
    """Verify and decode an auction message; returns (signer, message).

    The signature is checked before the payload is decoded, and every field is
    checked here, so that nothing a peer wrote fails later: a bad field is a
    :class:`~meshagent.errors.RemoteProtocolError` from this function, never an
    error deep in bidding. Bids and calls whose deadlines have passed raise
    :class:`ExpiredError` when ``now`` is given.
    """
    outer = codec.decode_map(data, max_size=MAX_MESSAGE_BYTES, max_depth=2)
    kind = get(outer, "k", str)
    cls = _BY_KIND.get(kind)
    if cls is None:
        raise DecodeError(f"unknown auction message kind {kind!r}")
    env = signed.verify(get(outer, "e", bytes), kind=kind, max_size=MAX_MESSAGE_BYTES)
    m = codec.decode_map(env.payload, max_size=MAX_MESSAGE_BYTES, max_depth=2)
    msg = _from_map(cls, m)
    who = {CallForBids: "home", Bid: "bidder", Decline: "bidder", Report: "bidder"}.get(cls)
    if who is not None and getattr(msg, who) != env.signer:
        raise SignatureError(f"{kind} for {getattr(msg, who)} signed by {env.signer}")
    if now is not None:
        if isinstance(msg, CallForBids) and msg.bid_deadline < now:
            raise ExpiredError(f"call for bids {msg.auction_id} closed {now - msg.bid_deadline:.2f} s ago")
        if isinstance(msg, (Bid, Award)) and msg.expires_at < now:
            raise ExpiredError(f"{kind} {msg.auction_id} expired {now - msg.expires_at:.2f} s ago")
    return env.signer, msg


@functools.cache
def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _number(v: object, name: str) -> float:
    if not isinstance(v, float) or not 0.0 <= v < math.inf:  # also refuses NaN
        raise DecodeError(f"{name} must be a finite non-negative number")
    return v


def _from_map(cls: type, m: dict[str | int, Value]) -> Message:
    hints = _hints(cls)
    kwargs: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        optional = f.default is not dataclasses.MISSING
        v: object
        if t in (str, PeerId):
            text = get(m, f.name, str) if not optional else opt_field(m, f.name, str, f.default)
            if len(text) > _MAX_STR:
                raise DecodeError(f"{f.name} too long")
            v = text
        elif t is int:
            n = get(m, f.name, int) if not optional else opt_field(m, f.name, int, f.default)
            if not 0 <= n < 1 << 62:
                raise DecodeError(f"{f.name} out of range")
            v = n
        elif t is float:
            v = _number(get(m, f.name, float) if not optional else opt_field(m, f.name, float, f.default), f.name)
        elif t == float | None:
            v = None if m.get(f.name) is None else _number(get(m, f.name, float), f.name)
        elif t in (PrivacyClass, Policy):
            text = get(m, f.name, str)
            try:
                v = t(text)  # type: ignore[operator]
            except ValueError as exc:
                raise DecodeError(f"unknown {f.name} {text[:40]!r}") from exc
        else:  # pragma: no cover - every field type is listed above
            raise TypeError(f"unsupported field type {t!r}")
        kwargs[f.name] = v
    if cls is CallForBids:
        parse_requirement(typing.cast(str, kwargs["requirement"]))
    try:
        return cls(**kwargs)  # type: ignore[no-any-return]
    except LocalProtocolError as exc:  # a check made on construction: the peer's fault here
        raise DecodeError(f"bad {cls.__name__}: {exc}") from exc
