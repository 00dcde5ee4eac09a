"""Benchmarks: ``meshagent bench NAME [--json]``.

Each benchmark is a module ``meshagent.bench.<name>`` with:

* ``DESCRIPTION`` — one line for ``meshagent bench --help``;
* ``add_arguments(parser)`` — optional extra flags;
* ``run(args) -> dict`` — measures and returns the figures named in the issue
  that asked for it, always with a baseline measured in the same run.

Benchmarks print figures; they never pass or fail on wall-clock time.
"""

from __future__ import annotations

__all__ = ["BENCHMARKS"]

BENCHMARKS: tuple[str, ...] = ("discovery", "checkpoint", "kv", "fork", "handoff", "auction", "tools")
