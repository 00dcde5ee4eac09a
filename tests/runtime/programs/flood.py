"""flood — prints without end, and writes to the raw file descriptors (the output-limit tests)."""

import os
import sys

import meshagent_agent as mesh


def main() -> int:
    print("started")
    if "raw" in sys.argv:
        for _ in range(100):
            try:
                os.write(1, b"r" * 65536)  # around the SDK: WASI's own stdout, which keeps nothing
            except OSError:
                pass
        print("raw writes done")
        return 0
    mesh.log("flooding")
    while True:
        print("x" * 1000)
