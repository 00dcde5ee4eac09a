"""A minimal process for the handoff wire protocol: libp2p host + HandoffManager + control API.

TEST HARNESS, not a product entry point. The handoff manager runs in real
nodes now: the crash tests (``test_handoff_crash.py``) and the CLI test
(``test_handoff_cli.py``) use ``meshagent join`` processes with real agents.
This harness, with ``CustodyDouble`` standing in for the runtime (a few MiB
of agent state without model or runtime start-up), remains only for the lab
test of the wire protocol over a rate-limited link (``tests/net/test_handoff_lab.py``).

Run: ``python -m tests.node.test_handoff_harness --data-dir D --listen MA --peers FILE [--crash-at POINT]``.
It prints one JSON line (peer id, addrs, sealing key) when ready. ``--crash-at``
makes the process SIGKILL itself when the manager reaches that crash point.
``FILE`` maps peer ids to ``{"addrs": [...], "sealing_key": hex}``; it is read
on every lookup, so the test can write it after all processes started.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from meshagent.net.host import open_host
from meshagent.node.control import ControlServer, Emit, call
from meshagent.node.handoff import HandoffManager, HandoffPeer
from meshagent.node.identity import load_or_create_identity
from meshagent.protocol.signed import PeerId

from tests.node.test_handoff_double import CustodyDouble, fingerprint, make_agent

__test__ = False

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Harness:
    def __init__(self, data_dir: Path, peers: Path, *, exec_prefix: list[str] | None = None, ip: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.exec_prefix = exec_prefix or []
        self.ip = ip
        self.port = free_port() if ip == "127.0.0.1" else 4737
        self.peers = peers
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.log = data_dir.parent / f"{data_dir.name}.log"

    def start(self, crash_at: str = "") -> Harness:
        cmd = [*self.exec_prefix, sys.executable, "-m", "tests.node.test_handoff_harness", "--data-dir", str(self.data_dir),
               "--listen", f"/ip4/{self.ip}/tcp/{self.port}", "--peers", str(self.peers), "--crash-at", crash_at]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"harness did not start:\n{self.log.read_text()[-3000:]}")
        self.info = json.loads(line)
        return self

    def call(self, op: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        return call(self.data_dir, op, params, timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def write_book(peers: Path, *nodes: Harness) -> None:
    book = {n.info["peer_id"]: {"addrs": n.info["addrs"], "sealing_key": n.info["sealing_key"]} for n in nodes}
    peers.write_text(json.dumps(book))


def _lookup(path: Path):  # type: ignore[no-untyped-def]
    def lookup(peer: PeerId) -> HandoffPeer | None:
        try:
            book = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        entry = book.get(peer)
        if entry is None:
            return None
        return HandoffPeer(peer, tuple(entry["addrs"]), bytes.fromhex(entry["sealing_key"]))

    return lookup


async def main(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir)
    identity = load_or_create_identity(data_dir)
    custody = CustodyDouble(data_dir)

    def crash(name: str) -> None:
        if name == args.crash_at:
            logging.getLogger("harness").warning("crash point %s: SIGKILL", name)
            os.kill(os.getpid(), signal.SIGKILL)

    async with open_host(identity, [args.listen]) as host:
        manager = HandoffManager(data_dir=data_dir, identity=identity, host=host, custody=custody,
                                 peers=_lookup(Path(args.peers)), retry_s=0.3, crash_point=crash)

        async def put(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            agent = make_agent(params["agent"], vfs_bytes=int(params.get("vfs_bytes", 0)))
            custody.put(agent)
            return {"fingerprint": fingerprint(agent)}

        async def state(params: dict[str, Any], emit: Emit) -> dict[str, Any]:
            agent = custody.get(params["agent"])
            return {"state": custody.state(params["agent"]), "fingerprint": fingerprint(agent) if agent else None,
                    "may_run": manager.may_run(params["agent"])}

        control = ControlServer(data_dir, {**manager.handlers(), "double_put": put, "double_state": state})
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            await nursery.start(control.run)
            print(json.dumps({"peer_id": identity.peer_id, "addrs": list(host.addrs),
                              "sealing_key": identity.sealing_public.hex()}), flush=True)
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--peers", required=True)
    parser.add_argument("--crash-at", default="")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if os.environ.get("MA_HARNESS_DEBUG"):
        logging.getLogger("meshagent").setLevel(logging.DEBUG)
    trio.run(main, parser.parse_args())
