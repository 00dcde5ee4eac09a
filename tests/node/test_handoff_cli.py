"""The CLI against real processes: ``meshagent migrate``, ``snapshot export`` / ``import``.

Runs against the handoff harness (host + HandoffManager + CustodyDouble) until the
node registers the handoff ops itself (TODO(wiring): switch to ``meshagent join``).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.node.test_handoff_harness import ROOT, Harness, write_book


def cli(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "meshagent", *args, "--json"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_migrate_export_import_from_the_command_line(tmp_path):
    peers = tmp_path / "peers.json"
    a, b = Harness(tmp_path / "a", peers), Harness(tmp_path / "b", peers)
    try:
        a.start()
        b.start()
        write_book(peers, a, b)
        want = a.call("double_put", {"agent": "cli-agent", "vfs_bytes": 1 << 20})["fingerprint"]
        moved = cli("migrate", "cli-agent", "--to", b.info["peer_id"], "--data-dir", str(a.data_dir))
        assert moved["resumed"] and moved["via"] == "bulk"
        assert b.call("double_state", {"agent": "cli-agent"})["fingerprint"] == want
        assert a.call("double_state", {"agent": "cli-agent"})["state"] is None

        backup = tmp_path / "backup.msnap"
        exported = cli("snapshot", "export", "cli-agent", str(backup), "--data-dir", str(b.data_dir))
        assert exported["generation"] == 1 and backup.exists()
        failed = subprocess.run([sys.executable, "-m", "meshagent", "snapshot", "import", str(backup), "--data-dir",
                                 str(a.data_dir)], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
        assert failed.returncode == 1 and "not for this node" in failed.stderr  # sealed to B, A cannot open it

        to_a = tmp_path / "for-a.msnap"
        cli("snapshot", "export", "cli-agent", str(to_a), "--to", a.info["peer_id"], "--data-dir", str(b.data_dir))
        assert b.call("double_state", {"agent": "cli-agent"})["state"] is None
        imported = cli("snapshot", "import", str(to_a), "--data-dir", str(a.data_dir))
        assert imported["generation"] == 2
        assert a.call("double_state", {"agent": "cli-agent"})["fingerprint"] == want
    finally:
        a.stop()
        b.stop()
