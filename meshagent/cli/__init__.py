"""The ``meshagent`` command.

Thin by design: each module here registers its subcommands, parses flags,
calls the node's API (or a library function for offline commands) and prints.
Errors from the :class:`~meshagent.errors.MeshError` tree become a one-line
message and exit status 1; nothing else is caught.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from meshagent import __version__
from meshagent.errors import MeshError

__all__ = ["main", "build_parser"]

# Each module exposes ``register(subparsers)``; a subcommand stores its handler
# in ``func`` which receives the parsed namespace and returns an exit status.
_COMMAND_MODULES = ("node", "agents", "models", "snapshot", "bench", "demo")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="meshagent", description="A peer-to-peer edge mesh for LLM agents.")
    parser.add_argument("--version", action="version", version=f"meshagent {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"meshagent.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"meshagent.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    if env_level := os.environ.get("MESHAGENT_LOG"):
        level = logging.getLevelName(env_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("multiaddr", "libp2p"):  # their debug output drowns ours
        logging.getLogger(noisy).setLevel(max(level, logging.INFO))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MeshError as exc:
        print(f"meshagent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
