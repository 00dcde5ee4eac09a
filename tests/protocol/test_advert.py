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


def test_every_flipped_byte_is_refused(key):
    blob = encode_advert(make_advert(key), key)
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
