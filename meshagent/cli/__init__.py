"""The ``meshagent`` command.

Thin by design: each module here registers its subcommands, parses flags,
calls the node's API (or a library function for offline commands) and prints.
Every failure becomes one line on stderr and a non-zero exit: an error of
the :class:`~meshagent.errors.MeshError` tree or an ``OSError`` exit status 1
(also when a trio nursery wraps it in an exception group), anything else is
a bug in meshagent, reported as such with status 70. ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from meshagent import __version__
from meshagent.cli.logconfig import configured_logging, parse_log_env
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
    verbose = int(args.verbose)
    try:
        settings = parse_log_env(os.environ.get("MESHAGENT_LOG"), verbose)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        with configured_logging(settings):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # the command's boundary: one line, the traceback only with -v
        if isinstance(exc, SystemExit):
            raise
        return _report(exc, verbose)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, such as a trio nursery raises."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _report(exc: BaseException, verbose: int) -> int:
    """Print one line for a failed command and return its exit status (1; 70 for a bug in meshagent)."""
    leaves = _leaves(exc)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        return 130
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    known = [leaf for leaf in leaves if isinstance(leaf, (MeshError, OSError))]
    if known and len(known) == len(leaves):
        first = known[0]
        if isinstance(first, OSError):
            where = f"{first.filename}: " if first.filename else ""
            print(f"meshagent: {where}{first.strerror or first}", file=sys.stderr)
        else:
            print(f"meshagent: {first}", file=sys.stderr)
        return 1
    bug = next(leaf for leaf in leaves if not isinstance(leaf, (MeshError, OSError)))
    hint = "" if verbose else "; run again with -v for the traceback"
    print(f"meshagent: internal error: {type(bug).__name__}: {bug}{hint}", file=sys.stderr)
    return 70


if __name__ == "__main__":
    raise SystemExit(main())
