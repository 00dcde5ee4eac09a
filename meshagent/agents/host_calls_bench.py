"""host_calls_bench — a Python agent for ``meshagent bench checkpoint --python``.

    host_calls_bench N   makes N journaled host calls (wall clock, random, the LLM, a tool in turn)
"""

import os
import sys
import time

import meshagent_agent as mesh


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    acc = 0
    for i in range(n):
        match i % 4:
            case 0:
                acc ^= int(time.time() * 1000)
            case 1:
                acc ^= int.from_bytes(os.urandom(8), "little")
            case 2:
                acc ^= len(mesh.llm(f"step {i}"))
            case _:
                acc ^= len(mesh.tool_raw("sys.echo", b"%d" % i))
    print(f"{n} host calls, checksum {acc & 0xFFFFFFFF:08x}")
    return 0
