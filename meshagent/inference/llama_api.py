"""A thin, typed wrapper over llama-cpp-python's low-level (ctypes) API.

Only what :mod:`meshagent.inference.llama_engine` needs: load a model, make a
context holding several sequences in one *unified* KV cache, tokenize,
decode batches, copy/remove sequences, and save/restore one sequence's state
with exact lengths (``llama_state_seq_get_data`` / ``set_data``). Nothing
here calls the whole-context ``llama_state_set_data``/``Llama.load_state``.

Every llama.cpp failure becomes an :class:`~meshagent.errors.InferenceError`
subclass. Objects here are not thread-safe: the engine serialises calls.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from meshagent.errors import InferenceError, KVStateError, ModelError
from meshagent.inference import kvblob

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "ContextParams",
    "KVFull",
    "LlamaModel",
    "LlamaContext",
    "engine_version",
    "supports_gpu_offload",
    "system_info",
]

log = logging.getLogger(__name__)
_llama_log = logging.getLogger(__name__ + ".native")

_INIT_LOCK: Final = threading.Lock()
_initialised = False
_log_callback: Any = None  # keeps the ctypes callback alive


class KVFull(InferenceError):
    """The context's KV cache has no free cells for a batch (memory pressure)."""


def _lib() -> Any:
    """Import llama_cpp once, route its logs to :mod:`logging`, init the backend."""
    global _initialised, _log_callback
    try:
        import llama_cpp
    except ImportError as exc:
        raise InferenceError("llama-cpp-python is not installed (pip install 'meshagent[llm]')") from exc
    with _INIT_LOCK:
        if not _initialised:

            def forward(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
                # llama.cpp is chatty and reports refused blobs as errors; our
                # own code logs what matters, so native lines stay at debug/info.
                if _llama_log.isEnabledFor(logging.DEBUG) or level == 3:
                    msg = text.decode("utf-8", "replace").rstrip()
                    if msg:
                        _llama_log.log(logging.INFO if level == 3 else logging.DEBUG, "%s", msg)

            _log_callback = llama_cpp.llama_log_callback(forward)
            llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _initialised = True
    return llama_cpp


def engine_version() -> str:
    """The engine identity a KV blob is bound to (the vendored llama.cpp comes with it)."""
    llama_cpp = _lib()
    return f"llama-cpp-python/{llama_cpp.__version__}"


def supports_gpu_offload() -> bool:
    return bool(_lib().llama_supports_gpu_offload())


def system_info() -> str:
    raw = _lib().llama_print_system_info()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


class LlamaModel:
    """A loaded GGUF model and its vocabulary."""

    def __init__(self, path: Path, *, n_gpu_layers: int = 0) -> None:
        lib = _lib()
        self._lib = lib
        self.path = path
        params = lib.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        self._ptr = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self._ptr:
            raise ModelError(f"llama.cpp could not load {path} (not a supported GGUF model?)")
        self._vocab = lib.llama_model_get_vocab(self._ptr)
        self.n_vocab: int = lib.llama_vocab_n_tokens(self._vocab)
        self.n_params: int = lib.llama_model_n_params(self._ptr)
        self.n_ctx_train: int = lib.llama_model_n_ctx_train(self._ptr)
        self.bos: int = lib.llama_vocab_bos(self._vocab)
        self.add_bos: bool = bool(lib.llama_vocab_get_add_bos(self._vocab))

    @property
    def ptr(self) -> Any:
        return self._ptr

    def close(self) -> None:
        if self._ptr:
            self._lib.llama_model_free(self._ptr)
            self._ptr = None

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        """Tokens of ``text``; special-token text (``<s>``) is *not* parsed as control tokens."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (self._lib.llama_token * cap)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos and self.add_bos, False)
        if n < 0:
            cap = -n
            buf = (self._lib.llama_token * cap)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos and self.add_bos, False)
        if n < 0:
            raise InferenceError(f"tokenization failed ({n})")
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[: max(n, 0)]

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))


@dataclass(frozen=True, slots=True)
class ContextParams:
    n_ctx: int = 4096
    n_batch: int = 512
    n_seq_max: int = 16
    n_threads: int = 0
    """0 means every core but one (at least one): ggml's worker threads spin at the barriers
    between operations, so a context that counts on every core stalls at each of them
    whenever anything else runs on one of those cores (on two busy cores, a small model
    decoded at 3 tokens/s with two threads and at 400-800 with one)."""


class LlamaContext:
    """One llama.cpp context: a unified KV cache shared by up to ``n_seq_max`` sequences."""

    def __init__(self, model: LlamaModel, params: ContextParams) -> None:
        import os

        lib = _lib()
        self._lib = lib
        self.model = model
        p = lib.llama_context_default_params()
        p.n_ctx = params.n_ctx
        p.n_batch = params.n_batch
        p.n_ubatch = params.n_batch
        p.n_seq_max = params.n_seq_max
        threads = params.n_threads or max(1, (os.cpu_count() or 1) - 1)
        p.n_threads = threads
        p.n_threads_batch = threads
        # One cache for all sequences, so that seq_cp shares cells instead of
        # copying them between per-sequence streams.
        p.kv_unified = True
        p.no_perf = True
        self._ptr = lib.llama_init_from_model(model.ptr, p)
        if not self._ptr:
            raise InferenceError(f"llama.cpp could not create a context of {params.n_ctx} tokens")
        self._mem = lib.llama_get_memory(self._ptr)
        self.n_ctx: int = lib.llama_n_ctx(self._ptr)
        self.n_batch: int = lib.llama_n_batch(self._ptr)
        self.n_seq_max: int = lib.llama_n_seq_max(self._ptr)
        self._batch = lib.llama_batch_init(self.n_batch, 0, 1)

    def close(self) -> None:
        if self._ptr:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ptr)
            self._ptr = None

    # --- decoding -----------------------------------------------------------

    def decode(self, tokens: list[int], seq: int, pos0: int, *, logits: bool) -> NDArray[np.float32] | None:
        """Append ``tokens`` at positions ``pos0…`` of sequence ``seq``.

        Returns a copy of the last token's logits when ``logits`` is set.
        Raises :class:`KVFull` when the cache has no room (state unchanged for
        the failing chunk; earlier chunks stay) and :class:`InferenceError`
        on any other failure.
        """
        lib = self._lib
        batch = self._batch
        out: NDArray[np.float32] | None = None
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            last_chunk = start + self.n_batch >= len(tokens)
            for i, tok in enumerate(chunk):
                batch.token[i] = tok
                batch.pos[i] = pos0 + start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = logits and last_chunk and i == len(chunk) - 1
            batch.n_tokens = len(chunk)
            rc = lib.llama_decode(self._ptr, batch)
            if rc == 1:
                raise KVFull(f"KV cache full ({self.n_ctx} cells) while decoding {len(chunk)} tokens")
            if rc != 0:
                raise InferenceError(f"llama_decode failed with status {rc}")
        if logits and tokens:
            ptr = lib.llama_get_logits_ith(self._ptr, -1)
            if not ptr:
                raise InferenceError("llama.cpp returned no logits")
            out = np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,)).copy()
        return out

    # --- sequences ------------------------------------------------------------

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> None:
        if not self._lib.llama_memory_seq_rm(self._mem, seq, p0, p1):
            raise InferenceError(f"could not remove positions [{p0}, {p1}) of sequence {seq}")

    def seq_cp(self, src: int, dst: int) -> None:
        """Make ``dst`` share every cell of ``src`` (metadata only, no KV bytes copied)."""
        self._lib.llama_memory_seq_cp(self._mem, src, dst, -1, -1)

    def seq_pos_range(self, seq: int) -> tuple[int, int]:
        """``(min, max)`` position held for ``seq``; ``(-1, -1)`` when empty."""
        return (
            int(self._lib.llama_memory_seq_pos_min(self._mem, seq)),
            int(self._lib.llama_memory_seq_pos_max(self._mem, seq)),
        )

    def clear(self) -> None:
        self._lib.llama_memory_clear(self._mem, True)

    # --- state ------------------------------------------------------------------

    def state_size(self) -> int:
        """Bytes of the whole context state (all sequences, shared cells counted once)."""
        return int(self._lib.llama_state_get_size(self._ptr))

    def seq_state_size(self, seq: int) -> int:
        return int(self._lib.llama_state_seq_get_size(self._ptr, seq))

    def seq_state(self, seq: int) -> bytes:
        """One sequence's KV state, written into a buffer of its exact size."""
        size = self.seq_state_size(seq)
        buf = (ctypes.c_uint8 * size)()
        written = self._lib.llama_state_seq_get_data(self._ptr, buf, size, seq)
        if written != size:
            raise KVStateError(f"llama.cpp wrote {written} bytes of sequence state, expected {size}")
        return ctypes.string_at(buf, size)

    def probe_state_shape(self, seq: int) -> kvblob.SeqStateShape | None:
        """The shape of this context's sequence states (:class:`~meshagent.inference.kvblob.SeqStateShape`),
        measured on a 1-token export of its own; ``None`` if the layout is not recognised."""
        self.decode([self.model.bos], seq, 0, logits=False)
        try:
            state = self.seq_state(seq)
        finally:
            self.seq_rm(seq)
        shape = kvblob.measure_shape(state, 1)
        if shape is None:
            log.warning("unrecognised llama.cpp sequence state layout; KV blobs from peers will be refused")
        return shape

    def set_seq_state(self, seq: int, data: bytes, offset: int, size: int) -> None:
        """Load ``data[offset:offset+size]`` into ``seq`` (a bounded read of exactly ``size`` bytes)."""
        if offset < 0 or size <= 0 or offset + size > len(data):
            raise KVStateError("sequence state out of the blob's bounds")
        # Point into the immutable bytes object instead of copying megabytes.
        base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
        assert base is not None
        src = ctypes.cast(ctypes.c_void_p(base + offset), ctypes.POINTER(ctypes.c_uint8))
        read = self._lib.llama_state_seq_set_data(self._ptr, src, size, seq)
        if read != size:
            self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
            raise KVStateError(f"llama.cpp refused the sequence state (read {read} of {size} bytes)")
