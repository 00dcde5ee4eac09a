import json
import subprocess
import sys
from pathlib import Path

from simulations.policies import POLICIES
from simulations.workloads import WORKLOADS

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"latency_p50_s", "latency_p95_s", "cost", "cost_efficiency", "privacy_violations", "messages_per_decision"}


def test_quick_json_shape_and_plots(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "simulations", "run", "--quick", "--json", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    )
    obj = json.loads(out.stdout)
    for workload in WORKLOADS:
        assert set(obj[workload]) == {p.name for p in POLICIES}
        for name, row in obj[workload].items():
            assert KEYS <= set(row), (workload, name)
            assert row["latency_p50_s"] <= row["latency_p95_s"]
    assert [p["nodes"] for p in obj["scaling"]] == [10, 100, 1000, 10_000]
    for p in obj["scaling"]:
        assert {"nodes", "messages_per_decision", "sim_seconds"} <= set(p)
    for png in ("latency.png", "cost.png", "scaling.png", "reputation.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "results.json").read_text()) == obj
