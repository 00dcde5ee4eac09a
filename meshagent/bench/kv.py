"""``meshagent bench kv``: moving a session's KV cache vs recomputing it.

For each context size: prefill a session from its tokens in one engine (the
baseline, what a receiver without the KV must do: ``reprefill_s``), export its
KV (``kv_export_s``, ``kv_bytes``), import it into a *second* engine — its own
model load and context, as on another node (``kv_import_s``) — and compare the
greedy continuations of both (``identical``). ``ratio`` = re-prefill / import.
``rebuilt_identical`` tells whether a session rebuilt from tokens alone (the
fallback for a refused blob) also continued identically: llama.cpp does not
promise that (its kernels round differently per batch shape), the move does.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from meshagent.inference.engine import GenerateOptions, SessionId
from meshagent.inference.hashing import sha256_file
from meshagent.inference.llama_engine import LlamaEngine
from meshagent.inference.tiny import model_or_tiny

__all__ = ["DESCRIPTION", "add_arguments", "run", "bench_tokens"]

DESCRIPTION = "move a session's KV cache between engines vs re-prefilling it (llama.cpp)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None, help="a GGUF file (default: the tiny generated model)")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--ctx", type=int, action="append", help="context sizes in tokens (default: 512 and 2048)")
    parser.add_argument("--continue-tokens", type=int, default=32, help="greedy tokens compared after the move")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions; the best is reported")


def bench_tokens(n: int, vocab: int, bos: int = 1) -> list[int]:
    """``n`` deterministic token ids (BOS then a fixed pseudo-random pattern)."""
    lo = min(3, vocab - 1)
    return [bos] + [lo + (i * 7919 + 13) % (vocab - lo) for i in range(n - 1)]


def _one(src: LlamaEngine, dst: LlamaEngine, n: int, args: argparse.Namespace) -> dict[str, Any]:
    tokens = bench_tokens(n, src.vocab_size)
    opts = GenerateOptions(max_tokens=args.continue_tokens)
    reprefill = export = imp = float("inf")
    blob = b""
    for r in range(max(1, args.repeat)):
        sid = SessionId(f"src-{n}-{r}")
        t0 = time.perf_counter()
        src.import_kv(sid, tokens, None)
        t1 = time.perf_counter()
        blob = src.export_kv(sid)
        t2 = time.perf_counter()
        reprefill, export = min(reprefill, t1 - t0), min(export, t2 - t1)
        if r + 1 < args.repeat:
            src.drop(sid)
    used = True
    for r in range(max(1, args.repeat)):
        did = SessionId(f"dst-{n}-{r}")
        t0 = time.perf_counter()
        used = dst.import_kv(did, tokens, blob) and used
        imp = min(imp, time.perf_counter() - t0)
        if r + 1 < args.repeat:
            dst.drop(did)
    rid = SessionId(f"rebuilt-{n}")
    dst.import_kv(rid, tokens, None)
    moved = dst.generate(did, " and then", opts)
    rebuilt = dst.generate(rid, " and then", opts)
    stayed = src.generate(sid, " and then", opts)
    identical = used and moved.text == stayed.text and dst.tokens(did) == src.tokens(sid)
    for e, s in ((src, sid), (dst, did), (dst, rid)):
        e.drop(s)
    return {
        "ctx_tokens": n,
        "reprefill_s": reprefill,
        "kv_export_s": export,
        "kv_import_s": imp,
        "kv_bytes": len(blob),
        "ratio": reprefill / imp if imp > 0 else float("inf"),
        "identical": identical,
        "blob_used": used,
        "rebuilt_identical": rebuilt.text == stayed.text,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    path = model_or_tiny(args.model)
    sha = sha256_file(path)
    sizes = sorted(set(args.ctx or [512, 2048]))
    n_ctx = max(4096, max(sizes) + args.continue_tokens + 64)
    src = LlamaEngine(path, sha256=sha, n_ctx=n_ctx, n_threads=args.threads, max_sessions=4)
    dst = LlamaEngine(path, sha256=sha, n_ctx=n_ctx, n_threads=args.threads, max_sessions=4)
    try:
        # Warm both engines (model load, first-graph allocation) outside the timings.
        for e in (src, dst):
            e.import_kv(SessionId("warm"), bench_tokens(64, e.vocab_size), None)
            e.drop(SessionId("warm"))
        results = [_one(src, dst, n, args) for n in sizes]
    finally:
        src.close()
        dst.close()
    largest = results[-1]
    return {
        "model": path.name,
        "model_sha256": sha,
        "results": results,
        "ctx_tokens": largest["ctx_tokens"],
        "ratio": largest["ratio"],
        "identical": all(r["identical"] for r in results),
        "target_ratio": 20,
        "target_met": largest["ratio"] >= 20 and all(r["identical"] for r in results),
    }
