"""Self-benchmark: prefill and decode tokens/s of a model on this node.

Measured once on first use of a model and cached per model sha256 in a small
JSON file, because bidders quote prefill and decode times from these rates
(a wrong rate means wrong bids, so it is measured, never guessed).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshagent.inference.llama_api import LlamaContext

__all__ = ["Throughput", "ThroughputCache", "measure_throughput"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Throughput:
    prefill_tps: float
    decode_tps: float
    prefill_tokens: int
    decode_tokens: int
    measured_at: float
    """Unix time of the measurement."""


class ThroughputCache:
    """``<dir>/<model sha256>.json`` files holding a :class:`Throughput` each."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, sha256: str) -> Path:
        if not sha256 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.directory / f"{sha256}.json"

    def get(self, sha256: str) -> Throughput | None:
        try:
            raw = json.loads(self._path(sha256).read_text(encoding="utf-8"))
            return Throughput(
                prefill_tps=float(raw["prefill_tps"]),
                decode_tps=float(raw["decode_tps"]),
                prefill_tokens=int(raw["prefill_tokens"]),
                decode_tokens=int(raw["decode_tokens"]),
                measured_at=float(raw["measured_at"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable throughput cache for %s: %s", sha256[:12], exc)
            return None

    def put(self, sha256: str, value: Throughput) -> None:
        path = self._path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(value)), encoding="utf-8")
        os.replace(tmp, path)


def measure_throughput(
    ctx: LlamaContext, seq: int, *, prefill_tokens: int = 256, decode_tokens: int = 32
) -> Throughput:
    """Prefill ``prefill_tokens`` then greedily decode ``decode_tokens`` on scratch sequence ``seq``.

    The scratch sequence is removed afterwards. Prompt tokens are a fixed
    pseudo-random pattern so that every node measures the same work.
    """
    n_vocab = ctx.model.n_vocab
    n = max(8, min(prefill_tokens, ctx.n_ctx // 2))
    m = max(1, min(decode_tokens, ctx.n_ctx - n - 1))
    prompt = [ctx.model.bos] + [(i * 7919 + 13) % n_vocab for i in range(n - 1)]
    try:
        # Warm up first (graph allocation, caches): the first call of a fresh context is not its speed.
        ctx.decode(prompt[:8], seq, 0, logits=True)
        ctx.seq_rm(seq)
        t0 = time.perf_counter()
        logits = ctx.decode(prompt, seq, 0, logits=True)
        t1 = time.perf_counter()
        pos = n
        for _ in range(m):
            assert logits is not None
            tok = int(logits.argmax())
            logits = ctx.decode([tok], seq, pos, logits=True)
            pos += 1
        t2 = time.perf_counter()
    finally:
        ctx.seq_rm(seq)
    result = Throughput(
        prefill_tps=n / max(t1 - t0, 1e-9),
        decode_tps=m / max(t2 - t1, 1e-9),
        prefill_tokens=n,
        decode_tokens=m,
        measured_at=time.time(),
    )
    log.info("self-benchmark: prefill %.0f tok/s, decode %.0f tok/s", result.prefill_tps, result.decode_tps)
    return result
