"""``meshagent models``: list the models of this node's config; make the tiny test model.

Listing works offline (it reads the config): models declared in
``--config`` (default ``<data dir>/config.toml``) plus the built-in embedder,
with sha256 and the rates measured on this machine (both cached per user, the
cache the node uses). When the node of the data dir is running, the rates are
the ones it advertises to its peers (an emulated profile's slower ones, and
whatever it learned since it started), and models it holds beyond the config
are listed too.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from meshagent.config import default_data_dir, load_config, user_cache_dir

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list this node's models, or make the tiny test model")
    p.add_argument(
        "--data-dir", type=Path, default=None, help="the node's data dir (default: per user; $MESHAGENT_HOME)"
    )
    p.add_argument("--config", type=Path, help="TOML config file (default: <data dir>/config.toml if present)")
    p.add_argument(
        "--measure", action="store_true",
        help="load each LLM whose rates are not cached yet and measure its prefill/decode rates (cached ones are kept)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_list)
    actions = p.add_subparsers(dest="models_action", metavar="ACTION")
    t = actions.add_parser(
        "make-tiny", help="write a tiny llama GGUF with seeded random weights",
        description="Write a llama-architecture GGUF with seeded random weights and a byte-level vocabulary: real "
                    "llama.cpp runs it, its text is gibberish. The same flags give the same bytes on every machine. "
                    "Sizes: the default (4 layers, dim 256) is 5.5 MB with 2.8M parameters (the demo's laptop "
                    "model); --layers 2 --dim 128 is 0.8 MB, 0.4M (the phone's); --layers 6 --dim 384 --heads 6 "
                    "is 18 MB, 9.1M (the gpu box's). All are size=tiny by parameter count: tag them in the "
                    "config (tags = [\"size=large\"]) or with run --model-tag to stand for bigger models.")
    t.add_argument("path", type=Path, help="where to write the .gguf file")
    t.add_argument("--layers", type=int, default=4, help="transformer blocks, 1-64 (default 4)")
    t.add_argument("--dim", type=int, default=256, help="embedding size, 16-4096, a multiple of --heads (default 256)")
    t.add_argument("--heads", type=int, default=4, help="attention heads; dim / heads must be even (default 4)")
    t.add_argument("--ffn", type=int, default=None, help="feed-forward size (default 2 × dim)")
    t.add_argument("--n-ctx", type=int, default=8192, help="training context written in the file, at least 64 (default 8192)")
    t.add_argument("--seed", type=int, default=1234, help="seed of the random weights (default 1234)")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.set_defaults(func=cmd_make_tiny)


def _advertised(data_dir: Path) -> list[dict[str, Any]] | None:
    """The models the running node of ``data_dir`` advertises (``None`` when no node runs there)."""
    from meshagent.errors import MeshError
    from meshagent.node.control import call

    try:
        return list(call(data_dir, "status", timeout=10.0)["advert"]["models"])
    except MeshError:
        return None


def cmd_list(args: argparse.Namespace) -> int:
    from meshagent.inference.registry import ModelRegistry

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    path = args.config
    if path is None and (data_dir / "config.toml").exists():
        path = data_dir / "config.toml"
    config = load_config(path)
    registry = ModelRegistry(config.models, cache_dir=user_cache_dir())
    if args.measure:
        for info in registry.infos():
            if info.kind == "llm" and info.decode_tps is None:
                registry.llm(info.name).self_benchmark()
    rows = [asdict(i) | {"rates_from": "this machine" if i.decode_tps else None} for i in registry.infos()]
    advertised = _advertised(data_dir)
    for ad in advertised or []:
        row = next((r for r in rows if r["sha256"] == ad["sha256"]), None)
        if row is None:
            rows.append({**ad, "providers": [], "accelerator": "", "rates_from": None})
            row = rows[-1]
        if ad.get("decode_tps"):
            row.update(prefill_tps=ad.get("prefill_tps"), decode_tps=ad["decode_tps"], rates_from="node advert")
    if args.json:
        print(json.dumps({"models": rows, "node_running": advertised is not None}))
        return 0
    title = "models (rates as the running node advertises them)" if advertised is not None else \
        "models (rates measured on this machine; no node is running)"
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("model", overflow="fold")
    table.add_column("size", no_wrap=True)
    table.add_column("ctx", no_wrap=True)
    table.add_column("tags", overflow="fold")
    table.add_column("tok/s", no_wrap=True)
    table.add_column("on", no_wrap=True)
    for r in rows:
        weights = " ".join(x for x in (f"{r['parameters'] / 1e6:.1f}M" if r.get("parameters") else "",
                                       r.get("quantization") or "") if x)
        rates = "-"
        if r.get("decode_tps"):
            rates = f"prefill {r['prefill_tps'] or 0:.0f}\ndecode {r['decode_tps']:.0f}"
        providers = ",".join(p.removesuffix("ExecutionProvider").lower() for p in r.get("providers") or ())
        table.add_row(f"{r['name']}\n{r['kind']} {r['sha256'][:12]}", f"{r['size_bytes'] / 1e6:.1f} MB\n{weights}",
                      str(r["n_ctx"]), "\n".join(r["tags"]), rates, providers or r.get("accelerator") or "-")
    Console().print(table)
    if any(r["kind"] == "llm" and not r.get("decode_tps") for r in rows):
        Console().print("-: not measured yet (a node measures its models when it starts; or: meshagent models --measure)")
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
