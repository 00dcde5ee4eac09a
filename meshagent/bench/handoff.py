"""``meshagent bench handoff``: seal, hand over and open a snapshot; compare with a raw TCP copy.

Figures: ``link``, ``bytes`` (raw snapshot bytes), ``sealed_bytes`` (body on
the wire), ``seal_s`` (compress + encrypt + sign + write the sealed file),
``open_s`` (verify every chunk, then decrypt + decompress the receiver's
stored copy), ``transfer_s`` (offer → accept → body over the bulk side channel
→ stored → commit → resumed, between two processes over libp2p),
``handoff_mbps``, ``raw_tcp_mbps`` (the same sealed bytes through a plain TCP
socket between the same two processes, measured in the same run — the
baseline) and ``ratio`` = handoff / raw.

``--link none`` runs both processes on loopback. ``--link 100mbit|1gbit``
(root) runs them in two network namespaces joined by a ``tc tbf``-limited
veth pair on a bridge (``scripts/lab`` with its own prefix), removed
afterwards. The snapshot is incompressible (random bytes), the worst case.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import trio

from meshagent.errors import ConfigError, HandoffError
from meshagent.protocol import snapshot as snap

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = "seal + hand over a snapshot (bulk side channel) vs a raw TCP copy of the same bytes"

RATES: Final = {"100mbit": ("100mbit", "256kb"), "1gbit": ("1gbit", "1mb")}
_SUBNET: Final = "10.78.0"
_LAB: Final = Path(__file__).resolve().parents[2] / "scripts" / "lab"
_PIECE: Final = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=64 << 20, help="snapshot size in bytes (default 64 MiB)")
    parser.add_argument("--link", choices=("none", *RATES), default="none", help="loopback, or a tbf-limited namespace link (root)")
    parser.add_argument("--no-bulk", action="store_true", help="send the body over the libp2p stream (no side channel)")


# --- the two processes -------------------------------------------------------------


def _worker_cmd(prefix: list[str], *args: str) -> list[str]:
    return [*prefix, sys.executable, "-m", "meshagent.bench.handoff", "--worker", *args]


class _Lab:
    """Two namespaces on a bridge with tbf on both directions of each veth (or nothing for loopback)."""

    def __init__(self, link: str) -> None:
        self.link = link
        self.env = {**os.environ, "MA_LAB_PREFIX": f"mb{os.getpid() % 100000}", "MA_LAB_SUBNET": _SUBNET}

    def _lab(self, *args: str) -> None:
        result = subprocess.run([str(_LAB), *args], env=self.env, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise HandoffError(f"scripts/lab {' '.join(args)} failed: {result.stderr.strip()}")

    @contextmanager
    def up(self) -> Iterator[None]:
        if self.link == "none":
            yield
            return
        if os.geteuid() != 0 or shutil.which("tc") is None:
            raise ConfigError("--link needs root and tc (network namespaces, tbf)")
        prefix = self.env["MA_LAB_PREFIX"]
        rate, burst = RATES[self.link]
        try:
            self._lab("up", "2")
            for i in (1, 2):
                for argv in (["ip", "netns", "exec", f"{prefix}-{i}", "tc", "qdisc", "replace", "dev", "eth0"],
                             ["tc", "qdisc", "replace", "dev", f"{prefix}-v{i}"]):
                    subprocess.run([*argv, "root", "tbf", "rate", rate, "burst", burst, "latency", "50ms"], check=True,
                                   capture_output=True, timeout=30)
            yield
        finally:
            self._lab("down")

    def exec_prefix(self, i: int) -> list[str]:
        return [] if self.link == "none" else ["ip", "netns", "exec", f"{self.env['MA_LAB_PREFIX']}-{i}"]

    def ip(self, i: int) -> str:
        return "127.0.0.1" if self.link == "none" else f"{_SUBNET}.{i}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from meshagent.node.identity import load_or_create_identity

    lab = _Lab(args.link)
    with tempfile.TemporaryDirectory(prefix="ma-bench-handoff-") as tmp, lab.up():
        root = Path(tmp)
        sender, receiver = load_or_create_identity(root / "sender"), load_or_create_identity(root / "receiver")
        payload = os.urandom(args.size)
        sealed_path = root / "sender" / "out.sealed"
        t0 = time.perf_counter()
        sealed = snap.seal_snapshot(
            signing_key=sender.signing_key, sender_sealing_key=sender.sealing_public, recipient=receiver.peer_id,
            recipient_key=receiver.sealing_public, agent_id="bench-agent", generation=1,
            sections=[("meta", b"{}"), ("image", payload)], now=time.time(), ttl_s=600, data_key=secrets.token_bytes(32),
        )
        with open(sealed_path, "wb") as f:
            for piece in sealed.container():
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        seal_s = time.perf_counter() - t0
        del payload
        recv = subprocess.Popen(
            _worker_cmd(lab.exec_prefix(2), "receiver", str(root / "receiver"), lab.ip(2)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            line = recv.stdout.readline() if recv.stdout else b""
            if not line:
                raise HandoffError(f"bench receiver did not start: {recv.stderr.read().decode()[-2000:] if recv.stderr else ''}")
            ready = json.loads(line)
            out = subprocess.run(
                _worker_cmd(lab.exec_prefix(1), "sender", str(root / "sender"), lab.ip(1), json.dumps(ready),
                            str(sealed_path), "0" if args.no_bulk else "1"),
                capture_output=True, timeout=900, check=False,
            )
            if out.returncode != 0:
                raise HandoffError(f"bench sender failed: {out.stderr.decode()[-3000:]}")
            figures = json.loads(out.stdout.decode().strip().splitlines()[-1])
        finally:
            recv.send_signal(signal.SIGTERM)
            try:
                recv.wait(10)
            except subprocess.TimeoutExpired:
                recv.kill()
        stored = root / "receiver" / "in.sealed"
        t0 = time.perf_counter()
        size = _open_stored(stored, receiver)
        open_s = time.perf_counter() - t0
        if size != args.size + 2:
            raise HandoffError(f"opened {size} bytes, expected {args.size + 2}")
    body = figures["body_bytes"]
    handoff_mbps = body * 8 / figures["transfer_s"] / 1e6
    raw_mbps = body * 8 / figures["raw_s"] / 1e6
    return {
        "link": args.link,
        "bytes": args.size,
        "sealed_bytes": body,
        "via": figures["via"],
        "seal_s": round(seal_s, 4),
        "open_s": round(open_s, 4),
        "transfer_s": round(figures["transfer_s"], 4),
        "raw_tcp_s": round(figures["raw_s"], 4),
        "handoff_mbps": round(handoff_mbps, 1),
        "raw_tcp_mbps": round(raw_mbps, 1),
        "ratio": round(handoff_mbps / raw_mbps, 3),
    }


def _open_stored(path: Path, identity: Any) -> int:
    """Verify every chunk of the receiver's stored copy, then open it; return the raw bytes produced."""
    total = 0
    for mode in ("verify", "open"):
        reader = snap.SnapshotReader(sealing_key=identity.sealing_key, me=identity.peer_id, now=time.time(), mode=mode,
                                     check_expiry=False)
        total = 0
        with open(path, "rb") as f:
            while piece := f.read(_PIECE):
                for event in reader.receive_data(piece):
                    if isinstance(event, snap.SectionData):
                        total += len(event.data)
        reader.close()
    return total


# --- workers (run inside the namespaces) ------------------------------------------------


class _BenchReceiver:
    """Receiver hooks that verify and persist the sealed body, as a node does, and adopt nothing."""

    def __init__(self, data_dir: Path, identity: Any, host: Any) -> None:
        self._dir = data_dir
        self._id = identity
        self._host = host

    async def offer(self, peer: Any, header_blob: bytes) -> Any:
        return snap.verify_header(header_blob, me=self._id.peer_id, my_sealing_key=self._id.sealing_public, now=time.time())

    def have(self, header: snap.SnapshotHeader) -> frozenset[str]:
        return frozenset()

    def incoming_path(self, header: snap.SnapshotHeader) -> Path:
        return self._dir / "in.part"

    def reader(self, header_blob: bytes, skip: frozenset[str]) -> snap.SnapshotReader:
        return snap.SnapshotReader(sealing_key=self._id.sealing_key, me=self._id.peer_id, now=time.time(),
                                   header_blob=header_blob, skip=skip)

    async def stored(self, header: snap.SnapshotHeader, part: Path, skip: frozenset[str]) -> None:
        os.replace(part, self._dir / "in.sealed")

    async def aborted(self, header: snap.SnapshotHeader, part: Path) -> None:
        part.unlink(missing_ok=True)

    async def committed(self, header: snap.SnapshotHeader) -> None:
        return None

    def commit_missing(self, header: snap.SnapshotHeader) -> None:
        return None

    async def query(self, peer: Any, agent_id: str, generation: int) -> str:
        return "unknown"

    async def recommit(self, peer: Any, agent_id: str, generation: int) -> bool:
        return False

    def bulk_ips(self) -> list[str]:
        from meshagent.net.bulk import ips_of_addrs

        return ips_of_addrs(self._host.addrs)

    async def progress(self, header: snap.SnapshotHeader, done: int, total: int) -> None:
        return None


async def _raw_sink(listener: trio.SocketListener) -> None:
    while True:
        stream = await listener.accept()
        async with stream:
            while await stream.receive_some(_PIECE):
                pass
            await stream.send_all(b"k")


async def _receiver(data_dir: str, ip: str) -> None:
    from meshagent.net import handoff as wire
    from meshagent.net.host import open_host
    from meshagent.node.identity import load_or_create_identity

    identity = load_or_create_identity(Path(data_dir))
    async with open_host(identity, [f"/ip4/{ip}/tcp/0"]) as host:
        hooks = _BenchReceiver(Path(data_dir), identity, host)
        host.set_handler(wire.HANDOFF_PROTOCOL, lambda stream: wire.serve_handoff(stream, hooks))
        listeners = await trio.open_tcp_listeners(0, host=ip)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_raw_sink, listeners[0])
            port = listeners[0].socket.getsockname()[1]
            print(json.dumps({"peer_id": identity.peer_id, "addrs": list(host.addrs), "raw": [ip, port]}), flush=True)
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()


class _NoHooks:
    async def accepted(self, have: frozenset[str], via: Any) -> None:
        return None

    async def stored(self) -> None:
        return None

    async def resumed(self) -> None:
        return None


async def _sender(data_dir: str, ip: str, ready_json: str, sealed_path: str, bulk: str) -> None:
    from meshagent.net import handoff as wire
    from meshagent.net.host import open_host
    from meshagent.node.identity import load_or_create_identity
    from meshagent.protocol.signed import PeerId

    ready = json.loads(ready_json)
    identity = load_or_create_identity(Path(data_dir))
    path = Path(sealed_path)
    with open(path, "rb") as f:
        blob = wire.read_container_header(f)
    header = snap.verify_header(blob, me=identity.peer_id, my_sealing_key=identity.sealing_public, now=time.time(), as_sender=True)
    ranges = wire.body_ranges(path, header, frozenset())
    body = sum(n for _, n in ranges)
    async with open_host(identity, [f"/ip4/{ip}/tcp/0"]) as host:
        peer = PeerId(ready["peer_id"])
        if not await host.dial(peer, ready["addrs"]):
            raise HandoffError("bench sender cannot dial the receiver")
        raw_s = await _raw_copy(ready["raw"][0], int(ready["raw"][1]), path, ranges)
        t0 = time.perf_counter()
        result = await wire.send_snapshot(host, peer, path, header, blob, _NoHooks(), allow_bulk=bulk == "1")
        transfer_s = time.perf_counter() - t0
        if not result.resumed or result.body_bytes != body:
            raise HandoffError(f"bench handoff did not complete: {result}")
    print(json.dumps({"raw_s": raw_s, "transfer_s": transfer_s, "body_bytes": body, "via": str(result.via)}), flush=True)


async def _raw_copy(host: str, port: int, path: Path, ranges: list[tuple[int, int]]) -> float:
    """The baseline: the same body bytes, read from the same file, through one plain TCP socket."""
    t0 = time.perf_counter()
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        with open(path, "rb") as f:
            for offset, length in ranges:
                f.seek(offset)
                left = length
                while left:
                    piece = f.read(min(_PIECE, left))
                    await stream.send_all(piece)
                    left -= len(piece)
        await stream.send_eof()
        if await stream.receive_some(1) != b"k":
            raise HandoffError("raw TCP sink did not acknowledge")
    return time.perf_counter() - t0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        role, rest = sys.argv[2], sys.argv[3:]
        trio.run(_receiver if role == "receiver" else _sender, *rest)
