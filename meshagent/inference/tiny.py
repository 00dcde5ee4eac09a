"""A tiny llama-architecture GGUF with seeded random weights.

No small real LLM is available from the package registries here, so tests and
the demo run real llama.cpp on a model that this module writes with the
``gguf`` package. The weights are random but *seeded*: the same arguments
always give the same file (and the same sha256), so greedy decoding is
deterministic across processes and machines.

Vocabulary: SentencePiece-style with ``<unk> <s> </s>``, the 256 byte tokens
``<0x00>`` … ``<0xFF>`` (type BYTE) and one normal token ``▁`` for the space,
so any text tokenizes (one token per byte, spaces as ``▁``) and every
generated token detokenizes to exactly one byte or a space.

To make demos read well, the output projection gives large weights only to
the rows of lowercase letters, the space and a little punctuation and
near-zero weights to every other token, so greedy output is printable text
(gibberish, but readable gibberish). Correctness does not depend on it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

from meshagent.errors import ModelError

__all__ = [
    "TinyModelSpec",
    "make_tiny_model",
    "ensure_tiny_model",
    "tiny_model_filename",
    "model_or_tiny",
    "TINY_VOCAB_SIZE",
]

log = logging.getLogger(__name__)

_SPACE: Final = "\u2581"
_FIRST_BYTE: Final = 3
TINY_VOCAB_SIZE: Final = 3 + 256 + 1
_FAVOURED: Final = b"abcdefghijklmnopqrstuvwxyz.,"
_FORMAT: Final = 2
"""Bump when the generator changes, so cached files are regenerated."""

# Weight scales. llama.cpp's CPU kernels are not batch-invariant: a prompt
# prefilled in one batch and the same tokens decoded one by one give KV that
# differs in the last bit, and a chaotic random network can turn that into a
# different greedy token. These scales keep attention smooth (well-conditioned)
# while leaving the output sensitive to its context: measured here, 0 flips in
# 200 continuations of 48 tokens rebuilt from tokens in another context, and
# 64% of continuations change when one early token of the history changes.
_QK: Final = 1.0
_ATTN_OUT: Final = 0.5
_FFN_OUT: Final = 0.5
_LOGIT: Final = 4.0


@dataclass(frozen=True, slots=True)
class TinyModelSpec:
    """Shape of the generated model. The defaults give a ~7 MB file."""

    layers: int = 4
    dim: int = 256
    heads: int = 4
    ffn: int = 512
    n_ctx: int = 8192
    seed: int = 1234

    def validate(self) -> None:
        if self.layers < 1 or self.layers > 64:
            raise ModelError(f"layers must be 1..64, not {self.layers}")
        if self.dim < 16 or self.dim > 4096 or self.dim % self.heads:
            raise ModelError(f"dim must be 16..4096 and a multiple of heads ({self.heads}), not {self.dim}")
        if (self.dim // self.heads) % 2:
            raise ModelError("the head size must be even (RoPE)")
        if self.n_ctx < 64:
            raise ModelError(f"n_ctx must be at least 64, not {self.n_ctx}")


def _vocab() -> tuple[list[bytes], list[float], list[int]]:
    import gguf

    tokens: list[bytes] = [b"<unk>", b"<s>", b"</s>"]
    types = [int(gguf.TokenType.UNKNOWN), int(gguf.TokenType.CONTROL), int(gguf.TokenType.CONTROL)]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>".encode("ascii"))
        types.append(int(gguf.TokenType.BYTE))
    tokens.append(_SPACE.encode("utf-8"))
    types.append(int(gguf.TokenType.NORMAL))
    scores = [0.0] * len(tokens)
    return tokens, scores, types


def _favoured_ids() -> list[int]:
    return [_FIRST_BYTE + b for b in _FAVOURED] + [TINY_VOCAB_SIZE - 1]


def make_tiny_model(path: Path, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Write the tiny model to ``path`` (atomically) and return the path."""
    import gguf

    spec.validate()
    rng = np.random.default_rng(spec.seed)
    d, f, v = spec.dim, spec.ffn, TINY_VOCAB_SIZE

    def mat(rows: int, cols: int, scale: float = 1.0) -> NDArray[np.float16]:
        w: NDArray[np.float16] = (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float16)
        return w

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        writer.add_name(f"meshagent-tiny-{spec.layers}x{spec.dim}-s{spec.seed}")
        writer.add_context_length(spec.n_ctx)
        writer.add_embedding_length(d)
        writer.add_block_count(spec.layers)
        writer.add_feed_forward_length(f)
        writer.add_head_count(spec.heads)
        writer.add_head_count_kv(spec.heads)
        writer.add_rope_dimension_count(d // spec.heads)
        writer.add_rope_freq_base(10000.0)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        tokens, scores, types = _vocab()
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_unk_token_id(0)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(False)

        writer.add_tensor("token_embd.weight", (rng.standard_normal((v, d))).astype(np.float16))
        for i in range(spec.layers):
            writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, dtype=np.float32))
            writer.add_tensor(f"blk.{i}.attn_q.weight", mat(d, d, _QK))
            writer.add_tensor(f"blk.{i}.attn_k.weight", mat(d, d, _QK))
            writer.add_tensor(f"blk.{i}.attn_v.weight", mat(d, d))
            writer.add_tensor(f"blk.{i}.attn_output.weight", mat(d, d, _ATTN_OUT))
            writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d, dtype=np.float32))
            writer.add_tensor(f"blk.{i}.ffn_gate.weight", mat(f, d))
            writer.add_tensor(f"blk.{i}.ffn_up.weight", mat(f, d))
            writer.add_tensor(f"blk.{i}.ffn_down.weight", mat(d, f, _FFN_OUT))
        writer.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
        out = rng.standard_normal((v, d)) * 0.02
        favoured = _favoured_ids()
        out[favoured] = rng.standard_normal((len(favoured), d)) * _LOGIT / np.sqrt(d)
        writer.add_tensor("output.weight", out.astype(np.float16))

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except (OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"cannot write tiny model to {path}: {exc}") from exc
    finally:
        writer.close()
    os.replace(tmp, path)
    log.info("wrote tiny model %s (%d layers, dim %d, seed %d)", path, spec.layers, spec.dim, spec.seed)
    return path


def tiny_model_filename(spec: TinyModelSpec = TinyModelSpec()) -> str:
    """A file name that changes whenever the generated bytes would."""
    return f"tiny-llama-L{spec.layers}-D{spec.dim}-H{spec.heads}-F{spec.ffn}-C{spec.n_ctx}-s{spec.seed}-v{_FORMAT}.gguf"


def ensure_tiny_model(directory: Path, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """The tiny model in ``directory``, generated once (safe if several processes race)."""
    path = Path(directory) / tiny_model_filename(spec)
    if not path.is_file():
        make_tiny_model(path, spec)
    return path


def model_or_tiny(path: Path | None) -> Path:
    """``path`` if given, else the default tiny model in the user's cache (generated once)."""
    if path is not None:
        return Path(path)
    from meshagent.config import default_data_dir

    return ensure_tiny_model(default_data_dir() / "cache" / "models")
