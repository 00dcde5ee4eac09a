"""scripts/lab itself: addresses, rate limits, partitions, and a clean teardown."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from labnet import Lab

pytestmark = pytest.mark.lab

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=1.5).close()
except ConnectionRefusedError:
    print("reachable")  # a RST came back: the host is there, nothing listens
except OSError as exc:
    print("unreachable", exc)
"""


def probe(lab: Lab, src: int, dst: int) -> str:
    argv = lab.exec_argv(src, sys.executable, "-c", CONNECT, lab.address(dst))
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.split()[0]


def ip(*argv: str) -> str:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=False).stdout


def test_profiles_partition_and_down(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(3, profiles=("wifi", "ethernet", "lte"))
    # each namespace has its own address and only lo + eth0
    for i in (1, 2, 3):
        assert f"{lab.address(i)}/24" in ip("-n", lab.namespace(i), "-br", "addr")
    # rate limits on both ends of each link
    for i, rate in ((1, "50Mbit"), (2, "1Gbit"), (3, "10Mbit")):
        assert f"rate {rate}" in subprocess.run(
            lab.exec_argv(i, "tc", "qdisc", "show", "dev", "eth0"), capture_output=True, text=True, check=True
        ).stdout
        assert f"rate {rate}" in subprocess.run(
            ["tc", "qdisc", "show", "dev", f"{lab.prefix}-v{i}"], capture_output=True, text=True, check=True
        ).stdout

    assert probe(lab, 1, 2) == "reachable"
    lab.link(2, "down")
    assert probe(lab, 1, 2) == "unreachable"
    assert probe(lab, 1, 3) == "reachable"  # only namespace 2 is cut off
    lab.link(2, "up")
    assert probe(lab, 1, 2) == "reachable"

    # a process left running inside the lab does not keep it alive
    sleeper = subprocess.Popen(lab.exec_argv(1, "sleep", "600"))
    try:
        lab.down()
        assert sleeper.wait(timeout=10) != 0
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
    assert lab.prefix not in ip("netns", "list")
    assert lab.prefix not in ip("-br", "link")
    lab.down()  # idempotent
