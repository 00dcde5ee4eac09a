"""Issue 2's lab acceptance: `meshagent join` in three namespaces on one bridge,
no bootstrap, discover each other by mDNS, connect and ping."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from meshagent.node.control import call

pytestmark = pytest.mark.lab


def test_three_namespaces_discover_by_mdns_and_ping(make_lab, tmp_path):
    lab = make_lab(3)
    procs = []
    try:
        infos = []
        for i in (1, 2, 3):
            data_dir = tmp_path / f"node{i}"
            log = open(tmp_path / f"node{i}.log", "wb")
            argv = lab.exec_argv(i, sys.executable, "-m", "meshagent", "join", "--json",
                                 "--data-dir", str(data_dir), "--name", f"lab{i}", "--interface", "eth0")
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
            procs.append(p)
        for i, p in enumerate(procs, start=1):
            line = p.stdout.readline()
            assert line, (tmp_path / f"node{i}.log").read_text()[-3000:]
            info = json.loads(line)
            # Concrete, dialable addresses on the lab subnet: never 0.0.0.0.
            assert info["addrs"] and all(a.startswith(f"/ip4/{lab.address(i)}/tcp/") for a in info["addrs"]), info
            infos.append((tmp_path / f"node{i}", info["peer_id"]))
        start = time.monotonic()
        ids = {pid for _, pid in infos}
        seen = {}
        while time.monotonic() - start < 5.0:
            seen = {pid: set(p["peer_id"] for p in call(d, "peers")["peers"]) for d, pid in infos}
            if all(seen[pid] == ids - {pid} for pid in ids):
                break
            time.sleep(0.1)
        assert all(seen[pid] == ids - {pid} for pid in ids), f"after 5 s: {seen}"
        # Connected and pinged: every node reports a round-trip time for every peer.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            rtts = [p["rtt_ms"] for d, _ in infos for p in call(d, "peers")["peers"]]
            if all(r is not None for r in rtts):
                break
            time.sleep(0.2)
        assert all(r is not None and r > 0 for r in rtts), rtts
        # Addresses learnt are the lab's, found through mDNS (no bootstrap was given).
        peers = call(infos[0][0], "peers")["peers"]
        assert all(a.startswith("/ip4/10.77.0.") for p in peers for a in p["addrs"])
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
