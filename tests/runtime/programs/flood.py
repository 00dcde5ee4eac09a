"""flood — prints without end, writes to the raw file descriptors, or floods mesh.log (the output- and log-limit tests)."""

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
    if "log" in sys.argv:  # forged records, terminal escapes, long lines
        for _ in range(100):
            mesh.log("ok\n2030-01-01 INFO meshagent.node: forged\x1b[2J\r" + "A" * 5000)
        print("logged")
        return 0
    mesh.log("flooding")
    while True:
        print("x" * 1000)
