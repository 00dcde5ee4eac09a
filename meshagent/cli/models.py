"""``meshagent models``: list the models of this node's config; make the tiny test model.

Listing works offline (it reads the config, not the running node): models
declared in ``--config`` (default ``<data dir>/config.toml``) plus the
built-in embedder, with sha256 (cached) and measured rates when known.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from meshagent.config import default_data_dir, load_config

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list this node's models, or make the tiny test model")
    p.add_argument(
        "--data-dir", type=Path, default=None, help="the node's data dir (default: per user; $MESHAGENT_HOME)"
    )
    p.add_argument("--config", type=Path, help="TOML config file (default: <data dir>/config.toml if present)")
    p.add_argument(
        "--measure", action="store_true", help="load each LLM and measure its prefill/decode rates if not cached"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_list)
    actions = p.add_subparsers(dest="models_action", metavar="ACTION")
    t = actions.add_parser("make-tiny", help="write a tiny llama GGUF with seeded random weights")
    t.add_argument("path", type=Path, help="where to write the .gguf file")
    t.add_argument("--layers", type=int, default=4)
    t.add_argument("--dim", type=int, default=256)
    t.add_argument("--heads", type=int, default=4)
    t.add_argument("--ffn", type=int, default=None, help="feed-forward size (default 2 × dim)")
    t.add_argument("--n-ctx", type=int, default=8192, help="training context written in the file")
    t.add_argument("--seed", type=int, default=1234)
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.set_defaults(func=cmd_make_tiny)


def cmd_list(args: argparse.Namespace) -> int:
    from meshagent.inference.registry import ModelRegistry

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    path = args.config
    if path is None and (data_dir / "config.toml").exists():
        path = data_dir / "config.toml"
    config = load_config(path)
    registry = ModelRegistry(config.models, cache_dir=data_dir / "cache" / "models")
    if args.measure:
        for name in registry.names():
            if registry.entry(name).kind == "llm":
                registry.llm(name).self_benchmark()
    infos = registry.infos()
    if args.json:
        print(json.dumps({"models": [asdict(i) for i in infos]}))
        return 0
    table = Table(title="models")
    for col in (
        "name",
        "kind",
        "sha256",
        "size",
        "params",
        "quant",
        "ctx",
        "tags",
        "prefill tok/s",
        "decode tok/s",
        "where",
    ):
        table.add_column(col)
    for i in infos:
        table.add_row(
            i.name,
            i.kind,
            i.sha256[:12],
            f"{i.size_bytes / 1e6:.1f} MB",
            f"{i.parameters / 1e6:.1f}M" if i.parameters else "",
            i.quantization,
            str(i.n_ctx),
            " ".join(i.tags),
            f"{i.prefill_tps:.0f}" if i.prefill_tps else "-",
            f"{i.decode_tps:.0f}" if i.decode_tps else "-",
            ",".join(i.providers) if i.providers else i.accelerator,
        )
    Console().print(table)
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from meshagent.inference.hashing import sha256_file
    from meshagent.inference.tiny import TinyModelSpec, make_tiny_model

    spec = TinyModelSpec(
        layers=args.layers,
        dim=args.dim,
        heads=args.heads,
        ffn=args.ffn or 2 * args.dim,
        n_ctx=args.n_ctx,
        seed=args.seed,
    )
    path = make_tiny_model(args.path, spec)
    result = {"path": str(path), "size_bytes": path.stat().st_size, "sha256": sha256_file(path), **asdict(spec)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"wrote {path} ({result['size_bytes']} bytes, sha256 {result['sha256']})")
    return 0
