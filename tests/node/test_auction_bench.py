"""``meshagent bench auction`` among real node processes prints the issue's figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_auction_small_mesh():
    out = subprocess.run([sys.executable, "-m", "meshagent", "bench", "auction", "--json", "--peers", "3", "--rounds", "6"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"peers", "decision_ms_p50", "decision_ms_p99", "messages_per_decision"} <= figures.keys()
    assert figures["peers"] == 3 and figures["rounds"] == 6
    assert figures["invited_per_decision"] == 3  # fewer peers than the fan-out: every one is asked
    # a call and an answer from each bidder, then one award or release to each
    assert figures["messages_per_decision"] == 3 * 3
    assert 0 < figures["decision_ms_p50"] <= figures["decision_ms_p99"] <= figures["decision_ms_max"]
    assert figures["rtt_baseline_ms_p50"] > 0
