"""LlamaEngine on the real llama.cpp with the tiny generated model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from meshagent.errors import ContextOverflow, InferenceError, KVStateError, ModelError
from meshagent.inference.engine import Embedder, GenerateOptions, LlmEngine, SessionId
from meshagent.inference.llama_engine import LlamaEngine, UnknownSession
from meshagent.inference.tiny import TinyModelSpec, ensure_tiny_model

GREEDY = GenerateOptions(max_tokens=24)
A, B, C = SessionId("a"), SessionId("b"), SessionId("c")

Make = Callable[..., LlamaEngine]


def test_engine_implements_the_protocol(engine: LlamaEngine) -> None:
    assert isinstance(engine, LlmEngine)
    assert not isinstance(engine, Embedder)


def test_lazy_load_and_info_without_loading(engine: LlamaEngine, tiny_sha: str) -> None:
    info = engine.info
    assert not engine.loaded
    assert info.kind == "llm" and info.sha256 == tiny_sha
    assert info.parameters > 0 and info.quantization == "F16"
    assert info.accelerator == "cpu" and info.gpu_layers == 0


def test_greedy_generation_is_deterministic_across_engines(make_engine: Make) -> None:
    one = make_engine().generate(A, "the quick brown fox", GREEDY)
    two = make_engine().generate(A, "the quick brown fox", GREEDY)
    assert one.text == two.text
    assert one.completion_tokens == GREEDY.max_tokens
    assert one.text.isprintable() and one.text.strip()


def test_generate_appends_to_the_session_and_reuses_its_kv(engine: LlamaEngine) -> None:
    first = engine.generate(A, "hello there", GREEDY)
    history = engine.tokens(A)
    assert len(history) == 1 + len("hello there") + first.completion_tokens
    second = engine.generate(A, " and more", GREEDY)
    assert engine.tokens(A)[: len(history)] == history
    # Everything but the last generated token (never decoded) came from the cache.
    assert second.reused_tokens == len(history) - 1
    assert second.prompt_tokens == len(" and more")


def test_two_turns_equal_one_session_replayed_from_tokens(make_engine: Make) -> None:
    e = make_engine()
    e.generate(A, "one", GREEDY)
    second = e.generate(A, " two", GREEDY)
    other = make_engine()
    other.import_kv(B, e.tokens(A)[: -second.completion_tokens - len(" two")], None)
    assert other.generate(B, " two", GREEDY).text == second.text


def test_seeded_sampling_is_deterministic(make_engine: Make) -> None:
    opts = GenerateOptions(max_tokens=32, temperature=1.5, seed=7)
    one = make_engine().generate(A, "abc", opts).text
    two = make_engine().generate(A, "abc", opts).text
    other = make_engine().generate(A, "abc", GenerateOptions(max_tokens=32, temperature=1.5, seed=8)).text
    assert one == two
    assert one != other


def test_forked_sessions_continue_independently(make_engine: Make) -> None:
    e = make_engine()
    e.generate(A, "shared prefix of the family", GREEDY)
    parent_tokens = e.tokens(A)
    e.fork(A, B)
    e.fork(A, C)
    assert e.tokens(B) == parent_tokens and e.is_resident(B)
    left = e.generate(B, " left", GREEDY)
    right = e.generate(C, " right", GREEDY)
    assert e.tokens(A) == parent_tokens
    assert e.tokens(B)[: len(parent_tokens)] == parent_tokens
    assert e.tokens(B) != e.tokens(C)
    # Each branch equals a session that never shared anything.
    ref = make_engine()
    ref.import_kv(B, parent_tokens, None)
    ref.import_kv(C, parent_tokens, None)
    assert ref.generate(B, " left", GREEDY).text == left.text
    assert ref.generate(C, " right", GREEDY).text == right.text
    # The parent continues as if it had never been forked.
    ref.import_kv(A, parent_tokens, None)
    assert e.generate(A, " right", GREEDY).text == ref.generate(A, " right", GREEDY).text


def test_fork_of_a_forked_child_and_dropping_the_parent(engine: LlamaEngine) -> None:
    engine.generate(A, "root", GREEDY)
    engine.fork(A, B)
    engine.fork(B, C)
    engine.drop(A)
    engine.drop(B)
    assert engine.generate(C, " leaf", GREEDY).completion_tokens == GREEDY.max_tokens
    with pytest.raises(UnknownSession):
        engine.tokens(A)
    with pytest.raises(InferenceError):
        engine.fork(C, C)


def test_kv_move_between_engines_gives_the_same_continuation(make_engine: Make) -> None:
    src = make_engine()
    src.generate(A, "move me somewhere else", GREEDY)
    blob, tokens = src.export_kv(A), src.tokens(A)
    dst = make_engine()
    assert dst.import_kv(B, tokens, blob) is True
    assert dst.tokens(B) == tokens
    moved = dst.generate(B, " please", GREEDY)
    stayed = src.generate(A, " please", GREEDY)
    assert moved.text == stayed.text
    assert moved.reused_tokens == stayed.reused_tokens


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],
        lambda b: b[:-1] + bytes([b[-1] ^ 0x55]),
        lambda b: b + b"\0",
        lambda b: b"garbage",
        lambda b: b"",
    ],
    ids=["truncated", "corrupt", "trailing", "garbage", "empty"],
)
def test_damaged_blob_is_refused_and_rebuilt_from_tokens(make_engine: Make, damage: Callable[[bytes], bytes]) -> None:
    src = make_engine()
    src.generate(A, "fragile state", GREEDY)
    blob, tokens = src.export_kv(A), src.tokens(A)
    dst = make_engine()
    assert dst.import_kv(B, tokens, damage(blob)) is False
    assert dst.is_resident(B)
    assert dst.generate(B, " again", GREEDY).text == src.generate(A, " again", GREEDY).text


def test_blob_for_other_tokens_is_refused(make_engine: Make) -> None:
    src = make_engine()
    src.generate(A, "first conversation", GREEDY)
    src.generate(B, "second conversation", GREEDY)
    dst = make_engine()
    assert dst.import_kv(C, src.tokens(B), src.export_kv(A)) is False
    assert dst.generate(C, "!", GREEDY).text == src.generate(B, "!", GREEDY).text


def test_blob_for_another_model_is_refused(make_engine: Make, tmp_path: Path) -> None:
    other_path = ensure_tiny_model(tmp_path, TinyModelSpec(layers=1, dim=64, seed=99))
    from meshagent.inference.hashing import sha256_file

    other = LlamaEngine(other_path, sha256=sha256_file(other_path), n_ctx=1024)
    try:
        other.generate(A, "same words", GREEDY)
        blob, tokens = other.export_kv(A), other.tokens(A)
    finally:
        other.close()
    mine = make_engine()
    assert mine.import_kv(A, tokens, blob) is False
    ref = make_engine()
    ref.import_kv(A, tokens, None)
    assert mine.generate(A, "?", GREEDY).text == ref.generate(A, "?", GREEDY).text


def test_blob_claiming_another_engine_version_is_refused(make_engine: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    from meshagent.inference import llama_engine

    src = make_engine()
    src.generate(A, "versioned", GREEDY)
    monkeypatch.setattr(llama_engine, "engine_version", lambda: "llama-cpp-python/0.0.0")
    blob, tokens = src.export_kv(A), src.tokens(A)
    monkeypatch.undo()
    assert make_engine().import_kv(B, tokens, blob) is False


def test_export_needs_a_resident_session(engine: LlamaEngine) -> None:
    with pytest.raises(UnknownSession):
        engine.export_kv(A)
    engine.generate(A, "x", GREEDY)
    engine.evict(A)
    assert not engine.is_resident(A)
    with pytest.raises(KVStateError, match="no KV"):
        engine.export_kv(A)


def test_prompt_longer_than_the_context_overflows(make_engine: Make) -> None:
    e = make_engine(n_ctx=256)
    with pytest.raises(ContextOverflow):
        e.generate(A, "x" * 300, GREEDY)
    assert e.sessions() == []
    # The failed call left no trace: the session is still usable.
    assert e.generate(A, "short", GREEDY).completion_tokens == GREEDY.max_tokens
    with pytest.raises(ContextOverflow):
        e.generate(A, "y" * 250, GREEDY)
    assert len(e.tokens(A)) == 1 + len("short") + GREEDY.max_tokens
    with pytest.raises(ContextOverflow):
        e.import_kv(B, [1] * 300, None)


def test_generation_stops_at_the_end_of_the_context(make_engine: Make) -> None:
    e = make_engine(n_ctx=256)
    g = e.generate(A, "z" * 240, GenerateOptions(max_tokens=100))
    assert g.completion_tokens == 256 - 241
    assert len(e.tokens(A)) == 256


def test_bad_token_ids_are_refused(engine: LlamaEngine) -> None:
    with pytest.raises(InferenceError, match="vocabulary"):
        engine.import_kv(A, [1, 10**6], None)


def test_not_a_gguf_file_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"<html>not a model</html>")
    with pytest.raises(ModelError, match="not a GGUF"):
        LlamaEngine(bad, sha256="00" * 32)
    with pytest.raises(ModelError, match="cannot read"):
        LlamaEngine(tmp_path / "missing.gguf", sha256="00" * 32)


def test_corrupt_gguf_after_the_magic_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    e = LlamaEngine(bad, sha256="00" * 32)
    with pytest.raises(ModelError):
        e.generate(A, "x", GREEDY)


def test_idle_sessions_are_evicted_when_sequences_run_out(make_engine: Make) -> None:
    e = make_engine(max_sessions=2)
    e.generate(A, "alpha", GREEDY)
    e.generate(B, "beta", GREEDY)
    e.generate(C, "gamma", GREEDY)  # evicts the least recently used: A
    assert not e.is_resident(A) and e.is_resident(B) and e.is_resident(C)
    ref = make_engine()
    ref.import_kv(A, e.tokens(A), None)
    assert e.generate(A, " more", GREEDY).text == ref.generate(A, " more", GREEDY).text
    assert e.is_resident(A)


def test_idle_sessions_are_evicted_when_the_kv_cache_is_full(make_engine: Make) -> None:
    e = make_engine(n_ctx=512)
    e.generate(A, "a" * 300, GREEDY)
    e.generate(B, "b" * 300, GREEDY)  # 650 cells wanted, 512 exist: A is evicted
    assert e.is_resident(B) and not e.is_resident(A)
    ref = make_engine()
    ref.import_kv(A, e.tokens(A), None)
    assert e.generate(A, "!", GREEDY).text == ref.generate(A, "!", GREEDY).text


def test_self_benchmark_is_cached_per_model(make_engine: Make, tmp_path: Path) -> None:
    from meshagent.inference.selfbench import ThroughputCache

    cache = ThroughputCache(tmp_path)
    e = make_engine(throughput_cache=cache)
    assert e.info.prefill_tps is None
    e.load()  # first use measures
    info = e.info
    assert info.prefill_tps and info.prefill_tps > 0 and info.decode_tps and info.decode_tps > 0
    again = make_engine(throughput_cache=cache)
    assert again.info.prefill_tps == info.prefill_tps  # from the cache, not loaded
    assert not again.loaded


def test_evict_idle_keeps_tokens_and_rebuilds_on_use(make_engine: Make) -> None:
    e = make_engine()
    first = e.generate(A, "idle for a while", GREEDY)
    tokens = e.tokens(A)
    assert e.evict_idle(3600.0) == 0 and e.is_resident(A)
    assert e.evict_idle(0.0) == 1 and not e.is_resident(A)
    assert e.tokens(A) == tokens
    ref = make_engine()
    ref.import_kv(A, tokens, None)
    assert e.generate(A, " back", GREEDY).text == ref.generate(A, " back", GREEDY).text
    assert first.completion_tokens == GREEDY.max_tokens


def _forge(engine: LlamaEngine, blob: bytes, tokens: list[int], word: int, value: int) -> bytes:
    """Re-pack ``blob`` with one u32 of its llama.cpp state replaced (a valid digest: a crafted blob)."""
    from meshagent.inference import kvblob
    from meshagent.inference.llama_api import engine_version

    header, offset = kvblob.unpack_blob(
        blob, model_sha256=engine.sha256, engine=engine_version(), tokens=tokens, max_state=1 << 30
    )
    state = bytearray(blob[offset:])
    state[4 * word : 4 * word + 4] = value.to_bytes(4, "little")
    return kvblob.pack_blob(
        model_sha256=engine.sha256, engine=engine_version(), tokens=tokens[: header.n_tokens], state=bytes(state)
    )


@pytest.mark.parametrize(
    ("checked", "position"),
    [(True, 0x7FFFFFFF), (True, 0xFFFFFFF0), (True, 3), (False, 0x7FFFFFFF), (False, 0xFFFFFFF0)],
    ids=["max", "negative", "duplicate", "max-unchecked", "negative-unchecked"],
)
def test_crafted_positions_are_refused_and_leave_no_garbage(
    make_engine: Make, monkeypatch: pytest.MonkeyPatch, checked: bool, position: int
) -> None:
    src = make_engine()
    src.generate(A, "crafted by an attacker", GREEDY)
    tokens = src.tokens(A)
    # Word 4 + 3*k is the position of cell k (12-byte records after a 16-byte header).
    forged = _forge(src, src.export_kv(A), tokens, 4 + 3 * 5, position)
    dst = make_engine()
    dst.generate(B, "an innocent bystander", GREEDY)
    dst.load()
    if not checked:
        # As if a crafted state got past the check: llama.cpp loads the cells, the
        # engine sees the bad positions afterwards and must scrub them.
        from meshagent.inference import llama_engine

        monkeypatch.setattr(llama_engine.kvblob, "check_seq_state", lambda *a, **kw: None)
    assert dst.import_kv(C, tokens, forged) is False
    # Refused before llama.cpp read it, or scrubbed by clearing the context
    # (the bystander is evicted then, and rebuilt from its tokens below).
    assert dst.is_resident(B) is checked
    assert dst.generate(C, " go", GREEDY).text == src.generate(A, " go", GREEDY).text
    ref = make_engine()
    ref.import_kv(B, dst.tokens(B), None)
    assert dst.generate(B, " still fine", GREEDY).text == ref.generate(B, " still fine", GREEDY).text


def test_gpu_offload_is_configurable_and_reported_truthfully(make_engine: Make) -> None:
    from meshagent.inference.llama_api import supports_gpu_offload

    e = make_engine(n_gpu_layers=99)
    info = e.info
    if supports_gpu_offload():
        assert (info.accelerator, info.gpu_layers) == ("gpu", 99)
    else:  # this build has no GPU backend: the advert must not claim one
        assert (info.accelerator, info.gpu_layers) == ("cpu", 0)
    assert e.generate(A, "offload", GREEDY).completion_tokens == GREEDY.max_tokens


def test_token_counting_and_default_digest(tiny_model: Path, tiny_sha: str) -> None:
    e = LlamaEngine(tiny_model)
    try:
        assert e.sha256 == tiny_sha
        assert e.count_tokens("hello") == 5
        assert e.count_tokens("hello", first=True) == 6
        assert e.count_tokens("a b") == 3  # the space is one token
    finally:
        e.close()


def _repack(engine: LlamaEngine, blob: bytes, tokens: list[int], edit: Callable[[bytearray], bytes]) -> bytes:
    """``blob`` with its llama.cpp state edited and its digest recomputed (what a peer can send)."""
    from meshagent.inference import kvblob
    from meshagent.inference.llama_api import engine_version

    header, offset = kvblob.unpack_blob(
        blob, model_sha256=engine.sha256, engine=engine_version(), tokens=tokens, max_state=1 << 30
    )
    state = edit(bytearray(blob[offset:]))
    return kvblob.pack_blob(model_sha256=engine.sha256, engine=engine_version(), tokens=tokens[: header.n_tokens],
                            state=state)


def _at(state: bytearray, offset: int, value: int, size: int = 4) -> bytes:
    state[offset : offset + size] = value.to_bytes(size, "little", signed=value < 0)
    return bytes(state)


def test_crafted_states_are_refused_before_llama_cpp_reads_them(make_engine: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blobs a peer could send (valid digests, honest header) whose llama.cpp state lies about its shape:
    each is refused by the check against the local model's shape, llama.cpp never sees it, and the
    session is rebuilt by prefill with the same continuation."""
    from meshagent.inference.llama_api import LlamaContext

    src = make_engine()
    src.generate(A, "a state to tamper with", GREEDY)
    tokens, blob = src.tokens(A), src.export_kv(A)
    from meshagent.inference import kvblob
    from meshagent.inference.llama_api import engine_version

    header, _ = kvblob.unpack_blob(blob, model_sha256=src.sha256, engine=engine_version(), tokens=tokens, max_state=1 << 30)
    n = header.n_tokens  # the cells the state holds
    cells_end = 16 + 12 * n  # the tiny model: 12-byte cell records, no extension
    layer0 = cells_end + 8
    row = 512  # 256 f16 per K row
    forgeries = {
        "layer count": lambda st: _at(st, cells_end + 4, 5),
        "v_trans": lambda st: _at(st, cells_end, 1),
        "K type": lambda st: _at(st, layer0, 0),
        "K row size": lambda st: _at(st, layer0 + 4, row * 2, 8),
        "cell count": lambda st: _at(st, 12, n - 1),
        "NaN in K": lambda st: _at(st, layer0 + 12, 0x7E00, 2),
        "truncated": lambda st: bytes(st[:-row]),
        "extra cell": lambda st: bytes(st + b"\0" * 12),
        "n_seq_id": lambda st: _at(st, 16 + 4, 7),
    }
    dst = make_engine()
    dst.load()
    seen: list[int] = []
    real = LlamaContext.set_seq_state

    def spy(self: LlamaContext, seq: int, data: bytes, offset: int, size: int) -> None:
        seen.append(size)
        real(self, seq, data, offset, size)

    monkeypatch.setattr(LlamaContext, "set_seq_state", spy)
    for what, edit in forgeries.items():
        assert dst.import_kv(B, tokens, _repack(src, blob, tokens, edit)) is False, what
        assert seen == [], f"{what}: llama.cpp was given the state"
        assert dst.is_resident(B)  # rebuilt by prefill
    assert dst.generate(B, " onwards", GREEDY).text == src.generate(A, " onwards", GREEDY).text
    # The honest blob still goes through.
    assert dst.import_kv(C, tokens, blob) is True and len(seen) == 1
