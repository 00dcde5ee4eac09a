"""The KV blob format: every refusal reason, and no exception other than KVStateError."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from meshagent.errors import KVStateError
from meshagent.inference import kvblob

MODEL = "ab" * 32
ENGINE = "llama-cpp-python/test"
TOKENS = [1, 5, 9, 200, 7]
STATE = bytes(range(256)) * 4


def blob(**kw: object) -> bytes:
    args: dict[str, object] = {"model_sha256": MODEL, "engine": ENGINE, "tokens": TOKENS, "state": STATE}
    args.update(kw)
    return kvblob.pack_blob(**args)  # type: ignore[arg-type]


def unpack(
    data: bytes, tokens: list[int] = TOKENS, model: str = MODEL, engine: str = ENGINE
) -> tuple[kvblob.KVHeader, int]:
    return kvblob.unpack_blob(data, model_sha256=model, engine=engine, tokens=tokens, max_state=1 << 20)


def test_roundtrip_gives_exact_state_bounds() -> None:
    data = blob()
    header, offset = unpack(data)
    assert header.n_tokens == len(TOKENS)
    assert data[offset : offset + header.state_len] == STATE
    assert offset + header.state_len == len(data)


def test_blob_may_cover_a_prefix_of_longer_history() -> None:
    header, _ = unpack(blob(), tokens=TOKENS + [3, 4])
    assert header.n_tokens == len(TOKENS)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:-1], "truncated"),
        (lambda b: b[:6], "not a KV blob"),
        (lambda b: b[:20], "truncated inside its header"),
        (lambda b: b + b"x", "trailing"),
        (lambda b: b"XKV1" + b[4:], "bad magic"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "corrupt"),
        (lambda b: b[:4] + (10**6).to_bytes(4, "big") + b[8:], "exceeds"),
        (lambda b: b[:8] + b"\xff" + b[9:], "malformed"),
    ],
)
def test_damaged_blob_is_refused(mutate: object, reason: str) -> None:
    with pytest.raises(KVStateError, match=reason):
        unpack(mutate(blob()))  # type: ignore[operator]


def test_blob_for_another_model_engine_or_history_is_refused() -> None:
    with pytest.raises(KVStateError, match="for model"):
        unpack(blob(), model="cd" * 32)
    with pytest.raises(KVStateError, match="engine"):
        unpack(blob(), engine="llama-cpp-python/0.0.1")
    with pytest.raises(KVStateError, match="another token history"):
        unpack(blob(), tokens=[1, 5, 9, 200, 8])
    with pytest.raises(KVStateError, match="covers 5 tokens"):
        unpack(blob(), tokens=TOKENS[:3])


def test_state_larger_than_the_limit_is_refused() -> None:
    with pytest.raises(KVStateError, match="limit"):
        kvblob.unpack_blob(blob(), model_sha256=MODEL, engine=ENGINE, tokens=TOKENS, max_state=100)


def test_non_bytes_is_refused() -> None:
    with pytest.raises(KVStateError):
        unpack(bytearray(blob()))  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255), cut=st.integers(min_value=0))
def test_any_single_damage_is_a_kvstate_error(pos: int, value: int, cut: int) -> None:
    data = bytearray(blob())
    i = pos % len(data)
    if data[i] == value:
        value ^= 0x80
    data[i] = value
    damaged = bytes(data[: len(data) - cut % 3])
    with pytest.raises(KVStateError):
        unpack(damaged)


def test_signed_envelope_roundtrip_and_refusal() -> None:
    key = Ed25519PrivateKey.generate()
    env = kvblob.sign_blob(blob(), key)
    assert kvblob.open_signed_blob(env, max_size=1 << 20) == blob()
    tampered = env[:-1] + bytes([env[-1] ^ 1])
    with pytest.raises(KVStateError, match="signature"):
        kvblob.open_signed_blob(tampered, max_size=1 << 20)
    with pytest.raises(KVStateError):
        kvblob.open_signed_blob(env, max_size=100)


def _seq_state(positions: list[int], n_seq: int = 1, streams: int = 1) -> bytes:
    import struct

    out = struct.pack("<IiII", kvblob.SEQ_STATE_MAGIC, 0, streams, len(positions))
    for p in positions:
        out += struct.pack("<iIi", p, n_seq, 0)
    return out + b"\0" * 64


def test_seq_state_cells_must_be_consecutive_single_sequence() -> None:
    good = _seq_state([0, 1, 2])
    kvblob.check_seq_state(good, 0, len(good), n_tokens=3, cell_stride=12)
    for bad, why in [
        (_seq_state([0, 1, 1]), "positions"),
        (_seq_state([0, 1, 2**31 - 1]), "positions"),
        (_seq_state([-5, 1, 2]), "positions"),
        (_seq_state([0, 1, 2], n_seq=2), "exactly one sequence"),
        (_seq_state([0, 1, 2], streams=2), "streams"),
        (_seq_state([0, 1]), "cells"),
        (b"\0" * 40, "magic"),
        (_seq_state([0, 1, 2])[:30], "truncated"),
    ]:
        with pytest.raises(KVStateError, match=why):
            kvblob.check_seq_state(bad, 0, len(bad), n_tokens=3, cell_stride=12)
