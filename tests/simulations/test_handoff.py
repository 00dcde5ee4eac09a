import pytest

from meshagent.errors import LocalProtocolError
from meshagent.protocol.handoff import Offer, ReceiverState, SenderState

from simulations import handoff


def test_a_move_walks_the_real_state_machines():
    h = handoff.begin("agent", 3, 1_000_000)
    assert h.sender.state is SenderState.AWAITING_STORED and h.receiver.state is ReceiverState.RECEIVED
    handoff.finish(h)
    assert h.sender.state is SenderState.DONE and h.frames == 6


def test_the_machines_refuse_what_the_protocol_forbids():
    h = handoff.begin("agent", 1, 10)
    with pytest.raises(LocalProtocolError):  # a second offer on the same stream is illegal
        h.sender.send(Offer(b"again"))


def test_receiver_gone_before_storing_aborts():
    h = handoff.begin("agent", 1, 10)
    handoff.abort(h)
    assert h.sender.state is SenderState.ABORTED


def test_every_migration_in_a_run_is_a_full_handoff(quick):
    for workload, row in quick.table.items():
        for name, s in row.items():
            if name == "oracle":
                continue  # no transfer at all in the bound
            # Six messages per completed move, one abort per receiver lost mid-transfer.
            assert 6 * s.migrations <= s.handoff_messages <= 6 * s.migrations + 7 * s.faults, (workload, name)
