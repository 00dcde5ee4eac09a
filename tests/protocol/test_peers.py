import dataclasses

from meshagent.protocol.advert import Goodbye
from meshagent.protocol.peers import Outcome, PeerTable

from .conftest import make_advert


def test_new_update_stale(key):
    t = PeerTable()
    t, o = t.apply_advert(make_advert(key, seq=5), 1000.0)
    assert o is Outcome.NEW and len(t) == 1
    t2, o = t.apply_advert(make_advert(key, seq=5), 1001.0)
    assert o is Outcome.STALE and t2 is t
    t3, o = t.apply_advert(make_advert(key, seq=4), 1001.0)
    assert o is Outcome.STALE and t3 is t
    t4, o = t.apply_advert(make_advert(key, seq=6, name="renamed"), 1001.0)
    assert o is Outcome.UPDATED and t4[make_advert(key).peer_id].advert.name == "renamed"


def test_expiry(key):
    t, _ = PeerTable().apply_advert(make_advert(key, now=1000.0, ttl=12.0), 1000.0)
    t, gone = t.expire(1011.0)
    assert gone == () and len(t) == 1
    t, gone = t.expire(1012.5)
    assert len(gone) == 1 and len(t) == 0


def test_expired_advert_not_added(key):
    t, o = PeerTable().apply_advert(make_advert(key, now=1000.0, ttl=12.0), 1020.0)
    assert o is Outcome.EXPIRED and len(t) == 0


def test_goodbye(key):
    ad = make_advert(key, seq=5)
    t, _ = PeerTable().apply_advert(ad, 1000.0)
    t2, o = t.apply_goodbye(Goodbye(ad.peer_id, 6, b"other-instance.."))
    assert o is Outcome.STALE and len(t2) == 1
    t3, o = t.apply_goodbye(Goodbye(ad.peer_id, 6, ad.instance))
    assert o is Outcome.REMOVED and len(t3) == 0


def test_second_instance_of_identity_refused(key):
    first = make_advert(key, seq=5, instance=b"a" * 16, started_at=900.0)
    second = make_advert(key, seq=9, instance=b"b" * 16, started_at=950.0)
    t, _ = PeerTable().apply_advert(first, 1000.0)
    t2, o = t.apply_advert(second, 1000.0)
    assert o is Outcome.DUPLICATE and t2[first.peer_id].advert.instance == first.instance
    # Seen the other way round, the older instance takes the identity back.
    t, _ = PeerTable().apply_advert(second, 1000.0)
    t2, o = t.apply_advert(dataclasses.replace(first, seq=3), 1000.0)
    assert o is Outcome.UPDATED and t2[first.peer_id].advert.instance == first.instance


def test_restarted_instance_replaces_a_silent_one(key):
    # A node SIGKILLed at 990 (last advert issued then) and restarted at 995: no goodbye was sent,
    # the old advert has not expired yet, but the new instance takes the entry at once.
    old = make_advert(key, seq=5, now=990.0, instance=b"a" * 16, started_at=900.0)
    new = make_advert(key, seq=9, now=996.0, instance=b"b" * 16, started_at=995.0)
    t, _ = PeerTable().apply_advert(old, 996.0)
    t2, o = t.apply_advert(new, 996.0)
    assert o is Outcome.UPDATED and t2[old.peer_id].advert.instance == new.instance
    # Had the old instance been alive (an advert issued after 995), it would take the identity back.
    t3, o = t2.apply_advert(dataclasses.replace(old, seq=6, issued_at=997.0), 997.0)
    assert o is Outcome.UPDATED and t3[old.peer_id].advert.instance == old.instance
    _, o = t3.apply_advert(dataclasses.replace(new, seq=10), 997.0)
    assert o is Outcome.DUPLICATE


def test_rtt(key):
    ad = make_advert(key)
    t, _ = PeerTable().apply_advert(ad, 1000.0)
    assert t.apply_rtt(ad.peer_id, 1.5)[ad.peer_id].rtt_ms == 1.5


# --- bounds: the table, and each relay's share -------------------------------------

from hypothesis import given, settings, strategies as st

from meshagent.protocol.signed import PeerId

from .conftest import make_key

KEYS = [make_key() for _ in range(12)]
ADS = [make_advert(k, seq=1, now=1000.0) for k in KEYS]
RELAY, OTHER = PeerId("relay"), PeerId("other-relay")


def test_an_entry_lives_its_lifetime_from_receipt_not_the_issuers_clock(key):
    # Issued 29 s "in the future" (within the skew allowed), lifetime 12 s: gone 12 s after receipt.
    ad = make_advert(key, now=1029.0, ttl=12.0)
    t, o = PeerTable().apply_advert(ad, 1000.0)
    assert o is Outcome.NEW and t[ad.peer_id].expires_at == 1012.0
    assert t.expire(1011.9)[1] == ()
    assert t.expire(1012.0)[1] == (ad.peer_id,)


def test_a_relay_adds_at_most_its_share():
    t = PeerTable(max_per_source=3)
    outcomes = []
    for ad in ADS[:5]:
        t, o = t.apply_advert(ad, 1000.0, source=RELAY)
        outcomes.append(o)
    assert outcomes == [Outcome.NEW] * 3 + [Outcome.REFUSED] * 2
    assert len(t) == 3 and t.relayed_by(RELAY) == 3
    # Another relay has its own share; a peer speaking for itself is not counted against anyone.
    t, o = t.apply_advert(ADS[3], 1000.0, source=OTHER)
    assert o is Outcome.NEW and t.relayed_by(OTHER) == 1
    t, o = t.apply_advert(ADS[4], 1000.0)
    assert o is Outcome.NEW and t[ADS[4].peer_id].source is None


def test_a_relayed_entry_becomes_direct_when_its_node_speaks():
    t = PeerTable(max_per_source=2)
    t, _ = t.apply_advert(ADS[0], 1000.0, source=RELAY)
    t, _ = t.apply_advert(ADS[1], 1000.0, source=RELAY)
    # The same advert again, now from its own node (gossip it published): no longer the relay's.
    t, o = t.apply_advert(ADS[0], 1001.0, source=ADS[0].peer_id)
    assert o is Outcome.STALE and t[ADS[0].peer_id].source is None and t.relayed_by(RELAY) == 1
    t, o = t.apply_advert(ADS[2], 1001.0, source=RELAY)
    assert o is Outcome.NEW
    # A direct entry refreshed through a relay stays direct.
    t, o = t.apply_advert(dataclasses.replace(ADS[0], seq=2), 1002.0, source=OTHER)
    assert o is Outcome.UPDATED and t[ADS[0].peer_id].source is None and t.relayed_by(OTHER) == 0


def test_a_full_table_evicts_expired_then_least_recently_seen_never_protected():
    t = PeerTable(max_peers=3)
    t, _ = t.apply_advert(ADS[0], 1000.0)
    t, _ = t.apply_advert(make_advert(KEYS[1], now=995.0, ttl=6.0), 995.5)  # expires at 1001
    t, _ = t.apply_advert(ADS[2], 1000.0)
    t, o = t.apply_advert(ADS[3], 1002.0)
    assert o is Outcome.NEW and ADS[1].peer_id not in t and len(t) == 3  # the expired one went first
    # Nothing expired: the least recently seen goes, unless it is protected (a paired device).
    t, _ = t.apply_advert(dataclasses.replace(ADS[2], seq=2), 1003.0)
    t, o = t.apply_advert(ADS[4], 1004.0, protected={ADS[0].peer_id})
    assert o is Outcome.NEW and ADS[0].peer_id in t and ADS[3].peer_id not in t
    # Everything protected: the newcomer is refused.
    everyone = set(t)
    t2, o = t.apply_advert(ADS[5], 1004.0, protected=everyone)
    assert o is Outcome.FULL and t2 is t


def test_hearsay_never_evicts_a_peer_that_spoke_for_itself():
    t = PeerTable(max_peers=2)
    t, _ = t.apply_advert(ADS[0], 1000.0)
    t, _ = t.apply_advert(ADS[1], 1000.0, source=RELAY)
    t, o = t.apply_advert(ADS[2], 1001.0, source=OTHER)
    assert o is Outcome.NEW and set(t) == {ADS[0].peer_id, ADS[2].peer_id}  # the relayed one made room
    t2, o = t.apply_advert(ADS[3], 1002.0, protected={ADS[2].peer_id}, source=OTHER)
    assert o is Outcome.FULL and t2 is t
    t, o = t.apply_advert(ADS[3], 1002.0)  # a direct newcomer may evict a direct entry
    assert o is Outcome.NEW and len(t) == 2


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(ADS) - 1), st.integers(0, 3), st.integers(1, 4), st.floats(0, 30)),
                max_size=40))
def test_bounds_hold_under_any_sequence(steps):
    sources = [None, RELAY, OTHER, PeerId("third")]
    t = PeerTable(max_peers=5, max_per_source=2)
    protected = {ADS[0].peer_id}
    now = 1000.0
    for i, src, seq, dt in steps:
        now += dt
        ad = make_advert(KEYS[i], seq=seq, now=now)
        t, _ = t.apply_advert(ad, now, source=sources[src], protected=protected)
        t, _ = t.expire(now)
        assert len(t) <= 5
        for s in sources[1:]:
            assert t.relayed_by(s) <= 2
        assert all(e.expires_at > now for e in t.values())
