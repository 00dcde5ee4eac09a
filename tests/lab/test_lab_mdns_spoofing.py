"""mDNS spoofing on a real LAN (namespaces on one bridge): a forged announcement must not divert a dial.

Three devices: the victim (a real ``meshagent join`` with mDNS), the honest peer B, and an
impostor (``mdns_impostor.py``) that multicasts B's peer id with the impostor's own address.
B runs with ``--no-mdns`` and its own record (B's id at B's address, exactly what B would
announce) is multicast by a probe in B's namespace, so B never dials anyone: whatever connects
the victim to B is the victim's own path from an announcement to a dial.

What must hold: the victim acts on the forged record (the impostor sees its TCP connection),
Noise refuses the impostor (no libp2p connection, no stream reaches it), the victim reaches the
real B, and its peer table holds B's real address — also when the impostor announces again
while the victim is connected to B, and when the impostor holds the victim's dial open without
ever answering while B's genuine record arrives.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from labnet import ROOT, Lab
from meshagent.node.control import call
from meshagent.node.identity import load_or_create_identity

pytestmark = pytest.mark.lab

IMPOSTOR = Path(__file__).with_name("mdns_impostor.py")
PROBE = Path(__file__).with_name("mdns_probe.py")
B_PORT = 4747
WAIT_S = 40.0
QUIET_S = 5.0
"""How long the test watches for something that must not happen (mDNS discovery takes ~0.35 s)."""
VICTIM, HONEST, ATTACKER = 1, 2, 3


class Lines:
    """A child process whose stdout is JSON lines, read on a thread."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self._log = open(log, "ab")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                self._queue.put(json.loads(line))
            except json.JSONDecodeError:
                self._queue.put({"event": "noise", "line": line})

    def events(self, kind: str) -> list[dict[str, Any]]:
        while True:
            try:
                self.seen.append(self._queue.get_nowait())
            except queue.Empty:
                return [e for e in self.seen if e.get("event") == kind]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@contextmanager
def running(*procs: Lines) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.stop()


def wait_until(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def join(lab: Lab, i: int, data_dir: Path, *flags: str) -> Lines:
    """``meshagent join`` in namespace ``i``; its first line (peer id, addresses) is read by :func:`ready`."""
    argv = lab.exec_argv(i, sys.executable, "-m", "meshagent", "join", "--json", "--data-dir", str(data_dir),
                         "--name", data_dir.name, *flags)
    return Lines(argv, data_dir.parent / f"{data_dir.name}.log")


def ready(node: Lines, log: Path) -> dict[str, Any]:
    def first_line() -> dict[str, Any] | None:
        node.events("")
        if node.proc.poll() is not None:
            pytest.fail(f"node exited with {node.proc.returncode}: {log.read_text()[-3000:]}")
        return next((e for e in node.seen if "peer_id" in e), None)

    return wait_until(first_line, f"node ready ({log})", timeout=60)


def impostor(lab: Lab, tmp: Path, claimed: str, mode: str, name: str, port: int = B_PORT) -> Lines:
    argv = lab.exec_argv(ATTACKER, sys.executable, str(IMPOSTOR), claimed, lab.address(ATTACKER), str(port), mode,
                         str(tmp / name))
    return Lines(argv, tmp / f"{name}.log")


def honest_peer(lab: Lab, tmp: Path) -> tuple[str, Lines, Lines]:
    """B: a node that never dials (no mDNS), and a probe multicasting B's own record from B's namespace."""
    data_dir = tmp / "honest"
    b_id = load_or_create_identity(data_dir).peer_id
    node = join(lab, HONEST, data_dir, "--listen", f"/ip4/{lab.address(HONEST)}/tcp/{B_PORT}", "--no-mdns")
    ready(node, tmp / "honest.log")
    record = Lines(lab.exec_argv(HONEST, sys.executable, str(PROBE), b_id, str(B_PORT)), tmp / "honest-record.log")
    return b_id, node, record


def peers_of(data_dir: Path) -> dict[str, dict[str, Any]]:
    return {p["peer_id"]: p for p in call(data_dir, "peers")["peers"]}


def reached_real_peer(victim_dir: Path, b_id: str, b_addr: str) -> bool:
    """The victim's peer table holds B, at B's real address only, with a measured round trip (connected)."""
    entry = peers_of(victim_dir).get(b_id)
    return entry is not None and entry["addrs"] == [b_addr] and entry["rtt_ms"] is not None


def impostor_untouched(attacker: Lines, victim_id: str) -> None:
    assert attacker.events("stream") == [], "a stream reached the impostor"
    assert all(victim_id not in e["peers"] for e in attacker.events("connected")), "the victim connected to the impostor"


def test_a_forged_announcement_does_not_divert_the_victims_dial(make_lab, tmp_path):
    lab = make_lab(3)
    b_id = load_or_create_identity(tmp_path / "honest").peer_id
    b_addr = f"/ip4/{lab.address(HONEST)}/tcp/{B_PORT}"
    victim_dir = tmp_path / "victim"
    attacker = impostor(lab, tmp_path, b_id, "refuse", "impostor")
    victim = join(lab, VICTIM, victim_dir, "--interface", "eth0")
    with running(attacker, victim):
        wait_until(lambda: attacker.events("started"), "the impostor's announcement")
        victim_id = ready(victim, tmp_path / "victim.log")["peer_id"]
        # The victim acts on the forged record: it dials the impostor's address, as B ...
        wait_until(lambda: any(e["from"] == lab.address(VICTIM) for e in attacker.events("tcp")),
                   "the victim's dial to the forged address")
        # ... and Noise refuses it: no connection, no stream, B not in the peer table.
        time.sleep(1.0)
        impostor_untouched(attacker, victim_id)
        assert b_id not in peers_of(victim_dir)
        assert call(victim_dir, "status")["connected"] == 0

        # B appears (its genuine record on the wire): the victim's own dial reaches it.
        _, node, record = honest_peer(lab, tmp_path)
        with running(node, record):
            wait_until(lambda: reached_real_peer(victim_dir, b_id, b_addr), "the victim to reach the real B")
            assert victim_id in peers_of(tmp_path / "honest")  # B heard the victim: the real peer was reached

            # The impostor announces again (a fresh instance) while the victim is connected to B.
            again = impostor(lab, tmp_path, b_id, "refuse", "impostor2", port=B_PORT + 1)
            with running(again):
                wait_until(lambda: again.events("started"), "the second announcement")
                time.sleep(QUIET_S)
                assert reached_real_peer(victim_dir, b_id, b_addr)
                impostor_untouched(again, victim_id)
            impostor_untouched(attacker, victim_id)
            assert set(peers_of(victim_dir)) == {b_id}


def test_an_impostor_that_never_answers_does_not_keep_the_victim_from_the_real_peer(make_lab, tmp_path):
    """The forged dial hangs (TCP accepted, not a byte back) while B's genuine record arrives."""
    lab = make_lab(3)
    b_id = load_or_create_identity(tmp_path / "honest").peer_id
    b_addr = f"/ip4/{lab.address(HONEST)}/tcp/{B_PORT}"
    victim_dir = tmp_path / "victim"
    attacker = impostor(lab, tmp_path, b_id, "tarpit", "tarpit")
    victim = join(lab, VICTIM, victim_dir, "--interface", "eth0")
    with running(attacker, victim):
        wait_until(lambda: attacker.events("started"), "the impostor's announcement")
        victim_id = ready(victim, tmp_path / "victim.log")["peer_id"]
        wait_until(lambda: attacker.events("tcp"), "the victim's dial to the forged address")
        _, node, record = honest_peer(lab, tmp_path)  # while that dial hangs
        with running(node, record):
            wait_until(lambda: reached_real_peer(victim_dir, b_id, b_addr), "the victim to reach the real B")
            assert victim_id in peers_of(tmp_path / "honest")
            impostor_untouched(attacker, victim_id)
