"""``meshagent bench handoff`` prints the issue's figures (loopback; and a tbf link in the lab, as root)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {"link", "bytes", "sealed_bytes", "via", "seal_s", "open_s", "transfer_s", "raw_tcp_s", "handoff_mbps",
           "raw_tcp_mbps", "ratio"}
ADDED = {"resume_s", "end_to_end_s", "raw_snapshot_tcp_s", "end_to_end_ratio", "samples", "limit_mbps"}
PARTS = ("seal_s", "transfer_s", "open_s", "resume_s")


def bench(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "meshagent", "bench", "handoff", "--json", *args], capture_output=True,
                         text=True, cwd=ROOT, timeout=900, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_samples(figures: dict) -> None:
    samples = figures["samples"]
    assert len(samples) >= 3
    assert [s["order"] for s in samples] == [("raw first", "handoff first")[i % 2] for i in range(len(samples))]
    for s in samples:
        # One interval on the sender, from sealing to "resumed": it holds every part, the receiver's open and
        # resume included (the receiver says "resumed" only after both).
        assert s["end_to_end_s"] + 1e-3 >= sum(s[p] for p in PARTS), s
        assert s["ratio"] == pytest.approx(s["raw_tcp_s"] / s["transfer_s"], rel=0.01, abs=1e-3)
        assert s["end_to_end_ratio"] == pytest.approx(s["raw_snapshot_tcp_s"] / s["end_to_end_s"], rel=0.01, abs=1e-3)
    for key in (*PARTS, "end_to_end_s", "raw_tcp_s", "raw_snapshot_tcp_s"):
        assert figures[key] == pytest.approx(statistics.median(s[key] for s in samples), abs=1e-3)
    assert figures["ratio"] == pytest.approx(statistics.median(s["ratio"] for s in samples), abs=2e-3)
    assert figures["end_to_end_ratio"] == pytest.approx(statistics.median(s["end_to_end_ratio"] for s in samples), abs=2e-3)


def test_bench_handoff_loopback():
    figures = bench("--size", str(2 << 20))
    assert FIGURES | ADDED <= figures.keys()
    assert figures["link"] == "none" and figures["limit_mbps"] is None and figures["via"] == "bulk"
    assert figures["bytes"] >= 2 << 20  # the agent's 2 MiB heap, plus its module, journal and the rest of its memory
    assert figures["sealed_bytes"] >= 0.9 * figures["bytes"]  # xorshift output: next to nothing to compress
    assert 0 < figures["end_to_end_ratio"] and 0 < figures["ratio"]
    check_samples(figures)


def test_bench_handoff_wants_three_samples():
    out = subprocess.run([sys.executable, "-m", "meshagent", "bench", "handoff", "--json", "--samples", "2"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "--samples must be at least 3" in out.stderr


@pytest.mark.lab
def test_bench_handoff_over_a_rate_limited_namespace_link():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    figures = bench("--size", str(16 << 20), "--link", "100mbit")
    assert figures["link"] == "100mbit" and figures["limit_mbps"] == 100 and figures["via"] == "bulk"
    check_samples(figures)
    # The limit applied: raw TCP between the namespaces runs near 100 Mbit/s (TCP/IP and Ethernet headers
    # take ~4.4 %, tbf's 256 KiB burst adds ~1.5 % on 16 MiB); unlimited veths run at gigabits.
    assert 50 <= figures["raw_tcp_mbps"] <= 105, figures
    assert figures["handoff_mbps"] <= 105, figures
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    assert not {n for n in after - before if n.startswith("mb")}  # the bench removed its namespaces
