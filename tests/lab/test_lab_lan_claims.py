"""``lan`` is judged from the live connection: a rogue that advertises a LAN and a loopback address
while it is reached through a router is not on the link (root: network namespaces).

Namespaces 1–3 are on the lab bridge (10.77.0.0/24). Namespace 3 routes to a
fourth, ``far`` (10.78.0.0/24), where the rogue runs. The rogue advertises
10.77.0.9 (on the target's subnet) and 127.0.0.1 — each would have made it
``lan`` when the class was judged from adverts — and bootstraps to the target,
so the target meets it over a routed connection from 10.78.0.2. The honest
peer in namespace 2 is on the link. A ``lan`` auction on the target invites
the honest peer and not the rogue; an ``any`` auction invites both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labnet import ROOT
from meshagent.node.control import call
from meshagent.node.emulation import write_device_config
from meshagent.node.spawn import wait_for
from tests.hostile.rogue.adverts import ADDRS_ENV

pytestmark = pytest.mark.lab

FAR = 4
CLAIMED = ("/ip4/10.77.0.9/tcp/4737", "/ip4/127.0.0.1/tcp/4737")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def _route_far_namespace(lab) -> None:  # type: ignore[no-untyped-def]
    """Namespace 4 behind namespace 3 (a router), on 10.78.0.0/24. Named like the lab's own, so that
    ``scripts/lab down`` removes it (and the veth, which lives in the namespaces) with the rest."""
    router, far = lab.namespace(3), lab.namespace(FAR)
    inner, outer = f"{lab.prefix}-v91", f"{lab.prefix}-v92"  # swept by `lab down` if left in the root namespace
    _ip("netns", "add", far)
    _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
    _ip("link", "set", inner, "netns", router)
    _ip("link", "set", outer, "netns", far)
    _ip("-n", router, "addr", "add", "10.78.0.1/24", "dev", inner)
    _ip("-n", router, "link", "set", inner, "up")
    _ip("-n", far, "addr", "add", "10.78.0.2/24", "dev", outer)
    _ip("-n", far, "link", "set", outer, "up")
    _ip("-n", far, "link", "set", "lo", "up")
    _ip("-n", far, "route", "add", "default", "via", "10.78.0.1")
    subprocess.run(["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True, timeout=30)
    _ip("-n", lab.namespace(1), "route", "add", "10.78.0.0/24", "via", lab.address(3))


def _join(lab, i: int, data_dir: Path, *args: str, entry: tuple[str, ...] = ("-m", "meshagent"),  # type: ignore[no-untyped-def]
          env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    write_device_config(data_dir, "laptop", ROOT / ".cache" / "models")
    log = open(data_dir.parent / f"{data_dir.name}.log", "wb")
    argv = lab.exec_argv(i, sys.executable, *entry, "join", "--json", "--data-dir", str(data_dir), "--name", data_dir.name,
                         "--no-mdns", *args)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, cwd=ROOT, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, (data_dir.parent / f"{data_dir.name}.log").read_text()[-3000:]
    return proc, json.loads(line)


def test_a_rogue_claiming_lan_addresses_over_a_routed_path_is_not_lan(make_lab, tmp_path):
    lab = make_lab(3)
    _route_far_namespace(lab)
    procs = []
    try:
        target, t_info = _join(lab, 1, tmp_path / "target")
        procs.append(target)
        boot = next(a for a in t_info["addrs"] if a.startswith(f"/ip4/{lab.address(1)}/"))  # type: ignore[union-attr]
        honest, h_info = _join(lab, 2, tmp_path / "honest", "--bootstrap", boot)
        procs.append(honest)
        rogue, r_info = _join(lab, FAR, tmp_path / "rogue", "--bootstrap", boot,
                              entry=("-m", "tests.hostile.rogue", "--behave", "claim_addrs"),
                              env={**os.environ, ADDRS_ENV: ",".join(CLAIMED)})
        procs.append(rogue)
        rogue_id, honest_id = r_info["peer_id"], h_info["peer_id"]

        def peers() -> dict[str, dict[str, object]]:
            return {p["peer_id"]: p for p in call(tmp_path / "target", "peers")["peers"]}

        ok, _ = wait_for(lambda: {rogue_id, honest_id} <= set(peers()) and all(
            any(m["kind"] == "llm" for m in peers()[p]["models"]) for p in (rogue_id, honest_id)), timeout=60)
        assert ok, peers()
        assert tuple(peers()[rogue_id]["addrs"]) == CLAIMED  # the claim was made and heard

        lan = call(tmp_path / "target", "auction", {"privacy": "lan", "award": False})
        assert honest_id in lan["invited"] and rogue_id not in lan["invited"], lan["invited"]
        anyone = call(tmp_path / "target", "auction", {"privacy": "any", "award": False})
        assert {honest_id, rogue_id} <= set(anyone["invited"]), anyone["invited"]  # it could have been invited
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
