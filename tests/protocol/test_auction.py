import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

from meshagent.errors import ExpiredError, RemoteProtocolError, SignatureError
from meshagent.protocol import auction
from meshagent.protocol.advert import ModelAd
from meshagent.protocol.auction import (
    Auction,
    BidderContext,
    Bid,
    CallForBids,
    Decline,
    ModelRequirement,
    Reservations,
    StepSituation,
    make_bid,
    select_bidders,
    why_auction,
)
from meshagent.protocol.signed import peer_id_from_public_key
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .conftest import make_advert, make_key

SMALL = ModelAd("small", "s" * 64, 1, tags=("size=small",), prefill_tps=200.0, decode_tps=20.0)
LARGE = ModelAd("large", "l" * 64, 1, tags=("size=large",), prefill_tps=2000.0, decode_tps=80.0)


def pid(key):
    return peer_id_from_public_key(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def call(home, **kw):
    fields = dict(auction_id="a1", agent_id="ag", home=home, owner=home, requirement="size>=medium",
                  context_tokens=1000, output_tokens=100, privacy="any", policy="latency",
                  snapshot_bytes=1_000_000, issued_at=100.0, bid_deadline=101.0)
    fields.update(kw)
    return CallForBids(**fields)


def ctx(me, models, **kw):
    fields = dict(me=me, models=models, price_per_1k_tokens=0.0, slots=1, busy_s=0.0, trusts_owner=False,
                  home_on_link=False, path_bps=10e6, rtt_s=0.01)
    fields.update(kw)
    return BidderContext(**fields)


def test_requirements():
    assert ModelRequirement("size>=medium").satisfied_by(LARGE)
    assert not ModelRequirement("size>=medium").satisfied_by(SMALL)
    assert ModelRequirement("small").satisfied_by(SMALL)
    assert ModelRequirement("").satisfied_by(SMALL)
    assert not ModelRequirement("").satisfied_by(dataclasses.replace(SMALL, kind="embed"))


def test_bidder_refuses_what_privacy_forbids_and_reserves_what_it_bids():
    c = call("home", privacy="private")
    answer, res = make_bid(c, ctx("gpu", (LARGE,)), Reservations(), now=100.0)
    assert isinstance(answer, Decline) and "privacy" in answer.reason and res.held == {}
    answer, res = make_bid(c, ctx("gpu", (LARGE,), trusts_owner=True), Reservations(), now=100.0)
    assert isinstance(answer, Bid) and "a1" in res.held
    # The reservation makes the next bid queue behind it.
    second, _ = make_bid(dataclasses.replace(c, auction_id="a2"), ctx("gpu", (LARGE,), trusts_owner=True), res, now=100.0)
    assert second.queue_s > answer.queue_s
    # ...until it expires.
    third, _ = make_bid(dataclasses.replace(c, auction_id="a3", bid_deadline=200.0), ctx("gpu", (LARGE,), trusts_owner=True), res, now=150.0)
    assert third.queue_s == answer.queue_s


def test_kv_makes_prefill_free_and_staying_makes_transfer_free():
    c = call("home", kv_model_sha256=LARGE.sha256)
    away, _ = make_bid(c, ctx("gpu", (LARGE,)), Reservations(), now=100.0)
    assert away.prefill_s == 0.0 and away.transfer_s > 0
    home, _ = make_bid(call("home"), ctx("home", (LARGE,)), Reservations(), now=100.0)
    assert home.transfer_s == 0.0 and home.prefill_s == pytest.approx(1000 / 2000.0)


def test_no_model_expired_battery():
    assert isinstance(make_bid(call("h"), ctx("p", (SMALL,)), Reservations(), now=100.0)[0], Decline)
    assert isinstance(make_bid(call("h"), ctx("p", (LARGE,)), Reservations(), now=102.0)[0], Decline)
    low = ctx("p", (LARGE,), on_battery=True, battery_percent=5.0)
    assert make_bid(call("h"), low, Reservations(), now=100.0)[0].reason == "on battery"
    hot = ctx("p", (LARGE,), hot=True)
    assert make_bid(call("h"), hot, Reservations(), now=100.0)[0].reason == "hot"
    # A hot home still bids to keep its own agent (the auction decides whether it moves).
    assert isinstance(make_bid(call("p"), hot, Reservations(), now=100.0)[0], Bid)


def test_why_auction_names_each_trigger_in_order():
    calm = StepSituation(requirement="size>=large")
    assert why_auction(calm) is None
    assert "explicit" in why_auction(dataclasses.replace(calm, forced=True, has_model=False))
    assert why_auction(dataclasses.replace(calm, has_model=False)) == "this node holds no model for 'size>=large'"
    assert "private" in why_auction(dataclasses.replace(calm, private_away=True, hot=True))
    assert why_auction(dataclasses.replace(calm, on_battery=True, battery_percent=15.0)) == "on battery at 15%"
    assert why_auction(dataclasses.replace(calm, on_battery=True, battery_percent=15.0), battery_floor=10.0) is None
    assert why_auction(dataclasses.replace(calm, on_battery=False, battery_percent=5.0)) is None  # plugged in
    assert why_auction(dataclasses.replace(calm, hot=True)) == "the device is hot"
    late = dataclasses.replace(calm, deadline_s=1.0, local_estimate_s=2.5)
    assert why_auction(late) == "deadline 1.00 s cannot be met here (expected 2.50 s)"
    assert why_auction(dataclasses.replace(late, local_estimate_s=0.5)) is None
    assert why_auction(dataclasses.replace(late, local_estimate_s=None)) is None
    # The winner of the step's auction runs it: soft triggers do not move the agent on again...
    assert why_auction(dataclasses.replace(late, won_here=True, hot=True, on_battery=True, battery_percent=1.0)) is None
    # ...hard ones still do.
    assert why_auction(dataclasses.replace(late, won_here=True, has_model=False)) is not None
    assert why_auction(dataclasses.replace(late, won_here=True, private_away=True)) is not None


def test_auction_end_to_end_in_memory():
    home, gpu, stranger = "home", "gpu", "stranger"
    c = call(home, requirement="", privacy="lan")
    a = Auction(c, [gpu, stranger], owner_devices=frozenset(), on_link=frozenset({gpu}))
    for me, models in ((home, (SMALL,)), (gpu, (LARGE,)), (stranger, (LARGE,))):
        bid, _ = make_bid(c, ctx(me, models, home_on_link=True), Reservations(), now=100.0)
        assert a.on_bid(me, bid, 100.5)
    assert a.answered()
    d = a.decide()
    assert d.winner == gpu  # stranger is not on the link: never ranked
    assert all(r.candidate.peer != stranger for r in d.ranked)
    award, releases = a.award(d, now=100.6)
    assert award.winner == gpu and {p for p, _ in releases} == {home, stranger}


def test_auction_ignores_uninvited_late_and_duplicate_bids():
    c = call("home", requirement="")
    a = Auction(c, ["p1"], owner_devices=frozenset(), on_link=frozenset())
    bid, _ = make_bid(c, ctx("p1", (LARGE,)), Reservations(), now=100.0)
    assert not a.on_bid("p2", dataclasses.replace(bid, bidder="p2"), 100.1)  # not invited
    assert not a.on_bid("p3", bid, 100.1)  # signer is not the bidder
    assert not a.on_bid("p1", bid, 101.5)  # after the deadline
    assert a.on_bid("p1", bid, 100.1)
    assert not a.on_bid("p1", bid, 100.2)  # duplicate
    assert a.decide().winner == "p1"


def test_no_bids_keeps_agent_home():
    a = Auction(call("home"), ["p1"], owner_devices=frozenset(), on_link=frozenset())
    d = a.decide()
    assert d.winner is None and d.reason == "no bids"


def test_select_bidders_is_bounded_and_filtered():
    keys = [make_key() for _ in range(30)]
    adverts = {}
    for i, k in enumerate(keys):
        models = (LARGE,) if i % 2 else (SMALL,)
        ad = make_advert(k, models=models)
        adverts[ad.peer_id] = ad
    chosen = select_bidders(call("home", privacy="any"), adverts, owner_devices=frozenset(), on_link=frozenset(), fanout=8)
    assert len(chosen) == 8 and all(adverts[p].models == (LARGE,) for p in chosen)
    own = frozenset(list(adverts)[:3])
    private = select_bidders(call("home", privacy="private"), adverts, owner_devices=own, on_link=frozenset())
    assert set(private) <= own


def test_signed_messages_roundtrip_and_refuse_forgery():
    hk, bk = make_key(), make_key()
    c = call(pid(hk))
    signer, msg = auction.decode(auction.encode(c, hk), now=100.5)
    assert signer == pid(hk) and msg == c
    with pytest.raises(SignatureError):
        auction.decode(auction.encode(c, bk))  # home field names someone else
    with pytest.raises(ExpiredError):
        auction.decode(auction.encode(c, hk), now=200.0)
    bid, _ = make_bid(c, ctx(pid(bk), (LARGE,)), Reservations(), now=100.0)
    assert auction.decode(auction.encode(bid, bk), now=100.1)[1] == bid
    blob = bytearray(auction.encode(bid, bk))
    for i in range(0, len(blob), 7):
        bad = bytearray(blob)
        bad[i] ^= 0x40
        try:
            auction.decode(bytes(bad))
        except RemoteProtocolError:
            continue
        raise AssertionError(f"flipping byte {i} was accepted")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(data):
    try:
        auction.decode(data)
    except RemoteProtocolError:
        pass


# --- everything a peer writes is checked at decode ---------------------------------------

from meshagent.errors import DecodeError, LocalProtocolError
from meshagent.protocol import codec, signed
from meshagent.protocol.scoring import Policy, PrivacyClass


def _signed(kind: str, payload: dict, key) -> bytes:
    """A message as a peer could send it: any payload, validly signed (bypassing the dataclass checks)."""
    return codec.encode({"k": kind, "e": signed.sign(kind, codec.encode(payload), key)})


def _raw_call(key, **fields) -> bytes:
    payload = dataclasses.asdict(call(pid(key)))
    payload.update(fields)
    return _signed("auction-cfb/1", payload, key)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"requirement": "size>=huge"}, "unknown model size 'huge'"),
        ({"requirement": "size=" + "x" * 300}, "requirement"),
        ({"privacy": "secret"}, "unknown privacy"),
        ({"privacy": "ANY"}, "unknown privacy"),
        ({"policy": "fastest"}, "unknown policy"),
        ({"policy": 3}, "policy"),
        ({"issued_at": float("nan")}, "issued_at"),
        ({"bid_deadline": float("inf")}, "bid_deadline"),
        ({"max_price": -1.0}, "max_price"),
        ({"deadline_s": float("nan")}, "deadline_s"),
        ({"context_tokens": -1}, "context_tokens"),
        ({"kv_bytes": 1 << 63}, "kv_bytes"),
        ({"agent_id": "a" * 300}, "agent_id"),
    ],
)
def test_a_peers_bad_call_field_is_refused_at_decode(fields, reason):
    hk = make_key()
    with pytest.raises(DecodeError, match=reason):
        auction.decode(_raw_call(hk, **fields))


def test_a_decoded_call_holds_enums_and_a_parsed_requirement():
    hk = make_key()
    _, msg = auction.decode(auction.encode(call(pid(hk), privacy="lan", policy="cost"), hk))
    assert msg.privacy is PrivacyClass.LAN and msg.policy is Policy.COST
    assert msg.need == ModelRequirement("size>=medium")


def test_a_local_call_with_an_unknown_size_is_refused_when_made():
    # This node's own mistake is a LocalProtocolError, at once, never a bid that fails later.
    with pytest.raises(LocalProtocolError, match="unknown model size"):
        call("home", requirement="size>=huge")
    with pytest.raises(LocalProtocolError, match="privacy"):
        call("home", privacy="secret")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"transfer_s": float("inf")}, "transfer_s"),
        ({"price": -0.1}, "price"),
        ({"decode_s": float("nan")}, "decode_s"),
        ({"model_name": "m" * 257}, "model_name"),
        ({"expires_at": "soon"}, "expires_at"),
    ],
)
def test_a_peers_bad_bid_field_is_refused_at_decode(fields, reason):
    bk = make_key()
    bid, _ = make_bid(call("home", requirement=""), ctx(pid(bk), (LARGE,)), Reservations(), now=100.0)
    payload = {**dataclasses.asdict(bid), **fields}
    with pytest.raises(DecodeError, match=reason):
        auction.decode(_signed("auction-bid/1", payload, bk))


_HK = make_key()
_FIELD_VALUES = st.one_of(st.text(max_size=12), st.sampled_from(["size>=huge", "size<=tiny", "size=xl", "lan", "cost"]),
                          st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 1 << 64), st.none(),
                          st.booleans())


_REQUIREMENTS = st.one_of(
    st.builds(lambda op, word: f"size{op}{word}", st.sampled_from([">=", "=", "<=", " >= "]),
              st.sampled_from(["tiny", "small", "large", "xl", "huge", "giant"]) | st.text("abxyz", min_size=1, max_size=4)),
    st.text(max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(CallForBids)]), _FIELD_VALUES, max_size=4),
       _REQUIREMENTS)
def test_any_call_that_decodes_can_be_bid_on(changes, requirement):
    """Whatever a peer writes: decode refuses it (a RemoteProtocolError) or bidding on it raises nothing."""
    payload = {**dataclasses.asdict(call(pid(_HK), requirement="")), "requirement": requirement, **changes}
    try:
        _, msg = auction.decode(_signed("auction-cfb/1", payload, _HK))
    except RemoteProtocolError:
        return
    for models in ((SMALL,), (LARGE,), ()):
        make_bid(msg, ctx(pid(make_key()), models), Reservations(), now=100.0)
        select_bidders(msg, {}, owner_devices=frozenset(), on_link=frozenset())
