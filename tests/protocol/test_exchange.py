import pytest
from hypothesis import given, settings, strategies as st

from meshagent.errors import DecodeError
from meshagent.protocol import codec, exchange
from meshagent.protocol.exchange import MAX_EXCHANGE_ADVERTS, Bye, PeerExchange


def test_roundtrip():
    for msg in (PeerExchange((b"a", b"b")), Bye(b"g")):
        assert exchange.decode(exchange.encode(msg)) == msg


def test_limits():
    too_many = codec.encode({"t": "px", "adverts": [b"x"] * (MAX_EXCHANGE_ADVERTS + 1)})
    with pytest.raises(DecodeError):
        exchange.decode(too_many)
    with pytest.raises(DecodeError):
        exchange.decode(codec.encode({"t": "px", "adverts": ["not bytes"]}))
    with pytest.raises(DecodeError):
        exchange.decode(codec.encode({"t": "what"}))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data):
    try:
        exchange.decode(data)
    except DecodeError:
        pass
