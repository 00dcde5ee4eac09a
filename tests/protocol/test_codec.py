import cbor2
import pytest
from hypothesis import given, settings, strategies as st

from meshagent.errors import DecodeError, FrameTooLarge
from meshagent.protocol import codec


def test_roundtrip_is_canonical():
    a = codec.encode({"b": 1, "a": [1, 2, b"x"], "c": None})
    b = codec.encode({"c": None, "a": [1, 2, b"x"], "b": 1})
    assert a == b
    assert codec.decode(a) == {"a": [1, 2, b"x"], "b": 1, "c": None}


@pytest.mark.parametrize(
    "data",
    [
        cbor2.dumps(cbor2.CBORTag(1, 1700000000)),  # datetime tag
        cbor2.dumps(2**70),  # bignum tag
        bytes.fromhex("d81c81d81d00"),  # shared reference (cycle)
        bytes.fromhex("9f01ff"),  # indefinite-length array
        bytes.fromhex("a2616101616102"),  # duplicate key
        bytes.fromhex("a1a0616101"),  # map as map key
        b"\x18",  # truncated
        b"",
    ],
)
def test_refuses_hostile_cbor(data):
    with pytest.raises(DecodeError):
        codec.decode(data)


def test_depth_limit():
    deep = b"\x81" * 50 + b"\x00"
    with pytest.raises(DecodeError):
        codec.decode(deep, max_depth=12)


def test_size_checked_before_parsing():
    with pytest.raises(FrameTooLarge):
        codec.decode(b"\x00" * 100, max_size=10)


def test_field_types():
    m = {"n": 1, "b": True, "s": "x"}
    assert codec.field(m, "n", int) == 1
    assert codec.field(m, "n", float) == 1.0
    with pytest.raises(DecodeError):
        codec.field(m, "b", int)  # bool is not an int on the wire
    with pytest.raises(DecodeError):
        codec.field(m, "missing", str)


def test_frame_reader_reassembles_and_caps():
    r = codec.FrameReader(max_size=100)
    data = codec.frame(b"hello") + codec.frame(b"world")
    out = []
    for i in range(len(data)):
        out += r.feed(data[i : i + 1])
    assert out == [b"hello", b"world"]
    with pytest.raises(FrameTooLarge):
        codec.FrameReader(max_size=100).feed((1000).to_bytes(4, "big"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_decode_error(data):
    try:
        codec.decode(data)
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=256))
def test_frame_reader_random_bytes(data):
    try:
        codec.FrameReader(max_size=64).feed(data)
    except DecodeError:
        pass
