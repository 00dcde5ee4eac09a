"""The protocol changes the simulation needed (meshagent/protocol/auction.py), tested on their own."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshagent.protocol import auction
from meshagent.protocol.advert import ModelAd
from meshagent.protocol.auction import (
    Auction,
    Bid,
    BidderContext,
    CallForBids,
    Decline,
    Reservations,
    estimate_for,
    make_bid,
    prefill_tokens,
    uses_kv,
)

LARGE = ModelAd("large", "l" * 64, 1, tags=("size=large",), prefill_tps=1000.0, decode_tps=50.0)
OTHER = ModelAd("other", "o" * 64, 1, tags=("size=large",), prefill_tps=1000.0, decode_tps=50.0)


def call(**kw):
    fields = dict(auction_id="a1", agent_id="ag", home="home", owner="home", requirement="size>=large",
                  context_tokens=10_000, output_tokens=100, privacy="any", policy="latency",
                  snapshot_bytes=1_000_000, issued_at=100.0, bid_deadline=101.0,
                  kv_model_sha256=LARGE.sha256, fresh_tokens=500, kv_bytes=100_000_000)
    fields.update(kw)
    return CallForBids(**fields)


def ctx(me, **kw):
    fields = dict(me=me, models=(LARGE,), price_per_1k_tokens=1.0, slots=1, busy_s=0.0, trusts_owner=False,
                  home_on_link=False, path_bps=1e9, rtt_s=0.01)
    fields.update(kw)
    return BidderContext(**fields)


def test_staying_prefills_only_the_fresh_tokens():
    est = estimate_for(call(), LARGE, ctx("home"), staying=True)
    assert est.prefill_s == pytest.approx(0.5) and est.transfer_s == 0.0
    assert est.price == pytest.approx((100 + 500 * 0.1) / 1000)


def test_a_peer_takes_the_kv_only_when_moving_it_beats_recomputing():
    fast = ctx("peer", path_bps=1e9)  # 0.1 s to move the KV vs 9.5 s to recompute
    assert uses_kv(call(), LARGE, fast, staying=False)
    est = estimate_for(call(), LARGE, fast, staying=False)
    assert est.prefill_s == pytest.approx(0.5)
    assert est.transfer_s == pytest.approx(0.02 + 101_000_000 / 1e9)
    slow = ctx("peer", path_bps=1e6)  # 100 s to move it: recompute instead, and do not ship it
    assert not uses_kv(call(), LARGE, slow, staying=False)
    est = estimate_for(call(), LARGE, slow, staying=False)
    assert est.prefill_s == pytest.approx(10.0) and est.transfer_s == pytest.approx(0.02 + 1.0)
    assert not uses_kv(call(), OTHER, fast, staying=False)  # another model cannot use it


def test_a_former_host_prefills_only_past_its_cached_prefix():
    c = call(kv_model_sha256=OTHER.sha256, kv_bytes=0, fresh_tokens=10_000)
    back = ctx("laptop", cached_model_sha256=LARGE.sha256, cached_tokens=9_000, path_bps=1e6)
    assert prefill_tokens(c, LARGE, back, staying=False) == 1_000
    assert prefill_tokens(c, LARGE, ctx("laptop"), staying=False) == 10_000


def test_defaults_keep_the_old_meaning():
    # No fresh_tokens/kv_bytes: holding the KV means no prefill at all, as before.
    c = call(fresh_tokens=0, kv_bytes=0)
    assert estimate_for(c, LARGE, ctx("peer"), staying=False).prefill_s == 0.0


def test_new_fields_cross_the_wire():
    key = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from meshagent.protocol.signed import peer_id_from_public_key

    me = peer_id_from_public_key(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    c = call(home=me, owner=me)
    _, decoded = auction.decode(auction.encode(c, key))
    assert decoded == c


def test_an_agent_hosted_by_a_stranger_cannot_keep_a_private_step_there():
    # The agent moved to a stranger's GPU for a public step; its next step is private.
    c = call(home="stranger", owner="phone", privacy="private", kv_model_sha256="", fresh_tokens=0, kv_bytes=0)
    answer, _ = make_bid(c, ctx("stranger"), Reservations(), now=100.0)
    assert isinstance(answer, Decline) and "privacy" in answer.reason
    # And even a bid it sent anyway is never ranked.
    a = Auction(c, ["laptop"], owner_devices=frozenset({"phone", "laptop"}), on_link=frozenset())
    stray = Bid("a1", "stranger", "large", LARGE.sha256, 0.0, 0.0, 0.1, 0.1, 0.0, expires_at=200.0)
    assert a.on_bid("stranger", stray, 100.5)
    mine, _ = make_bid(c, ctx("laptop", trusts_owner=True), Reservations(), now=100.0)
    assert isinstance(mine, Bid) and a.on_bid("laptop", mine, 100.5)
    assert a.decide().winner == "laptop"


def test_the_owner_device_as_home_still_stays_for_private_steps():
    c = call(privacy="private")
    answer, _ = make_bid(c, ctx("home"), Reservations(), now=100.0)
    assert isinstance(answer, Bid)


def test_fan_out_skips_peers_known_to_overstate():
    from meshagent.protocol.advert import Advert, Hardware
    from meshagent.protocol.auction import select_bidders

    def ad(peer, tps):
        model = ModelAd("m", "m" * 64, 1, tags=("size=large",), prefill_tps=tps * 10, decode_tps=tps)
        hw = Hardware(arch="x", os="y", cpu_model="z", cpu_cores=1, ram_total=1, ram_free=1)
        return Advert(peer, 1, 0.0, 1e9, peer, (), hw, b"k" * 32, b"s" * 64, b"i", 0.0, models=(model,))

    adverts = {"liar": ad("liar", 1000.0), "honest": ad("honest", 150.0), "slow": ad("slow", 20.0)}
    c = call(privacy="any")
    kw = dict(owner_devices=frozenset(), on_link=frozenset(), fanout=2)
    assert select_bidders(c, adverts, **kw) == ["liar", "honest"]
    assert select_bidders(c, adverts, reliability={"liar": 10.0}, **kw) == ["honest", "liar"]
    assert select_bidders(c, adverts, reliability={"liar": 60.0}, **kw) == ["honest", "slow"]


def test_fan_out_spreads_ties_across_calls_but_not_within_one():
    from meshagent.protocol.advert import Advert, Hardware
    from meshagent.protocol.auction import select_bidders

    hw = Hardware(arch="x", os="y", cpu_model="z", cpu_cores=1, ram_total=1, ram_free=1)
    model = ModelAd("m", "m" * 64, 1, tags=("size=large",), prefill_tps=1000.0, decode_tps=100.0)
    adverts = {f"gpu{i}": Advert(f"gpu{i}", 1, 0.0, 1e9, "g", (), hw, b"k" * 32, b"s" * 64, b"i", 0.0, models=(model,))
               for i in range(40)}
    kw = dict(owner_devices=frozenset(), on_link=frozenset(), fanout=4)
    first = select_bidders(call(auction_id="x1"), adverts, **kw)
    assert first == select_bidders(call(auction_id="x1"), adverts, **kw)  # deterministic
    asked = {p for i in range(20) for p in select_bidders(call(auction_id=f"x{i}"), adverts, **kw)}
    assert len(asked) > 20
