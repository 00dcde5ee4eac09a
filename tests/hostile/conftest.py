"""Hostile-input tests (issue 8): fuzzing every decoder of network and disk bytes, hostile peers and agents.

Fuzz targets run ``FUZZ_EXAMPLES`` hypothesis examples each: 100 in the
normal suite; the long mode sets ``MESHAGENT_FUZZ_EXAMPLES`` (e.g. 10000)::

    MESHAGENT_FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest tests/hostile -k fuzz -p no:cacheprovider

At the end of the run, a table gives each target's example count and the
number of unexpected exceptions (always 0: any non-project exception fails
the test that saw it), and the most Python memory one traced example
allocated at its peak (one example in 20 runs under tracemalloc; over
``MAX_EXAMPLE_BYTES`` fails the test).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Final

FUZZ_EXAMPLES: Final = int(os.environ.get("MESHAGENT_FUZZ_EXAMPLES", "100"))
EXAMPLES: Counter[str] = Counter()
"""Target name -> examples run (filled by the fuzz tests)."""
UNEXPECTED: Counter[str] = Counter()
"""Target name -> exceptions outside the project's error tree (each also fails its test)."""
PEAK_BYTES: Counter[str] = Counter()
"""Target name -> the largest peak of Python allocations seen in one traced example."""
MAX_EXAMPLE_BYTES: Final = 64 << 20


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    if not EXAMPLES:
        return
    terminalreporter.section(f"fuzz targets ({FUZZ_EXAMPLES} examples asked per target)")
    for name, count in sorted(EXAMPLES.items()):
        terminalreporter.write_line(f"{name:<36} {count:>7} examples, {UNEXPECTED[name]} unexpected exceptions, "
                                    f"peak {PEAK_BYTES[name] / 1024:,.0f} KiB")
    terminalreporter.write_line(f"{'total':<36} {sum(EXAMPLES.values()):>7} examples over {len(EXAMPLES)} targets")
