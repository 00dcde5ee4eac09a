"""The CLI against real ``meshagent join`` nodes running a real agent: ``meshagent migrate``,
``snapshot export`` / ``import``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import NodeProcess, wait_for
from meshagent.runtime.build import build_cached
from tests.conftest import MODEL_CACHE, ROOT

PROGRAMS = Path(__file__).resolve().parent / "programs"


def cli(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "meshagent", *args, "--json"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def where(node: NodeProcess, agent_id: str) -> str | None:
    return next((a["status"] for a in node.call("agents")["agents"] if a["agent_id"] == agent_id), None)


def test_migrate_export_import_from_the_command_line(tmp_path):
    wasm = build_cached(PROGRAMS / "steps.c", ROOT / ".cache" / "agents")
    for name in ("a", "b"):
        write_device_config(tmp_path / name, "laptop", MODEL_CACHE)
    a = NodeProcess(tmp_path / "a", name="a").start()
    b = NodeProcess(tmp_path / "b", "--bootstrap", a.addrs[0], name="b").start()
    try:
        assert wait_for(lambda: len(a.peers()) == 1 and len(b.peers()) == 1, timeout=20)[0]
        run = {"module_path": str(wasm), "args": ["steps", "8", "600", "cli"], "privacy": "any", "wait": False}
        agent = a.call("run", run)["agent_id"]
        moved = cli("migrate", agent, "--to", b.peer_id, "--data-dir", str(a.data_dir))
        assert moved["resumed"] and moved["via"] == "bulk" and moved["generation"] == 0
        assert where(b, agent) == "running" and where(a, agent) == "moved"

        backup = tmp_path / "backup.msnap"
        exported = cli("snapshot", "export", agent, str(backup), "--data-dir", str(b.data_dir))
        assert exported["generation"] == 1 and backup.exists()
        assert where(b, agent) == "running"  # a backup: the agent keeps running
        failed = subprocess.run([sys.executable, "-m", "meshagent", "snapshot", "import", str(backup), "--data-dir",
                                 str(a.data_dir)], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
        assert failed.returncode == 1 and "not for this node" in failed.stderr  # sealed to b, a cannot open it

        to_a = tmp_path / "for-a.msnap"
        cli("snapshot", "export", agent, str(to_a), "--to", a.peer_id, "--data-dir", str(b.data_dir))
        assert where(b, agent) in (None, "moved")  # released: the file is its only copy
        imported = cli("snapshot", "import", str(to_a), "--data-dir", str(a.data_dir))
        assert imported["generation"] == 2
        result = a.call("result", {"agent_id": agent, "wait": True}, timeout=120)
        assert result["status"] == "exited" and result["stdout"].endswith("done after 8 steps\n")
        assert result["stdout"].count("\n") == 9
    finally:
        a.stop()
        b.stop()
