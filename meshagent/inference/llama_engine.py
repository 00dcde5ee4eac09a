"""The llama.cpp engine: per-agent sessions as sequences of one shared context.

Each session is a token history (the truth; its copy lives in the agent's
journal) plus, when resident, a llama.cpp *sequence* in one unified KV cache
holding the KV of a prefix of those tokens (a cache). Consequences:

* ``fork`` gives the child a new sequence id on the *same cells*
  (``llama_memory_seq_cp``): no KV byte is copied, so it costs O(1) in the
  prefix length; the cells are shared until the branches diverge.
* Under memory pressure (no free cells, or all sequence ids taken) the least
  recently used *other* session is evicted: its sequence is removed, its
  tokens stay, and its next use re-prefills them.
* ``export_kv`` / ``import_kv`` move one sequence with the per-sequence state
  API and exact lengths, wrapped in a bound blob (:mod:`.kvblob`). A refused
  blob (truncated, corrupt, other model, other engine, other tokens) is logged
  and the session is rebuilt from its tokens instead — never a crash.

Decoding is deterministic: greedy by default, and seeded sampling otherwise.
What is exact and what is not: an imported blob restores the sequence's KV
bytes, so the continuation is bit-identical to the one without the move. A
session rebuilt from tokens (refused blob, eviction) holds the same tokens at
the same positions, but llama.cpp's CPU kernels round differently for
different batch shapes and cache layouts, so its KV can differ in the last
bit and a greedy continuation can differ at a near-tie. The tiny test model is
built well-conditioned so that this does not happen there (:mod:`.tiny`).

A blob whose digest matches can still be crafted (the digest detects
accidents; a peer can compute one for any bytes). Every byte of its state is
walked against the shape of this node's own model before llama.cpp reads one
(:func:`.kvblob.check_seq_state`: exact total size, cell records, layer count,
tensor types and row sizes, finite values); its positions are checked again
after loading, and a sequence llama.cpp cannot fully remove is scrubbed by
clearing the context (every session stays recoverable from its tokens).
All public methods are blocking and serialised by a lock; run them through
``trio.to_thread.run_sync`` behind a ``CapacityLimiter`` of
:func:`meshagent.inference.capacity.recommended_capacity` (1 per context).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from meshagent.errors import ContextOverflow, InferenceError, KVStateError
from meshagent.inference import kvblob
from meshagent.inference.engine import GenerateOptions, Generation, ModelInfo, SessionId
from meshagent.inference.gguf_info import GgufInfo, check_gguf, read_gguf_info, with_size_tag
from meshagent.inference.hashing import sha256_file
from meshagent.inference.llama_api import (
    ContextParams,
    KVFull,
    LlamaContext,
    LlamaModel,
    engine_version,
    supports_gpu_offload,
)
from meshagent.inference.selfbench import LearnedRates, Throughput, ThroughputCache, measure_throughput

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["LlamaEngine", "UnknownSession"]

log = logging.getLogger(__name__)


class UnknownSession(InferenceError):
    """No session with that id is held by this engine."""


@dataclass(slots=True)
class _Session:
    tokens: list[int]
    seq: int | None = None
    n_kv: int = 0
    """``tokens[:n_kv]`` are in the KV cache of ``seq``."""
    last_used: int = field(default=0)
    """Logical clock of the last use (LRU order)."""
    last_used_at: float = field(default=0.0)
    """``time.monotonic()`` of the last use (idle eviction)."""


class LlamaEngine:
    """An :class:`~meshagent.inference.engine.LlmEngine` on llama.cpp (lazy: loads on first use)."""

    def __init__(
        self,
        path: Path,
        *,
        sha256: str | None = None,
        name: str | None = None,
        n_ctx: int = 4096,
        n_gpu_layers: int = 0,
        n_threads: int = 0,
        max_sessions: int = 16,
        tags: tuple[str, ...] = (),
        price_per_1k_tokens: float | None = None,
        throughput_cache: ThroughputCache | None = None,
    ) -> None:
        self.path = Path(path)
        check_gguf(self.path)
        if max_sessions < 1:
            raise InferenceError("max_sessions must be at least 1")
        # The model's identity on the mesh; pass the registry's cached digest
        # to avoid hashing the file again.
        self.sha256 = sha256 or sha256_file(self.path)
        self.name = name or self.path.stem
        self._n_ctx = n_ctx
        self._n_gpu_layers = n_gpu_layers
        self._params = ContextParams(n_ctx=n_ctx, n_seq_max=max_sessions + 1, n_threads=n_threads)
        self._tags = tags
        self._price = price_per_1k_tokens
        self._bench_cache = throughput_cache
        self.rates = LearnedRates(throughput_cache, self.sha256)
        """Prefill/decode rates: cached or measured at first, then learned from every generation."""
        self._meta: GgufInfo | None = None
        self._lock = threading.RLock()
        self._model: LlamaModel | None = None
        self._ctx: LlamaContext | None = None
        self._sessions: dict[SessionId, _Session] = {}
        self._free_seqs: list[int] = []
        self._scratch_seq = max_sessions  # reserved for the self-benchmark
        self._clock = 0
        self._state_shape: kvblob.SeqStateShape | None = None

    # --- lifecycle --------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._ctx is not None

    def load(self) -> None:
        """Load the model and create the context (done implicitly on first use)."""
        with self._lock:
            self._loaded()

    def close(self) -> None:
        """Free the context and the model; sessions are forgotten."""
        with self._lock:
            if self._ctx is not None:
                self._ctx.close()
            if self._model is not None:
                self._model.close()
            self._ctx = self._model = None
            self._sessions.clear()

    def _loaded(self) -> LlamaContext:
        if self._ctx is not None:
            return self._ctx
        t0 = time.perf_counter()
        model = LlamaModel(self.path, n_gpu_layers=self._n_gpu_layers)
        try:
            ctx = LlamaContext(model, self._params)
        except InferenceError:
            model.close()
            raise
        self._model, self._ctx = model, ctx
        self._free_seqs = list(range(self._scratch_seq - 1, -1, -1))
        # What an honest KV state of this model and context holds, to check peers' blobs against.
        self._state_shape = ctx.probe_state_shape(self._scratch_seq)
        log.info("loaded %s (%s) in %.2fs: n_ctx=%d", self.name, self.path, time.perf_counter() - t0, ctx.n_ctx)
        if self._bench_cache is not None and self.rates.seed is None:
            self.rates.benchmark(lambda: measure_throughput(ctx, self._scratch_seq))
        return ctx

    # --- adverts ------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        if self._meta is None:
            self._meta = read_gguf_info(self.path)
        gpu = self._n_gpu_layers != 0 and supports_gpu_offload()
        tp = self.rates.current()
        return ModelInfo(
            name=self.name,
            sha256=self.sha256,
            size_bytes=self.path.stat().st_size,
            kind="llm",
            parameters=self._meta.parameters,
            quantization=self._meta.quantization,
            n_ctx=self._n_ctx,
            tags=with_size_tag(self._tags, self._meta.parameters),
            prefill_tps=tp.prefill_tps if tp else None,
            decode_tps=tp.decode_tps if tp else None,
            price_per_1k_tokens=self._price,
            accelerator="gpu" if gpu else "cpu",
            gpu_layers=self._n_gpu_layers if gpu else 0,
        )

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def vocab_size(self) -> int:
        with self._lock:
            self._loaded()
            assert self._model is not None
            return self._model.n_vocab

    def context_state_bytes(self) -> int:
        """Bytes of the whole context's state: every session's KV, shared cells counted once."""
        with self._lock:
            return self._loaded().state_size()

    def session_state_bytes(self, session: SessionId) -> int:
        """Bytes of one session's KV state (what :meth:`export_kv` would carry, less its header)."""
        with self._lock:
            ctx = self._loaded()
            s = self._get(session)
            return ctx.seq_state_size(s.seq) if s.seq is not None else 0

    @property
    def throughput(self) -> Throughput | None:
        return self.rates.current()

    def self_benchmark(self, *, again: bool = False) -> Throughput:
        """This model's rates here, measured now if unknown (``again``: check a known start, :meth:`LearnedRates.benchmark`)."""
        with self._lock:
            known = self.rates.seed is not None
            ctx = self._loaded()  # measures on first load when nothing is known
            if self.rates.seed is None or (known and again):
                self.rates.benchmark(lambda: measure_throughput(ctx, self._scratch_seq), again=again)
            current = self.rates.current()
            assert current is not None
            return current

    # --- sessions -------------------------------------------------------------------

    def sessions(self) -> list[SessionId]:
        with self._lock:
            return list(self._sessions)

    def is_resident(self, session: SessionId) -> bool:
        """Whether the session has KV in the context (else its next use re-prefills)."""
        with self._lock:
            s = self._sessions.get(session)
            return s is not None and s.seq is not None and s.n_kv > 0

    def tokens(self, session: SessionId) -> list[int]:
        with self._lock:
            return list(self._get(session).tokens)

    def count_tokens(self, text: str, *, first: bool = False) -> int:
        """How many tokens ``text`` adds to a conversation (``first``: with BOS)."""
        with self._lock:
            self._loaded()
            assert self._model is not None
            return len(self._model.tokenize(text, add_bos=first))

    def drop(self, session: SessionId) -> None:
        with self._lock:
            s = self._sessions.pop(session, None)
            if s is not None:
                self._release(s)

    def evict(self, session: SessionId) -> None:
        """Free a session's KV cells but keep its tokens (it re-prefills on next use)."""
        with self._lock:
            self._release(self._get(session))

    def evict_idle(self, idle_s: float) -> int:
        """Evict every session unused for ``idle_s`` seconds; returns how many were evicted.

        The node can call this periodically or when the host runs short of
        memory; evicted sessions keep their tokens and re-prefill on next use.
        """
        with self._lock:
            cutoff = time.monotonic() - idle_s
            idle = [s for s in self._sessions.values() if s.seq is not None and s.last_used_at <= cutoff]
            for s in idle:
                self._release(s)
            return len(idle)

    def _get(self, session: SessionId) -> _Session:
        s = self._sessions.get(session)
        if s is None:
            raise UnknownSession(f"no session {session!r} on model {self.name}")
        return s

    def _touch(self, s: _Session) -> None:
        self._clock += 1
        s.last_used = self._clock
        s.last_used_at = time.monotonic()

    def _release(self, s: _Session) -> None:
        if s.seq is not None and self._ctx is not None:
            self._ctx.seq_rm(s.seq)
            self._free_seqs.append(s.seq)
        s.seq, s.n_kv = None, 0

    def _evict_lru(self, keep: set[int]) -> bool:
        """Evict the least recently used resident session whose id is not in ``keep``."""
        victims = [s for s in self._sessions.values() if s.seq is not None and id(s) not in keep]
        if not victims:
            return False
        victim = min(victims, key=lambda s: s.last_used)
        log.info("evicting an idle session (%d tokens) from %s under memory pressure", len(victim.tokens), self.name)
        self._release(victim)
        return True

    def _attach(self, s: _Session, keep: set[int]) -> int:
        """Give ``s`` a sequence id, evicting an idle session if all are taken."""
        if s.seq is None:
            if not self._free_seqs and not self._evict_lru(keep | {id(s)}):
                raise InferenceError(f"no free sequence on {self.name}")
            s.seq, s.n_kv = self._free_seqs.pop(), 0
        return s.seq

    def _feed(self, s: _Session, *, logits: bool) -> NDArray[np.float32] | None:
        """Decode ``s.tokens[s.n_kv:]`` into its sequence, evicting others when the cache is full."""
        ctx = self._loaded()
        seq = self._attach(s, set())
        while True:
            pending = s.tokens[s.n_kv :]
            try:
                out = ctx.decode(pending, seq, s.n_kv, logits=logits)
            except KVFull:
                s.n_kv = ctx.seq_pos_range(seq)[1] + 1
                if not self._evict_lru({id(s)}):
                    raise InferenceError(
                        f"the KV cache of {self.name} ({ctx.n_ctx} cells) is full with this session alone"
                    ) from None
                continue
            s.n_kv = len(s.tokens)
            return out

    # --- generation -------------------------------------------------------------------

    def generate(self, session: SessionId, prompt: str, options: GenerateOptions) -> Generation:
        with self._lock:
            ctx = self._loaded()
            assert self._model is not None
            model = self._model
            s = self._sessions.get(session) or _Session(tokens=[])
            new = model.tokenize(prompt, add_bos=not s.tokens)
            if not s.tokens and not new:
                raise InferenceError("an empty prompt cannot start a conversation")
            total = len(s.tokens) + len(new)
            if total + (1 if options.max_tokens > 0 else 0) > ctx.n_ctx:
                raise ContextOverflow(
                    f"{total} tokens (history {len(s.tokens)} + prompt {len(new)}) do not fit "
                    f"in the context of {ctx.n_ctx} tokens of {self.name}"
                )
            self._sessions[session] = s
            self._touch(s)
            history = len(s.tokens)
            reused = s.n_kv if s.seq is not None else 0
            s.tokens.extend(new)
            try:
                self._attach(s, set())
                if s.n_kv == len(s.tokens):
                    # Everything is cached but the logits are gone: recompute the last token.
                    ctx.seq_rm(s.seq, s.n_kv - 1, -1)  # type: ignore[arg-type]
                    s.n_kv -= 1
                    reused = s.n_kv
                fed = len(s.tokens) - s.n_kv
                t0 = time.perf_counter()
                logits = self._feed(s, logits=True)
                t1 = time.perf_counter()
                out = self._decode_loop(s, logits, options, limit=min(options.max_tokens, ctx.n_ctx - total))
            except InferenceError:
                # A failed call leaves no trace: the session is as it was before.
                del s.tokens[history:]
                if not history:
                    self.drop(session)
                elif s.seq is not None and s.n_kv > history:
                    ctx.seq_rm(s.seq, history, -1)
                    s.n_kv = history
                raise
            t2 = time.perf_counter()
            self.rates.observe(prefill_tokens=fed, prefill_s=t1 - t0, decode_tokens=len(out), decode_s=t2 - t1)
            text = b"".join(model.piece(t) for t in out).decode("utf-8", "replace")
            return Generation(
                text=text,
                prompt_tokens=len(new),
                completion_tokens=len(out),
                prefill_s=t1 - t0,
                decode_s=t2 - t1,
                reused_tokens=min(reused, history),
            )

    def _decode_loop(
        self, s: _Session, logits: NDArray[np.float32] | None, options: GenerateOptions, *, limit: int
    ) -> list[int]:
        assert self._model is not None
        pick = _sampler(options)
        out: list[int] = []
        for i in range(limit):
            assert logits is not None
            tok = pick(logits)
            if self._model.is_eog(tok):
                break
            out.append(tok)
            s.tokens.append(tok)
            if i + 1 < limit:
                # The last token is left undecoded: the next call decodes it with its prompt.
                logits = self._feed(s, logits=True)
        return out

    def fork(self, parent: SessionId, child: SessionId) -> None:
        with self._lock:
            ctx = self._loaded()
            p = self._get(parent)
            if child == parent:
                raise InferenceError("a session cannot be forked onto itself")
            self.drop(child)
            c = _Session(tokens=list(p.tokens))
            self._sessions[child] = c
            self._touch(p)
            self._touch(c)
            if p.seq is not None and p.n_kv > 0:
                seq = self._attach(c, {id(p)})
                ctx.seq_cp(p.seq, seq)  # shares the cells: metadata only
                c.n_kv = p.n_kv

    # --- moving KV ----------------------------------------------------------------------

    def export_kv(self, session: SessionId) -> bytes:
        """The session's KV as a bound blob; :class:`KVStateError` if it is not resident.

        A non-resident (evicted or never prefilled) session has nothing to
        export: send its tokens alone and let the receiver prefill them.
        """
        with self._lock:
            ctx = self._loaded()
            s = self._get(session)
            if s.seq is None or s.n_kv == 0:
                raise KVStateError(f"session {session!r} has no KV cache resident to export")
            state = ctx.seq_state(s.seq)
            return kvblob.pack_blob(
                model_sha256=self.sha256, engine=engine_version(), tokens=s.tokens[: s.n_kv], state=state
            )

    def import_kv(self, session: SessionId, tokens: list[int], blob: bytes | None) -> bool:
        with self._lock:
            ctx = self._loaded()
            if len(tokens) >= ctx.n_ctx:
                raise ContextOverflow(f"{len(tokens)} tokens do not fit in the context of {ctx.n_ctx} of {self.name}")
            assert self._model is not None
            n_vocab = self._model.n_vocab
            if any(not 0 <= t < n_vocab for t in tokens):
                raise InferenceError(f"token ids outside the vocabulary of {self.name} ({n_vocab})")
            self.drop(session)
            s = self._sessions[session] = _Session(tokens=list(tokens))
            self._touch(s)
            if not tokens:
                return False
            if blob is not None:
                try:
                    self._load_blob(s, ctx, blob)
                    return True
                except KVStateError as exc:
                    log.warning(
                        "refused KV blob for session %r: %s; re-prefilling %d tokens", session, exc, len(tokens)
                    )
                    self._release(s)
            self._feed(s, logits=False)
            return False

    def _scrub(self, seq: int) -> None:
        """Remove a sequence; if cells at positions llama.cpp cannot remove remain, clear the context.

        Clearing evicts every session (all stay recoverable from their tokens);
        it only happens after a crafted blob got past the checks.
        """
        ctx = self._loaded()
        ctx.seq_rm(seq)
        if ctx.seq_pos_range(seq) != (-1, -1):
            log.warning("clearing the context of %s: a refused KV blob left unremovable cells", self.name)
            ctx.clear()
            for other in self._sessions.values():
                if other.seq is not None and other.seq != seq:
                    self._free_seqs.append(other.seq)
                    other.seq, other.n_kv = None, 0

    def _load_blob(self, s: _Session, ctx: LlamaContext, blob: bytes) -> None:
        shape = self._state_shape
        if shape is None:
            raise KVStateError("this node cannot check KV states of this model (unrecognised layout)")
        header, offset = kvblob.unpack_blob(
            blob,
            model_sha256=self.sha256,
            engine=engine_version(),
            tokens=s.tokens,
            max_state=shape.size(len(s.tokens)),
        )
        # Every byte checked against this model's shape before llama.cpp reads one.
        kvblob.check_seq_state(blob, offset, header.state_len, n_tokens=header.n_tokens, shape=shape)
        seq = self._attach(s, set())
        while True:
            try:
                ctx.set_seq_state(seq, blob, offset, header.state_len)
                break
            except KVStateError:
                # Most likely no room for the cells (the digest matched): make room and retry.
                if not self._evict_lru({id(s)}):
                    raise
        restored = ctx.seq_pos_range(seq)
        if restored != (0, header.n_tokens - 1):
            self._scrub(seq)
            raise KVStateError(f"KV blob restored positions {restored}, expected (0, {header.n_tokens - 1})")
        s.n_kv = header.n_tokens


def _sampler(options: GenerateOptions) -> Callable[[NDArray[np.float32]], int]:
    if options.temperature <= 0:
        return lambda logits: int(np.argmax(logits))
    rng = np.random.default_rng(options.seed)
    temperature = float(options.temperature)

    def sample(logits: NDArray[np.float32]) -> int:
        z = logits.astype(np.float64) / temperature
        z -= z.max()
        p = np.exp(z)
        p /= p.sum()
        return int(rng.choice(len(p), p=p))

    return sample
