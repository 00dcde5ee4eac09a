"""mDNS across network namespaces: three "devices" on one bridge find each other.

Each namespace runs ``mdns_probe.py`` (one MdnsDiscovery, announcing the
namespace's own address) in its own process. Discovery must complete within
5 s of the last probe starting (issue 2's deadline), with the namespaces'
real addresses; a probe stopped with SIGTERM must send a goodbye that the
others see.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from labnet import ROOT, Lab
from meshagent.protocol.signed import PeerId, peer_id_from_public_key

pytestmark = pytest.mark.lab

PROBE = Path(__file__).with_name("mdns_probe.py")
PORT = 4737
DISCOVERY_DEADLINE_S = 5.0
WAIT_S = 30.0  # how long the test waits at most; failures report what was seen


def new_peer_id() -> PeerId:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return peer_id_from_public_key(raw)


@dataclass
class Probe:
    index: int
    peer_id: PeerId
    proc: subprocess.Popen[str]
    lines: queue.Queue[dict[str, object]] = field(default_factory=queue.Queue)
    seen: list[dict[str, object]] = field(default_factory=list)

    def pump(self) -> None:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return

    def events(self, kind: str) -> list[dict[str, object]]:
        self.pump()
        return [e for e in self.seen if e["event"] == kind]


def _read(stream: IO[str], lines: queue.Queue[dict[str, object]]) -> None:
    for line in stream:
        try:
            lines.put(json.loads(line))
        except json.JSONDecodeError:
            lines.put({"event": "noise", "line": line})


@contextmanager
def probes(lab: Lab) -> Iterator[list[Probe]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started: list[Probe] = []
    try:
        for i in range(1, lab.n + 1):
            peer_id = new_peer_id()
            argv = lab.exec_argv(i, sys.executable, str(PROBE), peer_id, str(PORT))
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
            probe = Probe(i, peer_id, proc)
            assert proc.stdout is not None
            threading.Thread(target=_read, args=(proc.stdout, probe.lines), daemon=True).start()
            started.append(probe)
        yield started
    finally:
        for probe in started:
            if probe.proc.poll() is None:
                probe.proc.terminate()
        for probe in started:
            try:
                probe.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                probe.proc.kill()
                probe.proc.wait()


def wait_until(condition: Callable[[], bool], what: str, probes_: list[Probe]) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if condition():
            return
        for probe in probes_:
            if probe.proc.poll() not in (None, 0) or (probe.proc.poll() == 0 and not probe.events("stopped")):
                pytest.fail(f"probe {probe.index} exited with {probe.proc.returncode}: {probe.seen}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}: " + "; ".join(f"{p.index}: {p.seen}" for p in probes_))


def found_peers(probe: Probe) -> dict[str, dict[str, object]]:
    return {str(e["peer"]): e for e in probe.events("found")}


def test_three_namespaces_discover_each_other_and_see_goodbye(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(3)
    with probes(lab) as running:
        ids = {p.peer_id for p in running}

        def everyone_found_everyone() -> bool:
            return all(ids - {p.peer_id} <= found_peers(p).keys() for p in running)

        wait_until(everyone_found_everyone, "mutual discovery", running)

        last_start = max(float(str(p.events("started")[0]["t"])) for p in running)
        for probe in running:
            assert probe.events("started")[0]["addrs"] == [f"/ip4/{lab.address(probe.index)}/tcp/{PORT}"]
            found = found_peers(probe)
            assert probe.peer_id not in found, "a node must not discover itself"
            for other in running:
                if other is probe:
                    continue
                event = found[other.peer_id]
                # the real namespace address: never 0.0.0.0, never loopback
                assert event["addrs"] == [f"/ip4/{lab.address(other.index)}/tcp/{PORT}"]
                took = float(str(event["t"])) - last_start
                assert took <= DISCOVERY_DEADLINE_S, f"probe {probe.index} found {other.index} after {took:.2f} s"

        leaving = running[2]
        leaving.proc.send_signal(signal.SIGTERM)
        assert leaving.proc.wait(timeout=15) == 0

        def others_saw_goodbye() -> bool:
            return all(
                any(e["peer"] == leaving.peer_id for e in p.events("gone")) for p in running[:2]
            )

        wait_until(others_saw_goodbye, "the goodbye of probe 3", running[:2])
        assert leaving.events("stopped"), "SIGTERM must stop the probe cleanly"
