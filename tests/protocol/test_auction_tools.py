"""Issue 11: an agent's tool needs travel in the call for bids; a bidder that cannot host them declines."""

from __future__ import annotations

import dataclasses

from meshagent.protocol import auction
from meshagent.protocol.auction import Bid, Decline, Reservations, make_bid

from .conftest import make_key
from .test_auction import LARGE, call, ctx, pid


def test_a_bidder_declines_tools_bigger_than_it_allows() -> None:
    c = call("home", tool_memory_bytes=64 << 20, tool_fuel=10**9)
    small, _ = make_bid(c, ctx("gpu", (LARGE,), tool_memory_bytes=32 << 20), Reservations(), now=100.0)
    assert isinstance(small, Decline) and small.reason.startswith("tools:")
    stingy, _ = make_bid(c, ctx("gpu", (LARGE,), tool_fuel=10**8), Reservations(), now=100.0)
    assert isinstance(stingy, Decline)
    roomy, _ = make_bid(c, ctx("gpu", (LARGE,)), Reservations(), now=100.0)
    assert isinstance(roomy, Bid)
    assert isinstance(make_bid(call("home"), ctx("gpu", (LARGE,), tool_memory_bytes=0, tool_fuel=0),
                               Reservations(), now=100.0)[0], Bid)  # an agent without tools needs nothing


def test_tool_needs_survive_the_signed_encoding() -> None:
    key = make_key()
    c = call(pid(key), tool_memory_bytes=16 << 20, tool_fuel=5 * 10**8)
    signer, back = auction.decode(auction.encode(c, key))
    assert signer == pid(key) and back == c
    old = dataclasses.replace(c, tool_memory_bytes=0, tool_fuel=0)
    assert auction.decode(auction.encode(old, key))[1] == old
