"""``meshagent bench NAME``: run a benchmark and print its figures."""

from __future__ import annotations

import argparse
import importlib
import json

from rich.console import Console
from rich.table import Table

from meshagent.bench import BENCHMARKS

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("bench", help="run a benchmark and print its figures")
    names = parser.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(f"meshagent.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"meshagent.bench.{name}":
                raise
            continue
        p = names.add_parser(name, help=getattr(module, "DESCRIPTION", ""))
        p.add_argument("--json", action="store_true", help="print one JSON object")
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)
        p.set_defaults(func=_runner(module))


def _runner(module: object):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        figures = module.run(args)  # type: ignore[attr-defined]
        if args.json:
            print(json.dumps(figures))
        else:
            table = Table(title=f"bench {args.bench}")
            table.add_column("figure")
            table.add_column("value", justify="right")
            for key, value in figures.items():
                table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
            Console().print(table)
        return 0

    return run
