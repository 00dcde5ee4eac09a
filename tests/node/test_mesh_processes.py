"""Three real node processes on loopback, connected only by --bootstrap to the first."""

import shutil
import signal
import subprocess
import sys
import time

import pytest

from meshagent.node.spawn import NodeProcess, wait_for


@pytest.fixture
def mesh(tmp_path):
    nodes = []
    first = NodeProcess(tmp_path / "n1", "--profile", "laptop").start()
    nodes.append(first)
    for i, profile in ((2, "phone"), (3, "gpu")):
        nodes.append(NodeProcess(tmp_path / f"n{i}", "--profile", profile, "--bootstrap", first.addrs[0]).start())
    yield nodes
    for n in nodes:
        n.stop()


def _all_see_each_other(nodes):
    ids = {n.peer_id for n in nodes}
    for n in nodes:
        if set(n.peers()) != ids - {n.peer_id}:
            return False
    return True


def test_three_nodes_discover_each_other_and_leave(mesh):
    n1, n2, n3 = mesh
    ok, took = wait_for(lambda: _all_see_each_other(mesh), timeout=5.0)
    assert ok, f"not all peers seen after {took:.1f}s: {[sorted(n.peers()) for n in mesh]}"

    # Hardware adverts carry the emulated profile and the fields.
    seen = n2.peers()[n3.peer_id]
    assert seen["profile"] == "gpu" and seen["emulated"] is True
    for key in ("peer_id", "name", "addrs", "profile", "arch", "cpu_cores", "ram_total", "ram_free",
                "accelerators", "models", "on_battery", "last_seen", "rtt_ms"):
        assert key in seen
    assert n1.peers()[n2.peer_id]["on_battery"] is True  # the phone profile
    assert any(a.startswith("/ip4/127.0.0.1/tcp/") for a in seen["addrs"])

    # A node killed with SIGKILL leaves the others' tables within 15 s.
    n3.kill()
    gone, took = wait_for(lambda: n3.peer_id not in n1.peers() and n3.peer_id not in n2.peers(), timeout=15.0)
    assert gone, f"killed node still listed after {took:.1f}s"

    # A clean leave (SIGTERM) says goodbye: gone at once, not after the advert TTL.
    assert n2.stop() == 0
    gone, took = wait_for(lambda: n2.peer_id not in n1.peers(), timeout=3.0)
    assert gone, "node that left cleanly still listed"


def test_copied_identity_is_refused(tmp_path):
    first = NodeProcess(tmp_path / "a").start()
    second = NodeProcess(tmp_path / "b", "--bootstrap", first.addrs[0]).start()
    try:
        copy = tmp_path / "copy"
        copy.mkdir(mode=0o700)
        for name in ("identity.key", "sealing.key"):
            shutil.copy2(tmp_path / "a" / name, copy / name)
        dup = NodeProcess(copy, "--bootstrap", second.addrs[0], name="dup").start()
        assert dup.peer_id == first.peer_id
        # Detected when the original's newer advert reaches the copy: by gossip, or at the
        # latest at the next peer exchange (every 30 s); the shared peer's gossip to one
        # peer id is confused by two connections claiming it.
        assert dup.proc.wait(timeout=60) != 0
        assert "another node is running with this identity" in dup.log.read_text()
        # The original keeps running and keeps its place in the mesh.
        assert first.peer_id in second.peers()
        assert first.proc.poll() is None
    finally:
        second.stop()
        first.stop()


def test_leave_command(tmp_path):
    n = NodeProcess(tmp_path / "solo").start()
    out = subprocess.run([sys.executable, "-m", "meshagent", "leave", "--data-dir", str(n.data_dir), "--json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert n.proc.wait(timeout=15) == 0
    assert not (n.data_dir / "control.sock").exists()
