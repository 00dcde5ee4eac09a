import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

from meshagent.errors import DecodeError, ExpiredError, RemoteProtocolError, SignatureError
from meshagent.protocol import signed
from meshagent.protocol.advert import (
    Goodbye,
    decode_advert,
    decode_goodbye,
    encode_advert,
    encode_goodbye,
)

from .conftest import make_advert, make_key


def test_roundtrip(key):
    ad = make_advert(key)
    assert decode_advert(encode_advert(ad, key), now=1001.0) == ad


@pytest.mark.parametrize("hybrid", [False, True], ids=["x25519", "hybrid"])
def test_every_flipped_byte_is_refused(key, hybrid):
    blob = encode_advert(_hybrid_advert(key) if hybrid else make_advert(key), key)
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(RemoteProtocolError):
            decode_advert(bytes(bad), now=1001.0)


def test_forged_signer_is_refused(key):
    other = make_key()
    ad = make_advert(key)
    # Signed by someone else, claiming key's peer id.
    with pytest.raises(SignatureError):
        decode_advert(encode_advert(ad, other), now=1001.0)


def test_sealing_key_must_be_bound_to_identity(key):
    other = make_key()
    ad = make_advert(key)
    ad = dataclasses.replace(ad, sealing_key_sig=make_advert(other).sealing_key_sig)
    with pytest.raises(SignatureError):
        decode_advert(encode_advert(ad, key), now=1001.0)


def test_expired_and_future_adverts(key):
    blob = encode_advert(make_advert(key, now=1000.0, ttl=12.0), key)
    with pytest.raises(ExpiredError):
        decode_advert(blob, now=1013.0)
    with pytest.raises(ExpiredError):
        decode_advert(blob, now=900.0)


def test_advert_cannot_pass_as_goodbye(key):
    blob = encode_advert(make_advert(key), key)
    with pytest.raises(SignatureError):
        decode_goodbye(blob)


def test_goodbye_roundtrip(key):
    ad = make_advert(key)
    g = Goodbye(ad.peer_id, 5, b"x" * 16)
    assert decode_goodbye(encode_goodbye(g, key)) == g


def test_signature_checked_before_payload_decoding(key, monkeypatch):
    calls = []
    from meshagent.protocol import codec

    real = codec.decode_map
    monkeypatch.setattr(codec, "decode_map", lambda *a, **k: calls.append(1) or real(*a, **k))
    blob = bytearray(encode_advert(make_advert(key), key))
    blob[-1] ^= 0xFF
    with pytest.raises(SignatureError):
        decode_advert(bytes(blob), now=1001.0)
    assert calls == []


def test_garbage_payload_with_valid_signature(key):
    for payload in (b"\xff", b"\x80", b"\xa1\x61a\x01", b"\x00" * 10):
        with pytest.raises(DecodeError):
            decode_advert(signed.sign("advert/1", payload, key), now=1001.0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_our_errors(data):
    try:
        decode_advert(data, now=1001.0)
    except RemoteProtocolError:
        pass


_KEY = make_key()


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=20))
def test_signed_random_payloads_only_raise_our_errors(value):
    from meshagent.protocol import codec

    blob = signed.sign("advert/1", codec.encode(value), _KEY)
    try:
        decode_advert(blob, now=1001.0)
    except RemoteProtocolError:
        pass


# --- the hybrid (ML-KEM768-X25519) sealing key ------------------------------------


def _hybrid_advert(key, **kw):
    from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from meshagent.protocol.advert import bind_pq_sealing_key
    from meshagent.protocol.snapshot import hybrid_public_bytes

    pq = hybrid_public_bytes(MLKEM768PrivateKey.generate(), X25519PrivateKey.generate())
    return make_advert(key, sealing_key_pq=pq, sealing_key_pq_sig=bind_pq_sealing_key(pq, key), **kw)


def test_hybrid_key_roundtrip(key):
    ad = _hybrid_advert(key)
    assert len(ad.sealing_key_pq) == 1184 + 32
    assert decode_advert(encode_advert(ad, key), now=1001.0) == ad


def test_no_hybrid_key_decodes_empty(key):
    ad = decode_advert(encode_advert(make_advert(key), key), now=1001.0)
    assert ad.sealing_key_pq == b"" and ad.sealing_key_pq_sig == b""


def test_old_advert_without_hybrid_fields_still_decodes(key):
    from meshagent.protocol import codec
    from meshagent.protocol.advert import ADVERT_KIND

    ad = make_advert(key)
    payload = dataclasses.asdict(ad)
    del payload["sealing_key_pq"], payload["sealing_key_pq_sig"]
    payload["hardware"] = dataclasses.asdict(ad.hardware)
    payload["addrs"] = list(ad.addrs)
    payload["models"] = [{**dataclasses.asdict(m), "tags": list(m.tags)} for m in ad.models]
    payload["tags"] = list(ad.tags)
    payload["hardware"]["accelerators"] = list(ad.hardware.accelerators)
    blob = signed.sign(ADVERT_KIND, codec.encode(payload), key)
    assert decode_advert(blob, now=1001.0) == ad


def test_hybrid_key_binding_forged_is_refused(key):
    other = make_key()
    ad = _hybrid_advert(key)
    # A binding by another identity.
    from meshagent.protocol.advert import bind_pq_sealing_key, bind_sealing_key

    forged = dataclasses.replace(ad, sealing_key_pq_sig=bind_pq_sealing_key(ad.sealing_key_pq, other))
    with pytest.raises(SignatureError):
        decode_advert(encode_advert(forged, key), now=1001.0)
    # The X25519 binding reused for the hybrid key: the kinds are domain-separated.

    cross = dataclasses.replace(ad, sealing_key_pq_sig=bind_sealing_key(ad.sealing_key_pq, key))
    with pytest.raises(SignatureError):
        decode_advert(encode_advert(cross, key), now=1001.0)
    # Another key under a valid binding of the first one.
    swapped = dataclasses.replace(ad, sealing_key_pq=_hybrid_advert(key).sealing_key_pq)
    with pytest.raises(SignatureError):
        decode_advert(encode_advert(swapped, key), now=1001.0)
    # A signature without a key, and a key of the wrong size.
    with pytest.raises(DecodeError):
        decode_advert(encode_advert(dataclasses.replace(ad, sealing_key_pq=b""), key), now=1001.0)
    with pytest.raises(DecodeError):
        decode_advert(encode_advert(dataclasses.replace(ad, sealing_key_pq=ad.sealing_key_pq[:-1]), key), now=1001.0)


# --- sane numbers only -------------------------------------------------------------

INF, NAN = float("inf"), float("nan")


def _model(**kw):
    from meshagent.protocol.advert import ModelAd

    return (ModelAd(name="tiny", sha256="ab" * 32, size_bytes=11 << 20, **kw),)


def _battery(value):
    from meshagent.protocol.advert import Hardware

    return Hardware(arch="x86_64", os="Linux", cpu_model="cpu", cpu_cores=2, ram_total=1, ram_free=1,
                    battery_percent=value, on_battery=True)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"expires_at": INF}, "expires_at must be a finite number"),
        ({"expires_at": NAN}, "expires_at must be a finite number"),
        ({"issued_at": NAN}, "issued_at must be a finite number"),
        ({"issued_at": -INF}, "issued_at must be a finite number"),
        ({"started_at": INF}, "started_at must be a finite number"),
        ({"expires_at": 1000.0 + 13.0}, "lifetime of 13.0 s"),
        ({"expires_at": 1000.0 + 10 * 365 * 86400.0}, "lifetime"),
        ({"expires_at": 999.0, "issued_at": 1000.0}, "lifetime of -1.0 s"),
        ({"price_per_1k_tokens": -0.5}, "price"),
        ({"price_per_1k_tokens": INF}, "price"),
        ({"price_per_1k_tokens": NAN}, "price"),
        ({"models": _model(decode_tps=INF)}, "decode_tps"),
        ({"models": _model(decode_tps=NAN)}, "decode_tps"),
        ({"models": _model(decode_tps=0.0)}, "decode_tps"),
        ({"models": _model(decode_tps=-3.0)}, "decode_tps"),
        ({"models": _model(decode_tps=1e12)}, "decode_tps"),
        ({"models": _model(prefill_tps=INF)}, "prefill_tps"),
        ({"hardware": _battery(150.0)}, "battery_percent"),
        ({"hardware": _battery(NAN)}, "battery_percent"),
        ({"hardware": _battery(-1.0)}, "battery_percent"),
        ({"models": _model() * 65}, "65 models"),
        ({"addrs": ("/ip4/10.0.0.1/tcp/1",) * 65}, "65 addresses"),
        ({"instance": b""}, "instance"),
        ({"instance": b"i" * 65}, "instance"),
    ],
)
def test_insane_numbers_are_refused_at_decode(key, fields, reason):
    ad = dataclasses.replace(make_advert(key, now=1000.0, ttl=12.0), **fields)
    with pytest.raises(DecodeError, match=reason):
        decode_advert(encode_advert(ad, key), now=1001.0, max_ttl_s=12.0)


def test_lifetime_bound_is_the_receivers(key):
    ad = make_advert(key, now=1000.0, ttl=60.0)
    assert decode_advert(encode_advert(ad, key), now=1001.0, max_ttl_s=60.0) == ad
    with pytest.raises(DecodeError, match="lifetime of 60.0 s; this node accepts 0 to 12 s"):
        decode_advert(encode_advert(ad, key), now=1001.0, max_ttl_s=12.0)
    # Without a bound of its own, a receiver still refuses lifetimes beyond the protocol's.
    from meshagent.protocol.advert import MAX_ADVERT_TTL_S

    with pytest.raises(DecodeError, match="lifetime"):
        decode_advert(encode_advert(make_advert(key, ttl=MAX_ADVERT_TTL_S + 1), key), now=1001.0)


def test_a_ttl_computed_as_now_plus_ttl_passes(key):
    # now + ttl - now is not exactly ttl in floating point: the node's own adverts must pass.
    for now in (1000.1, 1.7e9 + 0.123, 1712345678.987654):
        ad = make_advert(key, now=now, ttl=12.0)
        assert decode_advert(encode_advert(ad, key), now=now, max_ttl_s=12.0) == ad


@settings(max_examples=200, deadline=None)
@given(
    expires=st.floats(allow_nan=True, allow_infinity=True),
    decode_tps=st.floats(allow_nan=True, allow_infinity=True) | st.none(),
    price=st.floats(allow_nan=True, allow_infinity=True),
    battery=st.floats(allow_nan=True, allow_infinity=True) | st.none(),
)
def test_any_advert_that_decodes_has_sane_numbers(expires, decode_tps, price, battery):
    import math

    ad = make_advert(_KEY, now=1000.0, expires_at=expires, price_per_1k_tokens=price,
                     models=_model(decode_tps=decode_tps), hardware=_battery(battery))
    try:
        got = decode_advert(encode_advert(ad, _KEY), now=1001.0, max_ttl_s=12.0)
    except RemoteProtocolError:
        return
    assert 1001.0 < got.expires_at <= 1000.0 + 12.0 + 1e-3
    assert math.isfinite(got.price_per_1k_tokens) and got.price_per_1k_tokens >= 0
    rate = got.models[0].decode_tps
    assert rate is None or 0 < rate <= 1e7
    b = got.hardware.battery_percent
    assert b is None or 0 <= b <= 100
