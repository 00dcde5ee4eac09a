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
