"""A handoff between two processes in two network namespaces over a tbf-limited link (root only)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.lab.labnet import Lab
from tests.node.test_handoff_harness import Harness, write_book

pytestmark = pytest.mark.lab

TBF = re.compile(r"qdisc tbf .* rate (\S+) .*\n\s*Sent (\d+) bytes \d+ pkt \(dropped \d+, overlimits (\d+)")


def tbf_counters(lab: Lab, i: int) -> tuple[str, int, int]:
    """Namespace ``i``'s egress limit on eth0: its rate, bytes sent through it, times it held packets back."""
    out = subprocess.run(lab.exec_argv(i, "tc", "-s", "qdisc", "show", "dev", "eth0"), capture_output=True, text=True,
                         timeout=30, check=True).stdout
    match = TBF.search(out)
    assert match, out
    return match.group(1), int(match.group(2)), int(match.group(3))


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
            _, sent_before, held_before = tbf_counters(lab, 1)
            result = a.call("migrate", {"agent": "lab-agent", "to": b.info["peer_id"]}, timeout=120)
            rate, sent_after, held_after = tbf_counters(lab, 1)
            assert result["resumed"] and result["via"] == "bulk"
            assert b.call("double_state", {"agent": "lab-agent"})["fingerprint"] == want
            assert a.call("double_state", {"agent": "lab-agent"})["state"] is None
            # The body crossed the sender's 50 Mbit/s limit, and the limit held it back.
            assert rate == "50Mbit"
            assert sent_after - sent_before >= 2 << 20
            assert held_after > held_before
        finally:
            a.stop()
            b.stop()
