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


# --- the llama.cpp sequence state, walked against the model's shape ---------------------

import struct

import numpy as np

F16 = kvblob.TensorShape(1, 8)  # 4 f16 per row
SHAPE = kvblob.SeqStateShape(cell_ext=0, v_trans=False, k=(F16, F16), v=(F16, F16))
SHAPE_T = kvblob.SeqStateShape(cell_ext=8, v_trans=True, k=(kvblob.TensorShape(0, 16),),
                               v=(kvblob.TensorShape(30, 2, 3),))


def seq_state(shape: kvblob.SeqStateShape, n: int, *, positions: list[int] | None = None, n_seq: int = 1,
              streams: int = 1, cells: int | None = None, v_trans: int | None = None, n_layer: int | None = None,
              k_type: int | None = None, k_row: int | None = None, k_values: bytes | None = None) -> bytes:
    """A state as llama.cpp writes one (honest unless a keyword says otherwise)."""
    out = struct.pack("<IiII", kvblob.SEQ_STATE_MAGIC, 3, streams, n if cells is None else cells)
    for p in positions if positions is not None else range(n):
        out += struct.pack("<iI", p, n_seq) + b"\x07" * shape.cell_ext + struct.pack("<i", 3)
    out += struct.pack("<II", int(shape.v_trans) if v_trans is None else v_trans,
                       len(shape.k) if n_layer is None else n_layer)
    for i, t in enumerate(shape.k):
        row = t.row_bytes if k_row is None or i else k_row
        out += struct.pack("<iQ", t.ggml_type if k_type is None or i else k_type, row)
        data = np.full(t.data_bytes(n) // 2, 0.5, dtype="<f2").tobytes() if t.ggml_type == 1 else b"\x00" * t.data_bytes(n)
        out += k_values if (k_values is not None and i == 0) else data
    for t in shape.v:
        out += struct.pack("<iII", t.ggml_type, t.row_bytes, t.n_embd) if shape.v_trans else struct.pack("<iQ", t.ggml_type, t.row_bytes)
        out += b"\x00" * t.data_bytes(n)
    return out


def check(state: bytes, n: int = 3, shape: kvblob.SeqStateShape = SHAPE) -> None:
    kvblob.check_seq_state(state, 0, len(state), n_tokens=n, shape=shape)


@pytest.mark.parametrize("shape", [SHAPE, SHAPE_T], ids=["plain", "transposed-v-with-cell-ext"])
def test_an_honest_state_passes_and_its_shape_is_measured(shape: kvblob.SeqStateShape) -> None:
    state = seq_state(shape, 3)
    assert len(state) == shape.size(3)
    check(state, 3, shape)
    assert kvblob.measure_shape(seq_state(shape, 1), 1) == shape


def test_the_size_is_computed_before_anything_is_read() -> None:
    state = seq_state(SHAPE, 3)
    for bad in (state[:-1], state + b"\0", state[:20], b""):
        with pytest.raises(KVStateError, match=f"3 cells of this model take {len(state)}"):
            check(bad)
    with pytest.raises(KVStateError, match="at least one token"):
        check(state, 0)


NAN_F16 = np.array([np.nan] + [0.5] * 11, dtype="<f2").tobytes()
INF_F16 = np.array([0.5] * 11 + [np.inf], dtype="<f2").tobytes()


@pytest.mark.parametrize(
    ("state", "why"),
    [
        (seq_state(SHAPE, 3, positions=[0, 1, 1]), "positions"),
        (seq_state(SHAPE, 3, positions=[0, 1, 2**31 - 1]), "positions"),
        (seq_state(SHAPE, 3, positions=[-5, 1, 2]), "positions"),
        (seq_state(SHAPE, 3, n_seq=2), "exactly one sequence"),
        (seq_state(SHAPE, 3, streams=2), "2 streams"),
        (seq_state(SHAPE, 3, cells=4), "holds 4 cells"),
        (seq_state(SHAPE, 3, v_trans=1), "v_trans=1"),
        (seq_state(SHAPE, 3, n_layer=3), "3 layers; this model has 2"),
        (seq_state(SHAPE, 3, k_type=0), "K of layer 0 has ggml type 0"),
        (seq_state(SHAPE, 3, k_row=9), "rows of 9 bytes"),
        (seq_state(SHAPE, 3, k_values=NAN_F16), "NaN or an infinity"),
        (seq_state(SHAPE, 3, k_values=INF_F16), "NaN or an infinity"),
        (b"\0" * SHAPE.size(3), "magic"),
    ],
    ids=["duplicate", "max", "negative", "two-sequences", "streams", "cells", "v-trans", "layers", "k-type", "k-row",
         "nan", "inf", "zeros"],
)
def test_a_crafted_state_is_refused(state: bytes, why: str) -> None:
    assert len(state) == SHAPE.size(3)  # the right size: refused by the walk, not the length
    with pytest.raises(KVStateError, match=why):
        check(state)


def test_a_transposed_v_of_another_shape_is_refused() -> None:
    other = kvblob.SeqStateShape(cell_ext=8, v_trans=True, k=SHAPE_T.k, v=(kvblob.TensorShape(30, 2, 4),))
    with pytest.raises(KVStateError):
        check(seq_state(other, 3), 3, SHAPE_T)
    bf16_nan = bytearray(seq_state(SHAPE_T, 3))
    bf16_nan[-2:] = (0x7FC0).to_bytes(2, "little")
    with pytest.raises(KVStateError, match="NaN"):
        check(bytes(bf16_nan), 3, SHAPE_T)


def _structural_offsets(shape: kvblob.SeqStateShape, n: int) -> list[int]:
    """Byte offsets of every field of an honest state that is not a free value (K/V data, ignored ids, cell ext)."""
    out = list(range(0, 4)) + list(range(8, 16))
    at = 16
    for _ in range(n):
        out += list(range(at, at + 8))
        at += 8 + shape.cell_ext + 4
    out += list(range(at, at + 8))
    at += 8
    for t in shape.k + shape.v:
        out += list(range(at, at + 12))
        at += 12 + t.data_bytes(n)
    return out


@settings(max_examples=300, deadline=None)
@given(pick=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_damage_to_a_structural_field_is_refused(pick: int, flip: int) -> None:
    for shape in (SHAPE, SHAPE_T):
        state = bytearray(seq_state(shape, 3))
        offsets = _structural_offsets(shape, 3)
        state[offsets[pick % len(offsets)]] ^= flip
        with pytest.raises(KVStateError):
            check(bytes(state), 3, shape)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=SHAPE.size(3), max_size=SHAPE.size(3)) | st.binary(max_size=400))
def test_random_states_only_raise_kvstate_error(data: bytes) -> None:
    try:
        check(data)
    except KVStateError:
        pass
    kvblob.measure_shape(data, 3)  # returns a shape or None; never raises
