"""A handoff between two processes in two network namespaces over a tbf-limited link (root only)."""

from __future__ import annotations

import os

import pytest

from tests.lab.labnet import Lab
from tests.node.test_handoff_harness import Harness, write_book

pytestmark = pytest.mark.lab


def test_migrate_across_namespaces_over_the_side_channel(tmp_path):
    with Lab(2, profiles=("wifi",), prefix=f"mh{os.getpid() % 100000}") as lab:
        peers = tmp_path / "peers.json"
        a = Harness(tmp_path / "a", peers, exec_prefix=lab.exec_argv(1), ip=lab.address(1))
        b = Harness(tmp_path / "b", peers, exec_prefix=lab.exec_argv(2), ip=lab.address(2))
        try:
            a.start()
            b.start()
            write_book(peers, a, b)
            assert all(addr.startswith(f"/ip4/{lab.address(2)}/") for addr in b.info["addrs"])
            want = a.call("double_put", {"agent": "lab-agent", "vfs_bytes": 2 << 20})["fingerprint"]
            result = a.call("migrate", {"agent": "lab-agent", "to": b.info["peer_id"]}, timeout=120)
            assert result["resumed"] and result["via"] == "bulk"
            assert b.call("double_state", {"agent": "lab-agent"})["fingerprint"] == want
            assert a.call("double_state", {"agent": "lab-agent"})["state"] is None
        finally:
            a.stop()
            b.stop()
