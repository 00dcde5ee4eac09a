"""Pairing two devices of one owner with a short code, by a PAKE (SPAKE2).

Device A shows a code (``meshagent pair``); on device B the owner types it
(``meshagent pair 417-093218``). Each then adds the other's peer id to its
trust store — the set of "own devices" that ``private`` steps may run on.

The code
--------

``DDD-SSSSSS``: the six digits ``SSSSSS`` are the secret, the SPAKE2 password.
The three digits ``DDD`` name the device that shows the code: they are a
checksum of that device's peer id and the secret (:func:`device_digits`).
B computes it for each peer it knows and talks to the one device whose peer
id matches, and to no other; ``DDD`` never goes on the wire. A typo in the
secret almost always names no device at all, so it costs no guess.

The exchange
------------

One stream of :data:`PAIR_PROTOCOL`, inside the libp2p Noise session that
already authenticates both peer ids::

    joiner (B)                              shower (A)
    Start(X, name)             ─────▶  one of the code's three attempts used up
                               ◀─────  Answer(Y, confirm_A, name) | Refuse(no_code)
    check confirm_A
    Confirm(confirm_B)         ─────▶  check confirm_B, add B to the trust store
      | Refuse(wrong_code)     ◀─────  Done | Refuse(wrong_code)
    add A to the trust store

``X`` and ``Y`` are the two SPAKE2 messages (the ``spake2`` package, as
magic-wormhole uses it), in its asymmetric form with identity ``A`` the
joiner's peer id and ``B`` the shower's, each side taking both ids from the
Noise session; the derived key hashes in both ids, so a transcript replayed
between other peers gives a different key. The confirmations are HMAC-SHA256
under that key over the transcript (ids, messages, names), one per role, and
are compared in constant time; a device that cannot produce the right one is
refused on both sides.

What an attacker gets: SPAKE2's messages reveal nothing about the code, and a
key confirmation can only be checked against the one password its holder
committed to in its own message; so a recorded or provoked transcript gives no
offline test of any guess, and each exchange is one online guess. A shown code
allows :data:`MAX_ATTEMPTS` exchanges (successful or not) and lives
:data:`CODE_TTL_S` seconds: an active guesser wins with probability 3 in a
million per code shown, and then the code is dead.

Everything here is pure: no I/O, no clock, no randomness (the caller supplies
random bytes and the time).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from spake2 import SPAKE2_A, SPAKE2_B, SPAKEError
from spake2.ed25519_basic import NotOnCurve

from meshagent.errors import DecodeError, LocalProtocolError, RemoteProtocolError
from meshagent.protocol import codec
from meshagent.protocol.codec import field as get
from meshagent.protocol.signed import PeerId

__all__ = [
    "PAIR_PROTOCOL",
    "CODE_TTL_S",
    "MAX_ATTEMPTS",
    "MAX_MESSAGE",
    "ENTROPY_BYTES",
    "Code",
    "device_digits",
    "new_code",
    "parse_code",
    "PendingCode",
    "RefuseReason",
    "Start",
    "Answer",
    "Confirm",
    "Done",
    "Refuse",
    "Message",
    "encode",
    "decode",
    "Input",
    "State",
    "Joiner",
    "Shower",
]

PAIR_PROTOCOL: Final = "/meshagent/pair/2.0.0"
CODE_TTL_S: Final = 120.0
MAX_ATTEMPTS: Final = 3
MAX_MESSAGE: Final = 512
"""Largest pairing frame accepted from a peer (checked before it is read)."""
ENTROPY_BYTES: Final = 64
"""Random bytes a :class:`Joiner` or :class:`Shower` needs (one SPAKE2 scalar)."""

_LABEL: Final = b"meshagent/pair/2"
_ELEMENT: Final = 32
_MAC: Final = 32
_MAX_NAME: Final = 128
_SECRET_DIGITS: Final = 6
_DEVICE_DIGITS: Final = 3
_CODE_RE: Final = re.compile(r"(\d{3})[\s-]*(\d{6})")


# --- the code ------------------------------------------------------------------------


def device_digits(shower: str, secret: str) -> str:
    """The three digits that name the device ``shower`` in a code with this ``secret``."""
    digest = hashlib.sha256(_LABEL + b" device\x00" + shower.encode() + b"\x00" + secret.encode()).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 10**_DEVICE_DIGITS:0{_DEVICE_DIGITS}d}"


@dataclass(frozen=True, slots=True)
class Code:
    """A pairing code: ``device`` (3 digits naming the showing device) and ``secret`` (6 digits)."""

    device: str
    secret: str

    def __str__(self) -> str:
        return f"{self.device}-{self.secret}"

    def shown_by(self, peer: str) -> bool:
        """True when this code names ``peer`` as the device that shows it."""
        return hmac.compare_digest(device_digits(peer, self.secret), self.device)


def new_code(shower: str, random_bytes: bytes) -> Code:
    """A fresh code for the device ``shower`` from at least 8 random bytes (the caller supplies them)."""
    if len(random_bytes) < 8:
        raise LocalProtocolError("a pairing code needs 8 random bytes")
    secret = f"{int.from_bytes(random_bytes[:8], 'big') % 10**_SECRET_DIGITS:0{_SECRET_DIGITS}d}"
    return Code(device_digits(shower, secret), secret)


def parse_code(text: str) -> Code | None:
    """The code typed by the owner (``417-093218``, ``417 093218`` or ``417093218``), or None."""
    m = _CODE_RE.fullmatch(text.strip()) if len(text) <= 32 else None
    return Code(m.group(1), m.group(2)) if m else None


@dataclass(frozen=True, slots=True)
class PendingCode:
    """A code shown on this device, waiting for the other device."""

    code: Code
    expires_at: float
    attempts_left: int = MAX_ATTEMPTS

    def usable(self, now: float) -> bool:
        return now < self.expires_at and self.attempts_left > 0

    def attempt(self) -> PendingCode:
        """The same code with one exchange fewer left (every exchange counts, successful or not)."""
        return PendingCode(self.code, self.expires_at, self.attempts_left - 1)


# --- messages ---------------------------------------------------------------------------


class RefuseReason(enum.StrEnum):
    NO_CODE = "no_code"
    """No pairing code is active on the device asked (none shown, expired, used or out of attempts)."""
    WRONG_CODE = "wrong_code"
    """The other side's key confirmation did not match: the codes differ."""


@dataclass(frozen=True, slots=True)
class Start:
    """Joiner → shower: the joiner's SPAKE2 message."""

    element: bytes
    name: str


@dataclass(frozen=True, slots=True)
class Answer:
    """Shower → joiner: the shower's SPAKE2 message and its key confirmation."""

    element: bytes
    confirm: bytes
    name: str


@dataclass(frozen=True, slots=True)
class Confirm:
    """Joiner → shower: the joiner's key confirmation."""

    confirm: bytes


@dataclass(frozen=True, slots=True)
class Done:
    """Shower → joiner: the joiner is in the shower's trust store."""


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: RefuseReason


Message = Start | Answer | Confirm | Done | Refuse

_TYPES: Final[Mapping[type, int]] = {Start: 1, Answer: 2, Confirm: 3, Done: 4, Refuse: 5}


def encode(msg: Message) -> bytes:
    """One frame payload: a type byte, then a small strict-CBOR map."""
    match msg:
        case Start(element, name):
            body: dict[str, object] = {"x": element, "name": name}
        case Answer(element, confirm, name):
            body = {"y": element, "confirm": confirm, "name": name}
        case Confirm(confirm):
            body = {"confirm": confirm}
        case Done():
            body = {}
        case Refuse(reason):
            body = {"reason": str(reason)}
    return bytes([_TYPES[type(msg)]]) + codec.encode(body)


def decode(frame: bytes) -> Message:
    """Decode one frame from a peer; every failure is a :class:`DecodeError` (a RemoteProtocolError)."""
    if not frame:
        raise DecodeError("empty pairing frame")
    if len(frame) > MAX_MESSAGE:
        raise DecodeError(f"pairing frame of {len(frame)} bytes; the limit is {MAX_MESSAGE}")
    tag = frame[0]
    m = codec.decode_map(bytes(frame[1:]), max_size=MAX_MESSAGE, max_depth=2)
    match tag:
        case 1:
            return Start(_exact(get(m, "x", bytes), _ELEMENT, "SPAKE2 message"), _name(get(m, "name", str)))
        case 2:
            return Answer(_exact(get(m, "y", bytes), _ELEMENT, "SPAKE2 message"),
                          _exact(get(m, "confirm", bytes), _MAC, "key confirmation"), _name(get(m, "name", str)))
        case 3:
            return Confirm(_exact(get(m, "confirm", bytes), _MAC, "key confirmation"))
        case 4:
            return Done()
        case 5:
            try:
                return Refuse(RefuseReason(get(m, "reason", str)))
            except ValueError as exc:
                raise DecodeError(f"unknown pairing refusal {m.get('reason')!r}") from exc
    raise DecodeError(f"unknown pairing message type {tag}")


def _exact(b: bytes, n: int, what: str) -> bytes:
    if len(b) != n:
        raise DecodeError(f"{what} of {len(b)} bytes; expected {n}")
    return b


def _name(s: str) -> str:
    if len(s) > _MAX_NAME or not s.isprintable():
        raise DecodeError("device name too long or not printable")
    return s


# --- state machines ----------------------------------------------------------------------


class Input(enum.Enum):
    SEND_START = enum.auto()
    RECV_START = enum.auto()
    SEND_ANSWER = enum.auto()
    RECV_ANSWER = enum.auto()
    SEND_CONFIRM = enum.auto()
    RECV_CONFIRM = enum.auto()
    SEND_DONE = enum.auto()
    RECV_DONE = enum.auto()
    SEND_REFUSE = enum.auto()
    RECV_REFUSE = enum.auto()


class State(enum.StrEnum):
    IDLE = "idle"
    STARTED = "started"
    """Joiner: Start sent. Shower: Start received, Answer not yet sent."""
    ANSWERED = "answered"
    """Joiner: a verified Answer received. Shower: Answer sent."""
    CONFIRMED = "confirmed"
    """Joiner: Confirm sent. Shower: a verified Confirm received."""
    PAIRED = "paired"
    REFUSED = "refused"
    ERROR = "error"


_JOINER: Final[Mapping[tuple[State, Input], State]] = {
    (State.IDLE, Input.SEND_START): State.STARTED,
    (State.STARTED, Input.RECV_ANSWER): State.ANSWERED,
    (State.STARTED, Input.RECV_REFUSE): State.REFUSED,
    (State.STARTED, Input.SEND_REFUSE): State.REFUSED,
    (State.ANSWERED, Input.SEND_CONFIRM): State.CONFIRMED,
    (State.CONFIRMED, Input.RECV_DONE): State.PAIRED,
    (State.CONFIRMED, Input.RECV_REFUSE): State.REFUSED,
}

_SHOWER: Final[Mapping[tuple[State, Input], State]] = {
    (State.IDLE, Input.RECV_START): State.STARTED,
    (State.STARTED, Input.SEND_ANSWER): State.ANSWERED,
    (State.ANSWERED, Input.RECV_CONFIRM): State.CONFIRMED,
    (State.ANSWERED, Input.RECV_REFUSE): State.REFUSED,
    (State.ANSWERED, Input.SEND_REFUSE): State.REFUSED,
    (State.CONFIRMED, Input.SEND_DONE): State.PAIRED,
    (State.CONFIRMED, Input.SEND_REFUSE): State.REFUSED,
}

_RECV: Final[Mapping[type, Input]] = {
    Start: Input.RECV_START, Answer: Input.RECV_ANSWER, Confirm: Input.RECV_CONFIRM, Done: Input.RECV_DONE,
    Refuse: Input.RECV_REFUSE,
}


def _entropy(random_bytes: bytes) -> Callable[[int], bytes]:
    """An ``entropy_f`` for spake2 that hands out ``random_bytes`` once, and never more."""
    if len(random_bytes) < ENTROPY_BYTES:
        raise LocalProtocolError(f"pairing needs {ENTROPY_BYTES} random bytes")
    pool = bytearray(random_bytes)

    def take(n: int) -> bytes:
        if n > len(pool):
            raise LocalProtocolError("spake2 asked for more randomness than was supplied")
        out = bytes(pool[:n])
        del pool[:n]
        return out

    return take


def _password(secret: str) -> bytes:
    return _LABEL + b"\x00" + secret.encode()


def _lp(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


class _Machine:
    """One side of one pairing exchange. Checks, then moves; a bad input moves to ERROR and raises."""

    _table: Mapping[tuple[State, Input], State]

    def __init__(self, secret: str, joiner: str, shower: str, name: str, random_bytes: bytes) -> None:
        if not (len(secret) == _SECRET_DIGITS and secret.isdigit()):
            raise LocalProtocolError("a pairing secret is six digits")
        self.state = State.IDLE
        self.joiner = PeerId(joiner)
        self.shower = PeerId(shower)
        self.name = "".join(c for c in name if c.isprintable())[:_MAX_NAME]
        self.peer_name = ""
        self.reason: RefuseReason | None = None
        """Why the exchange was refused (by either side), once it was."""
        self._key = b""
        self._x = self._y = b""
        self._entropy = _entropy(random_bytes)

    def _check(self, inp: Input) -> State:
        """The state ``inp`` leads to; a pair missing from the table moves to ERROR and raises."""
        nxt = self._table.get((self.state, inp))
        if nxt is None:
            text = f"{inp.name} in state {self.state}"
            self.state = State.ERROR
            if inp.name.startswith("SEND"):
                raise LocalProtocolError(text)
            raise RemoteProtocolError(f"unexpected pairing message: {text}")
        return nxt

    def _move(self, inp: Input) -> None:
        self.state = self._check(inp)

    def _fail(self, exc: RemoteProtocolError) -> RemoteProtocolError:
        self.state = State.ERROR
        return exc

    def _decode(self, frame: bytes) -> Message:
        try:
            msg = decode(frame)
        except DecodeError as exc:
            raise self._fail(exc) from None
        self._check(_RECV[type(msg)])
        return msg

    def _finish(self, spake: SPAKE2_A | SPAKE2_B, side: bytes, element: bytes) -> bytes:
        try:
            return spake.finish(side + element)
        except (SPAKEError, ValueError, NotOnCurve) as exc:
            raise self._fail(RemoteProtocolError(f"bad SPAKE2 message: {exc}")) from exc

    def _transcript(self, joiner_name: str, shower_name: str) -> bytes:
        return hashlib.sha256(b"".join([
            _LABEL, b" transcript\x00", _lp(self.joiner.encode()), _lp(self.shower.encode()), self._x, self._y,
            _lp(joiner_name.encode()), _lp(shower_name.encode()),
        ])).digest()

    def _confirmation(self, role: bytes, transcript: bytes) -> bytes:
        return hmac.new(self._key, _LABEL + b" confirm " + role + b"\x00" + transcript, hashlib.sha256).digest()

    def _refuse(self, reason: RefuseReason) -> bytes:
        self._move(Input.SEND_REFUSE)
        self.reason = reason
        return encode(Refuse(reason))


class Joiner(_Machine):
    """The side that typed the code. ``start()``, then feed each frame to ``receive``.

    ``receive`` returns the frame to send back, or None. The shell adds the
    shower to its trust store when the state becomes :attr:`State.PAIRED`.
    """

    _table = _JOINER

    def __init__(self, secret: str, *, me: str, shower: str, name: str, random_bytes: bytes) -> None:
        super().__init__(secret, me, shower, name, random_bytes)
        self._spake = SPAKE2_A(_password(secret), idA=self.joiner.encode(), idB=self.shower.encode(), entropy_f=self._entropy)

    def start(self) -> bytes:
        self._move(Input.SEND_START)
        self._x = self._spake.start()[1:]
        return encode(Start(self._x, self.name))

    def receive(self, frame: bytes) -> bytes | None:
        msg = self._decode(frame)
        match msg:
            case Answer(element, confirm, name):
                self._y = element
                self._key = self._finish(self._spake, b"B", element)
                transcript = self._transcript(self.name, name)
                self.peer_name = name
                if not hmac.compare_digest(confirm, self._confirmation(b"shower", transcript)):
                    return self._refuse(RefuseReason.WRONG_CODE)
                self._move(Input.RECV_ANSWER)
                self._move(Input.SEND_CONFIRM)
                return encode(Confirm(self._confirmation(b"joiner", transcript)))
            case Done():
                self._move(Input.RECV_DONE)
            case Refuse(reason):
                self._move(Input.RECV_REFUSE)
                self.reason = reason
        return None


class Shower(_Machine):
    """The side that showed the code; built by the shell for one exchange, after it used up an attempt.

    Feed each frame to ``receive``: a Start gives the Answer to send; a Confirm
    that verifies moves to :attr:`State.CONFIRMED`, where the shell persists the
    joiner in its trust store and then sends :meth:`done` (or :meth:`refuse`
    when the code was used meanwhile); a wrong one gives a Refuse to send.
    """

    _table = _SHOWER

    def __init__(self, secret: str, *, me: str, joiner: str, name: str, random_bytes: bytes) -> None:
        super().__init__(secret, joiner, me, name, random_bytes)
        self._spake = SPAKE2_B(_password(secret), idA=self.joiner.encode(), idB=self.shower.encode(), entropy_f=self._entropy)
        self._transcript_hash = b""

    def receive(self, frame: bytes) -> bytes | None:
        msg = self._decode(frame)
        match msg:
            case Start(element, name):
                self._x = element
                self._y = self._spake.start()[1:]
                self._key = self._finish(self._spake, b"A", element)
                self._move(Input.RECV_START)
                self.peer_name = name
                self._transcript_hash = self._transcript(name, self.name)
                self._move(Input.SEND_ANSWER)
                return encode(Answer(self._y, self._confirmation(b"shower", self._transcript_hash), self.name))
            case Confirm(confirm):
                if not hmac.compare_digest(confirm, self._confirmation(b"joiner", self._transcript_hash)):
                    return self._refuse(RefuseReason.WRONG_CODE)
                self._move(Input.RECV_CONFIRM)
            case Refuse(reason):
                self._move(Input.RECV_REFUSE)
                self.reason = reason
        return None

    def done(self) -> bytes:
        """The joiner proved the code and is stored: tell it."""
        self._move(Input.SEND_DONE)
        return encode(Done())

    def refuse(self, reason: RefuseReason) -> bytes:
        """Refuse a verified joiner after all (the code was used by another exchange meanwhile)."""
        return self._refuse(reason)
