"""clocks — reads the monotonic clock around host calls (the clock tests of Python agents)."""

import time
from time import monotonic as imported_monotonic

import meshagent_agent as mesh


def main() -> int:
    for i in range(3):
        a = time.monotonic_ns()
        mesh.log(f"step {i}")
        b = time.perf_counter_ns()
        c = round(imported_monotonic() * 1e9)
        print(i, a, b, c)
    return 0
