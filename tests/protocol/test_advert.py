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
