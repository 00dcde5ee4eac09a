"""``meshagent bench handoff`` prints the issue's figures (loopback; and a tbf link in the lab, as root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {"link", "bytes", "seal_s", "open_s", "transfer_s", "handoff_mbps", "raw_tcp_mbps", "ratio"}


def bench(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "meshagent", "bench", "handoff", "--json", *args], capture_output=True,
                         text=True, cwd=ROOT, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bench_handoff_loopback():
    figures = bench("--size", str(2 << 20))
    assert FIGURES <= figures.keys()
    assert figures["link"] == "none" and figures["bytes"] == 2 << 20 and figures["via"] == "bulk"
    assert figures["sealed_bytes"] >= figures["bytes"]  # random bytes: nothing to compress
    assert figures["ratio"] > 0


@pytest.mark.lab
def test_bench_handoff_over_a_rate_limited_namespace_link():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    figures = bench("--size", str(4 << 20), "--link", "100mbit")
    assert figures["link"] == "100mbit" and figures["via"] == "bulk"
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    assert not {n for n in after - before if n.startswith("mb")}  # the bench removed its namespaces
