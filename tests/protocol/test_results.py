"""The results relay's messages and the owner's decisions (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshagent.errors import DecodeError, FrameTooLarge
from meshagent.protocol import codec
from meshagent.protocol import results as rp
from meshagent.protocol.results import (
    AgentResult,
    ChildrenNotice,
    Custody,
    CustodyNotice,
    FetchReply,
    FetchRequest,
    Reply,
    ResultReport,
    Verdict,
)
from meshagent.protocol.signed import PeerId

OWNER, HOLDER, NEXT, STRANGER = (PeerId(f"12D3KooW{c * 44}") for c in "OHNS")


def result(agent_id: str = "a1b2c3d4e5f6", **kw) -> AgentResult:
    base = dict(agent_id=agent_id, parent_id=None, status="exited", exit_code=0, stdout=b"out\n", stderr=b"",
                host_calls=7, error=None, children=())
    return AgentResult(**{**base, **kw})


@pytest.mark.parametrize("msg", [
    ResultReport(result()),
    ResultReport(result(parent_id="ffffffffffff", status="failed", exit_code=None, error="AgentTrap: boom",
                        children=("0123456789ab",))),
    CustodyNotice("a1b2c3d4e5f6", 3, NEXT),
    ChildrenNotice("a1b2c3d4e5f6", ("0123456789ab", "ba9876543210")),
    FetchRequest("a1b2c3d4e5f6"),
])
def test_requests_round_trip(msg):
    assert rp.decode_request(rp.encode(msg)) == msg


def test_replies_round_trip():
    assert rp.decode_reply(rp.encode(Reply(False, "later"))) == Reply(False, "later")
    assert rp.decode_fetch_reply(rp.encode(FetchReply(result()))) == FetchReply(result())
    assert rp.decode_fetch_reply(rp.encode(FetchReply(None, "no"))) == FetchReply(None, "no")


def _raw(**changes) -> bytes:
    wire = {**result().to_wire(), **changes}
    return codec.encode({"t": "result", "result": wire})


@pytest.mark.parametrize("changes, why", [
    ({"status": "suspended"}, "status"),
    ({"status": "running"}, "status"),
    ({"stdout": b"x" * (rp.MAX_OUTPUT + 1)}, "output"),
    ({"stdout": b"x" * (rp.MAX_OUTPUT // 2), "stderr": b"y" * (rp.MAX_OUTPUT // 2 + 1)}, "output"),
    ({"error": "e" * (rp.MAX_ERROR + 1)}, "error"),
    ({"children": ["0123456789ab"] * (rp.MAX_CHILDREN + 1)}, "children"),
    ({"children": [1, 2]}, "agent ids"),
    ({"agent_id": ""}, "agent id"),
    ({"agent_id": "../../etc"}, "agent id"),
    ({"agent_id": "x" * 65}, "agent id"),
    ({"exit_code": 1 << 40}, "range"),
    ({"host_calls": -1}, "range"),
    ({"exit_code": True}, "bool"),
])
def test_a_malformed_result_is_refused_at_decode(changes, why):
    with pytest.raises(DecodeError, match=why):
        rp.decode_request(_raw(**changes))


def test_a_frame_past_the_limit_is_refused_before_decoding():
    with pytest.raises(FrameTooLarge):
        rp.decode_request(b"\xa0" + b"\x00" * rp.MAX_MESSAGE)


@pytest.mark.parametrize("raw", [
    {"t": "custody", "agent_id": "a1b2c3d4e5f6", "generation": -1, "holder": str(NEXT)},
    {"t": "custody", "agent_id": "a1b2c3d4e5f6", "generation": 1 << 63, "holder": str(NEXT)},
    {"t": "custody", "agent_id": "a1b2c3d4e5f6", "generation": 1, "holder": "not a peer/id"},
    {"t": "children", "parent_id": "a1b2c3d4e5f6", "children": []},
    {"t": "steal", "agent_id": "a1b2c3d4e5f6"},
])
def test_malformed_notices_are_refused(raw):
    with pytest.raises(DecodeError):
        rp.decode_request(codec.encode(raw))


def test_a_sender_cuts_its_output_to_the_limit_and_says_so():
    big = result(stdout=b"o" * (rp.MAX_OUTPUT - 10), stderr=b"e" * 100).bounded()
    assert len(big.stdout) + len(big.stderr) == rp.MAX_OUTPUT and "cut" in (big.error or "")
    assert rp.decode_request(rp.encode(ResultReport(big))) == ResultReport(big)
    assert result().bounded() == result()


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_a_decode_error(data):
    for decode in (rp.decode_request, rp.decode_reply, rp.decode_fetch_reply):
        try:
            decode(data)
        except DecodeError:
            pass


# --- decisions ----------------------------------------------------------------------------------


def test_a_result_is_accepted_only_from_the_holder_of_an_agent_owned_here():
    held = Custody(HOLDER, 2)
    assert rp.judge_report(held, HOLDER, have_result=False) is Verdict.ACCEPT
    assert rp.judge_report(held, HOLDER, have_result=True) is Verdict.DUPLICATE
    assert rp.judge_report(held, STRANGER, have_result=False) is Verdict.LATER
    assert rp.judge_report(held, OWNER, have_result=False) is Verdict.LATER
    assert rp.judge_report(None, HOLDER, have_result=False) is Verdict.LATER  # not owned here (or not known yet)
    assert rp.judge_report(Custody(OWNER), STRANGER, have_result=False) is Verdict.LATER  # runs at home


def test_custody_moves_only_forward_and_only_on_the_holders_word():
    held = Custody(HOLDER, 2)
    assert rp.judge_custody(held, HOLDER, CustodyNotice("a", 3, NEXT)) is Verdict.ACCEPT
    assert rp.judge_custody(held, STRANGER, CustodyNotice("a", 3, STRANGER)) is Verdict.LATER
    assert rp.judge_custody(held, STRANGER, CustodyNotice("a", (1 << 63) - 1, STRANGER)) is Verdict.LATER
    # Older or repeated notices (from anyone) change nothing and are acknowledged.
    assert rp.judge_custody(held, HOLDER, CustodyNotice("a", 2, NEXT)) is Verdict.DUPLICATE
    assert rp.judge_custody(held, STRANGER, CustodyNotice("a", 1, STRANGER)) is Verdict.DUPLICATE
    assert rp.judge_custody(None, HOLDER, CustodyNotice("a", 3, NEXT)) is Verdict.LATER
    # An agent at home is moved only by this node's own handoffs.
    assert rp.judge_custody(Custody(OWNER, 4), STRANGER, CustodyNotice("a", 5, STRANGER)) is Verdict.LATER


def test_children_are_recorded_only_from_the_parents_holder_and_bounded_for_strangers():
    held = Custody(HOLDER, 0)
    notice = ChildrenNotice("p", ("c1", "c2"))
    assert rp.judge_children(held, HOLDER, notice, new=2, held_by_sender=1, sender_trusted=False) is Verdict.ACCEPT
    assert rp.judge_children(held, STRANGER, notice, new=2, held_by_sender=0, sender_trusted=False) is Verdict.LATER
    assert rp.judge_children(None, HOLDER, notice, new=2, held_by_sender=0, sender_trusted=False) is Verdict.LATER
    assert rp.judge_children(held, HOLDER, notice, new=0, held_by_sender=1, sender_trusted=False) is Verdict.DUPLICATE
    full = rp.MAX_HELD_PER_PEER - 1
    assert rp.judge_children(held, HOLDER, notice, new=2, held_by_sender=full, sender_trusted=False) is Verdict.REFUSE
    assert rp.judge_children(held, HOLDER, notice, new=2, held_by_sender=full, sender_trusted=True) is Verdict.ACCEPT


def test_fetch_is_answered_to_paired_devices_and_the_parents_holder_only():
    assert rp.may_fetch(STRANGER, trusted=True, parent=None)
    assert rp.may_fetch(HOLDER, trusted=False, parent=Custody(HOLDER, 1))
    assert not rp.may_fetch(STRANGER, trusted=False, parent=Custody(HOLDER, 1))
    assert not rp.may_fetch(STRANGER, trusted=False, parent=None)
