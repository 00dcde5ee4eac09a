"""``meshagent bench fork``: forking a session that shares its KV prefix.

A parent session holds ``prefix_tokens`` of KV; it is forked ``forks`` times.
Each fork is a llama.cpp sequence copy (metadata only), so its time and the
context's state growth should not depend on the prefix length. Figures:

``fork_ms_p50``                median time of one fork;
``kv_bytes_prefix``            the parent's KV state bytes;
``kv_bytes_growth_per_fork``   growth of the whole context state per fork
                               (shared cells are counted once);
``kv_bytes_growth_per_fork_after_decode``  the same after each child decoded
                               its own ``--child-tokens`` (its private suffix);
``copy_ms_p50``                baseline: copying the prefix KV into a new
                               session by export + import, as without sharing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from meshagent.bench.kv import bench_tokens
from meshagent.inference.engine import GenerateOptions, SessionId
from meshagent.inference.hashing import sha256_file
from meshagent.inference.llama_engine import LlamaEngine
from meshagent.inference.tiny import model_or_tiny

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = "fork a session that shares its KV prefix (llama.cpp sequence copy)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None, help="a GGUF file (default: the tiny generated model)")
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--forks", type=int, default=8)
    parser.add_argument("--prefix-tokens", type=int, default=2048)
    parser.add_argument("--child-tokens", type=int, default=8, help="tokens each child generates after forking")


def run(args: argparse.Namespace) -> dict[str, Any]:
    path = model_or_tiny(args.model)
    n_ctx = max(4096, args.prefix_tokens + args.forks * (args.child_tokens + 8) + 64)
    engine = LlamaEngine(
        path, sha256=sha256_file(path), n_ctx=n_ctx, n_threads=args.threads, max_sessions=args.forks + 4
    )
    try:
        parent = SessionId("parent")
        engine.import_kv(parent, bench_tokens(args.prefix_tokens, engine.vocab_size), None)
        prefix_bytes = engine.session_state_bytes(parent)
        before = engine.context_state_bytes()
        fork_ms: list[float] = []
        children = [SessionId(f"child-{i}") for i in range(args.forks)]
        for child in children:
            t0 = time.perf_counter()
            engine.fork(parent, child)
            fork_ms.append((time.perf_counter() - t0) * 1e3)
        after_fork = engine.context_state_bytes()
        texts = []
        for i, child in enumerate(children):
            texts.append(engine.generate(child, f" branch {i}:", GenerateOptions(max_tokens=args.child_tokens)).text)
        after_decode = engine.context_state_bytes()
        independent = engine.tokens(parent) == bench_tokens(args.prefix_tokens, engine.vocab_size) and len(
            {tuple(engine.tokens(c)) for c in children}
        ) == len(children)
        for child in children:
            engine.drop(child)

        copy_ms: list[float] = []
        blob = engine.export_kv(parent)
        tokens = engine.tokens(parent)
        for i in range(3):
            t0 = time.perf_counter()
            engine.import_kv(SessionId(f"copy-{i}"), tokens, engine.export_kv(parent))
            copy_ms.append((time.perf_counter() - t0) * 1e3)
            engine.drop(SessionId(f"copy-{i}"))
    finally:
        engine.close()
    growth = (after_fork - before) / max(1, args.forks)
    growth_decode = (after_decode - before) / max(1, args.forks)
    p50 = statistics.median(fork_ms)
    return {
        "model": path.name,
        "forks": args.forks,
        "prefix_tokens": args.prefix_tokens,
        "fork_ms_p50": p50,
        "fork_ms_max": max(fork_ms),
        "kv_bytes_prefix": prefix_bytes,
        "kv_bytes_growth_per_fork": growth,
        "growth_fraction": growth / prefix_bytes if prefix_bytes else 0.0,
        "kv_bytes_growth_per_fork_after_decode": growth_decode,
        "copy_ms_p50": statistics.median(copy_ms),
        "copy_bytes": len(blob),
        "children_independent": independent,
        "target_met": p50 < 5.0 and growth < 0.1 * prefix_bytes,
    }
