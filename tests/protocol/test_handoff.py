"""Handoff state machines: a pair harness, illegal moves, the wire codec and the recovery table."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from meshagent.errors import DecodeError, LocalProtocolError, MeshError, RemoteProtocolError
from meshagent.protocol import codec
from meshagent.protocol import handoff as h

A, G = "agent-1", 7


def pair() -> tuple[h.HandoffSender, h.HandoffReceiver]:
    return h.HandoffSender(A, G), h.HandoffReceiver(max_body=1 << 20)


def deliver(frm, to, msg):
    """Send ``msg`` from one machine and feed its decoded frame to the other."""
    return to.receive(h.decode(frm.send(msg)))


def test_happy_path_in_memory():
    s, r = pair()
    deliver(s, r, h.Offer(b"signed header"))
    r.accepted_header(A, G)
    deliver(r, s, h.Accept(have=("module",), bulk_addrs=("127.0.0.1:5000",), token=b"t" * 32))
    deliver(s, r, h.Body(h.Via.STREAM, 100))
    s.body_progress(60)
    r.body_progress(60)
    assert (s.state, r.state) == (h.SenderState.SENDING, h.ReceiverState.RECEIVING)
    s.body_progress(40)
    r.body_progress(40)
    assert (s.state, r.state) == (h.SenderState.AWAITING_STORED, h.ReceiverState.RECEIVED)
    deliver(r, s, h.Stored(A, G))
    deliver(s, r, h.Commit(A, G))
    deliver(r, s, h.Resumed(A, G))
    assert (s.state, r.state) == (h.SenderState.DONE, h.ReceiverState.DONE)


def test_reject_ends_it():
    s, r = pair()
    deliver(s, r, h.Offer(b"x"))
    msg = deliver(r, s, h.Reject(h.RejectReason.STALE, "generation 7 <= 9"))
    assert msg == h.Reject(h.RejectReason.STALE, "generation 7 <= 9")
    assert s.state is h.SenderState.REJECTED and r.state is h.ReceiverState.REJECTED
    with pytest.raises(LocalProtocolError):
        s.send(h.Body(h.Via.STREAM, 1))


def test_receiver_cannot_be_committed_before_it_stored():
    s, r = pair()
    deliver(s, r, h.Offer(b"x"))
    r.accepted_header(A, G)
    deliver(r, s, h.Accept())
    deliver(s, r, h.Body(h.Via.STREAM, 10))
    r.body_progress(5)  # the sender stops mid-stream
    with pytest.raises(RemoteProtocolError):
        r.receive(h.Commit(A, G))
    r.receive(h.Abort("sender went away"))
    assert r.state is h.ReceiverState.ABORTED


def test_sender_cannot_commit_without_stored_nor_abort_after_commit():
    s, r = pair()
    deliver(s, r, h.Offer(b"x"))
    deliver(r, s, h.Accept())
    with pytest.raises(LocalProtocolError):
        s.send(h.Commit(A, G))
    s.send(h.Body(h.Via.BULK, 0))
    s.body_progress(0)
    s.receive(h.Stored(A, G))
    s.send(h.Commit(A, G))
    with pytest.raises(LocalProtocolError):
        s.send(h.Abort("too late"))
    with pytest.raises(RemoteProtocolError):
        s.receive(h.Abort("too late"))


def test_acknowledgements_must_name_this_handoff():
    s, r = pair()
    deliver(s, r, h.Offer(b"x"))
    deliver(r, s, h.Accept())
    s.send(h.Body(h.Via.STREAM, 1))
    s.body_progress(1)
    with pytest.raises(RemoteProtocolError):
        s.receive(h.Stored(A, G - 1))


def test_body_larger_than_limit_is_refused():
    r = h.HandoffReceiver(max_body=10)
    r.receive(h.Offer(b"x"))
    r.send(h.Accept())
    with pytest.raises(RemoteProtocolError):
        r.receive(h.Body(h.Via.STREAM, 11))


def test_body_overrun_is_refused():
    s, r = pair()
    deliver(s, r, h.Offer(b"x"))
    deliver(r, s, h.Accept())
    deliver(s, r, h.Body(h.Via.STREAM, 3))
    with pytest.raises(RemoteProtocolError):
        r.body_progress(4)


ALL = [
    h.Offer(b"\x01\x02"),
    h.Accept(("module",), ("10.0.0.1:4000",), b"k" * 32),
    h.Reject(h.RejectReason.FULL, "no room"),
    h.Body(h.Via.BULK, 123),
    h.Stored(A, G),
    h.Commit(A, G),
    h.Resumed(A, G),
    h.Abort("bye"),
    h.Query(A, G),
    h.Status(A, G, "committed"),
]


@pytest.mark.parametrize("msg", ALL, ids=lambda m: type(m).__name__)
def test_wire_round_trip(msg):
    assert h.decode(h.encode(msg)) == msg


@pytest.mark.parametrize(
    "frame",
    [b"", b"\x63" + codec.encode({}), b"\x03" + codec.encode({"reason": "nope", "detail": ""}),
     b"\x05" + codec.encode({"agent": "", "gen": 1}), b"\x05" + codec.encode({"agent": "a", "gen": -1}),
     b"\x0a" + codec.encode({"agent": "a", "gen": 1, "decision": "maybe"}), b"\x01",
     b"\x02" + codec.encode({"have": [1], "bulk": [], "token": b""})],
)
def test_bad_frames(frame):
    with pytest.raises(DecodeError):
        h.decode(frame)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decode_raw(data):
    try:
        h.decode(data)
    except MeshError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 12), st.dictionaries(st.sampled_from(["have", "bulk", "token", "reason", "detail", "via", "size",
                                                            "agent", "gen", "decision"]),
                                           st.none() | st.booleans() | st.integers() | st.text(max_size=5)
                                           | st.binary(max_size=70) | st.lists(st.text(max_size=3) | st.integers(), max_size=3)))
def test_fuzz_decode_fields(tag, fields):
    try:
        h.decode(bytes([tag]) + codec.encode(fields))
    except MeshError:
        pass


def test_recovery_rules():
    assert h.recovery_action("sender", "awaiting_stored") is h.Action.ABORT_AND_THAW
    assert h.recovery_action("sender", "offered") is h.Action.ABORT_AND_THAW
    assert h.recovery_action("sender", "stored") is h.Action.COMMIT
    assert h.recovery_action("sender", "committed") is h.Action.RESEND_COMMIT
    assert h.recovery_action("receiver", "receiving") is h.Action.DISCARD_PARTIAL
    assert h.recovery_action("receiver", "stored") is h.Action.ASK_SENDER
    assert h.recovery_action("receiver", "committed") is h.Action.ADOPT
    # every persisted state of both machines has a rule
    for state in h.SenderState:
        if state is not h.SenderState.IDLE:
            h.recovery_action("sender", state.value)
    for state in h.ReceiverState:
        if state is not h.ReceiverState.IDLE:
            h.recovery_action("receiver", state.value)
    with pytest.raises(LocalProtocolError):
        h.recovery_action("sender", "bogus")
