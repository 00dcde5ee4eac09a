"""``meshagent bench handoff``: move a real agent from one process to another; compare with raw TCP.

The agent is ``meshagent/agents/heap_bench.c`` with a heap of ``--size`` bytes (whole MiB, filled
with xorshift output, which does not compress: the worst case), frozen in the sender process.
Each sample hands it over between two processes, as nodes do, and copies the same bytes through
a plain TCP socket between the same two processes. At least three samples; the order alternates
(raw first, then handoff first, ...). Per sample:

* ``seal_s`` — snapshot sections, compress, encrypt, sign, write the sealed file and fsync it;
* ``transfer_s`` — offer → accept → body (bulk side channel) → stored: the receiver checked
  every chunk and made its copy durable;
* ``open_s`` — the receiver verifies its stored copy, then decrypts and decompresses it and
  rebuilds the agent (two passes: nothing is decompressed unauthenticated);
* ``resume_s`` — the receiver instantiates the agent from the snapshot (module compiled, memory
  image applied) and reads its checksum, which must equal the sender's;
* ``end_to_end_s`` — from the start of sealing to the sender hearing "resumed" (the receiver
  sends it after opening and resuming): seal + transfer + commit + open + resume;
* ``raw_tcp_s`` — the sealed body's bytes through one plain TCP socket;
* ``raw_snapshot_tcp_s`` — the unsealed snapshot's bytes (``bytes``) through one plain TCP socket;
* ``ratio`` = ``raw_tcp_s / transfer_s`` (the handoff's transfer against raw TCP of the same
  sealed bytes) and ``end_to_end_ratio`` = ``raw_snapshot_tcp_s / end_to_end_s`` (the whole move
  against raw TCP of the snapshot's bytes).

The figures reported are medians over the samples (the ratios: medians of each sample's ratio,
whose two sides ran back to back); ``samples`` lists every sample. ``handoff_mbps`` and
``raw_tcp_mbps`` are the sealed body's rate over the median times.

``--link none`` runs both processes on loopback. ``--link 100mbit|1gbit`` (root) runs them in
two network namespaces joined by ``tc tbf``-limited veths on a bridge (``scripts/lab`` with its
own prefix), removed afterwards; ``limit_mbps`` is that limit.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
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

__all__ = ["DESCRIPTION", "MIN_SAMPLES", "add_arguments", "run"]

DESCRIPTION = "hand a real agent over (seal, transfer, open, resume) vs raw TCP copies of the same bytes"

RATES: Final = {"100mbit": ("100mbit", "256kb", 100), "1gbit": ("1gbit", "1mb", 1000)}
MIN_SAMPLES: Final = 3
_SUBNET: Final = "10.78.0"
_LAB: Final = Path(__file__).resolve().parents[2] / "scripts" / "lab"
_PIECE: Final = 1 << 20
_WORK_CALLS: Final = 100
"""Journaled host calls the agent makes before it is frozen (it carries a journal, as agents do)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=64 << 20, help="the agent's heap in bytes, whole MiB (default 64 MiB)")
    parser.add_argument("--link", choices=("none", *RATES), default="none", help="loopback, or a tbf-limited namespace link (root)")
    parser.add_argument("--no-bulk", action="store_true", help="send the body over the libp2p stream (no side channel)")
    parser.add_argument("--samples", type=int, default=MIN_SAMPLES, help=f"alternating samples, at least {MIN_SAMPLES} (default {MIN_SAMPLES})")


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

    @property
    def limit_mbps(self) -> int | None:
        return None if self.link == "none" else RATES[self.link][2]

    @contextmanager
    def up(self) -> Iterator[None]:
        if self.link == "none":
            yield
            return
        if os.geteuid() != 0 or shutil.which("tc") is None:
            raise ConfigError("--link needs root and tc (network namespaces, tbf)")
        prefix = self.env["MA_LAB_PREFIX"]
        rate, burst, _ = RATES[self.link]
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


def _json_lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.startswith("{")]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from meshagent.config import user_cache_dir
    from meshagent.runtime.build import build_cached, example_source

    samples = int(getattr(args, "samples", MIN_SAMPLES))
    if samples < MIN_SAMPLES:
        raise ConfigError(f"--samples must be at least {MIN_SAMPLES}: the figures are medians of alternating samples")
    heap_mib = max(1, args.size >> 20)
    wasm = build_cached(example_source("heap_bench"), user_cache_dir() / "agents", reactor=True)
    lab = _Lab(args.link)
    with tempfile.TemporaryDirectory(prefix="ma-bench-handoff-") as tmp, lab.up():
        root = Path(tmp)
        recv = subprocess.Popen(
            _worker_cmd(lab.exec_prefix(2), "receiver", str(root / "receiver"), lab.ip(2), str(heap_mib)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            line = recv.stdout.readline() if recv.stdout else b""
            if not line:
                raise HandoffError(f"bench receiver did not start: {recv.stderr.read().decode()[-2000:] if recv.stderr else ''}")
            out = subprocess.run(
                _worker_cmd(lab.exec_prefix(1), "sender", str(root / "sender"), lab.ip(1), line.decode().strip(), str(wasm),
                            str(heap_mib), str(samples), "0" if args.no_bulk else "1"),
                capture_output=True, timeout=1800, check=False,
            )
            if out.returncode != 0:
                raise HandoffError(f"bench sender failed: {out.stderr.decode()[-3000:]}")
        finally:
            recv.send_signal(signal.SIGTERM)
            try:
                rest, _ = recv.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                recv.kill()
                rest, _ = recv.communicate()
    sent = _json_lines(out.stdout)
    summary = sent[-1]
    resumed = {r["generation"]: r for r in _json_lines(rest)}
    rows = []
    for sample in sent[:-1]:
        got = resumed.get(sample["generation"])
        if got is None:
            raise HandoffError(f"the receiver did not report resuming sample {sample['generation']}")
        if got["checksum"] != summary["checksum"]:
            raise HandoffError(f"the resumed agent differs from the frozen one (checksum {got['checksum']} != {summary['checksum']})")
        row = {**sample, "open_s": got["open_s"], "resume_s": got["resume_s"]}
        row["ratio"] = row["raw_tcp_s"] / row["transfer_s"]
        row["end_to_end_ratio"] = row["raw_snapshot_tcp_s"] / row["end_to_end_s"]
        rows.append(row)
    return _figures(args, lab, summary, rows)


def _figures(args: argparse.Namespace, lab: _Lab, summary: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float:
        return float(statistics.median(r[key] for r in rows))

    body = summary["body_bytes"]
    times = ("seal_s", "transfer_s", "open_s", "resume_s", "end_to_end_s", "raw_tcp_s", "raw_snapshot_tcp_s")
    return {
        "link": args.link,
        "limit_mbps": lab.limit_mbps,
        "bytes": summary["bytes"],
        "sealed_bytes": body,
        "via": rows[0]["via"],
        **{key: round(median(key), 4) for key in times},
        "handoff_mbps": round(body * 8 / median("transfer_s") / 1e6, 1),
        "raw_tcp_mbps": round(body * 8 / median("raw_tcp_s") / 1e6, 1),
        "end_to_end_mbps": round(summary["bytes"] * 8 / median("end_to_end_s") / 1e6, 1),
        "ratio": round(median("ratio"), 3),
        "end_to_end_ratio": round(median("end_to_end_ratio"), 3),
        "samples": [
            {"order": r["order"], **{k: round(r[k], 6) for k in (*times, "ratio", "end_to_end_ratio")}} for r in rows
        ],
    }


# --- the agent ------------------------------------------------------------------------


class _Runtime:
    """What either side needs to run the benchmark agent (a constant LLM: the figures are the handoff's)."""

    def __init__(self, heap_mib: int) -> None:
        from meshagent.bench.checkpoint import ConstantLlm
        from meshagent.config import SandboxLimits
        from meshagent.runtime.modules import ModuleCache, engine_for

        self.limits = SandboxLimits(memory_bytes=max(256 << 20, (heap_mib + 64) << 20))
        self.modules = ModuleCache(engine_for(self.limits.stack_bytes))
        self.services = ConstantLlm()

    def agent(self, snapshot: Any) -> Any:
        from meshagent.runtime.sandbox import Agent

        return Agent(snapshot, modules=self.modules, services=self.services, limits=self.limits)

    def frozen(self, wasm: bytes, heap_mib: int) -> tuple[Any, int]:
        """The agent after ``setup`` and some journaled calls, frozen with its memory image; and its checksum."""
        from meshagent.node.snapshots import FrozenAgent
        from meshagent.runtime.journal import Journal
        from meshagent.runtime.snapshot import AgentSnapshot

        sha = self.modules.load(wasm, _known_imports()).sha256
        live = self.agent(AgentSnapshot(agent_id="bench-agent", module_sha256=sha, module=wasm,
                                        journal=Journal(limit=self.limits.journal_bytes)))
        live.run()
        if live.invoke("setup", heap_mib) != 0:
            raise HandoffError("the benchmark agent could not allocate its heap")
        live.invoke("work", _WORK_CALLS)
        checksum = int(live.invoke("checksum"))
        return FrozenAgent(snapshot=live.snapshot()), checksum

    def resume(self, frozen: Any) -> int:
        """Instantiate the agent from its snapshot and read its checksum: the module compiled (it came
        in the snapshot: this receiver did not hold it), the memory image applied, the journal checked."""
        from meshagent.runtime.modules import ModuleCache
        from meshagent.runtime.sandbox import Agent

        agent = Agent(frozen.snapshot, modules=ModuleCache(self.modules.engine), services=self.services, limits=self.limits)
        agent.run()
        return int(agent.invoke("checksum"))


def _known_imports() -> Any:
    from meshagent.runtime.sandbox import KNOWN_IMPORTS

    return KNOWN_IMPORTS


def _seal_to_file(frozen: Any, identity: Any, recipient: str, recipient_key: bytes, generation: int, path: Path) -> snap.SealedSnapshot:
    """Seal as a sender does, into a durable container file (the sender's escrow copy)."""
    from meshagent.node.snapshots import seal_agent

    sealed = seal_agent(frozen, identity, recipient=recipient, recipient_key=recipient_key,  # type: ignore[arg-type]
                        generation=generation, now=time.time(), ttl_s=600, data_key=secrets.token_bytes(32))
    with open(path, "wb") as f:
        for piece in sealed.container():
            f.write(piece)
        f.flush()
        os.fsync(f.fileno())
    return sealed


def _open_sealed(path: Path, identity: Any) -> Any:
    """Verify every chunk of a stored sealed file, then open it and rebuild the agent, as a receiver does."""
    from meshagent.node.snapshots import from_sections

    sections: dict[str, bytearray] = {}
    reader = None
    for mode in ("verify", "open"):
        reader = snap.SnapshotReader(sealing_key=identity.sealing_key, me=identity.peer_id, now=time.time(), mode=mode,
                                     check_expiry=False)
        sections = {}
        with open(path, "rb") as f:
            while piece := f.read(_PIECE):
                for event in reader.receive_data(piece):
                    if isinstance(event, snap.SectionData):
                        sections.setdefault(event.section, bytearray()).extend(event.data)
        reader.close()
    assert reader is not None and reader.header is not None
    return from_sections({k: bytes(v) for k, v in sections.items()}, reader.header)


# --- workers (run inside the namespaces) ------------------------------------------------


class _BenchReceiver:
    """Receiver hooks that do what a node does — verify and persist the body, open and resume the
    agent on commit — and report the open and resume times of each handoff on stdout."""

    def __init__(self, data_dir: Path, identity: Any, host: Any, runtime: _Runtime) -> None:
        self._dir = data_dir
        self._id = identity
        self._host = host
        self._runtime = runtime

    def _stored_path(self, header: snap.SnapshotHeader) -> Path:
        return self._dir / f"in-{header.generation}.sealed"

    async def offer(self, peer: Any, header_blob: bytes) -> Any:
        return snap.verify_header(header_blob, me=self._id.peer_id, my_sealing_key=self._id.sealing_public, now=time.time())

    def have(self, header: snap.SnapshotHeader) -> frozenset[str]:
        return frozenset()

    def incoming_path(self, header: snap.SnapshotHeader) -> Path:
        return self._dir / f"in-{header.generation}.part"

    def reader(self, header_blob: bytes, skip: frozenset[str]) -> snap.SnapshotReader:
        return snap.SnapshotReader(sealing_key=self._id.sealing_key, me=self._id.peer_id, now=time.time(),
                                   header_blob=header_blob, skip=skip)

    async def stored(self, header: snap.SnapshotHeader, part: Path, skip: frozenset[str]) -> None:
        os.replace(part, self._stored_path(header))

    async def aborted(self, header: snap.SnapshotHeader, part: Path) -> None:
        part.unlink(missing_ok=True)

    async def committed(self, header: snap.SnapshotHeader) -> None:
        path = self._stored_path(header)
        t0 = time.perf_counter()
        frozen = await trio.to_thread.run_sync(_open_sealed, path, self._id)
        t1 = time.perf_counter()
        checksum = await trio.to_thread.run_sync(self._runtime.resume, frozen)
        t2 = time.perf_counter()
        path.unlink()
        print(json.dumps({"generation": header.generation, "open_s": t1 - t0, "resume_s": t2 - t1, "checksum": checksum}),
              flush=True)

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


async def _receiver(data_dir: str, ip: str, heap_mib: str) -> None:
    from meshagent.net import handoff as wire
    from meshagent.net.host import open_host
    from meshagent.node.identity import load_or_create_identity

    identity = load_or_create_identity(Path(data_dir))
    runtime = _Runtime(int(heap_mib))
    async with open_host(identity, [f"/ip4/{ip}/tcp/0"]) as host:
        hooks = _BenchReceiver(Path(data_dir), identity, host, runtime)
        host.set_handler(wire.HANDOFF_PROTOCOL, lambda stream: wire.serve_handoff(stream, hooks))
        listeners = await trio.open_tcp_listeners(0, host=ip)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_raw_sink, listeners[0])
            port = listeners[0].socket.getsockname()[1]
            print(json.dumps({"peer_id": identity.peer_id, "addrs": list(host.addrs), "raw": [ip, port],
                              "sealing_key": identity.sealing_public.hex()}), flush=True)
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()


class _Marks:
    """Sender hooks that note when the receiver said "stored" and "resumed"."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    async def accepted(self, have: frozenset[str], via: Any) -> None:
        return None

    async def stored(self) -> None:
        self.at["stored"] = time.perf_counter()

    async def resumed(self) -> None:
        self.at["resumed"] = time.perf_counter()


async def _sender(data_dir: str, ip: str, ready_json: str, wasm_path: str, heap_mib: str, samples: str, bulk: str) -> None:
    from meshagent.net import handoff as wire
    from meshagent.net.host import open_host
    from meshagent.node.identity import load_or_create_identity
    from meshagent.node.snapshots import to_sections
    from meshagent.protocol.signed import PeerId

    ready = json.loads(ready_json)
    peer, recipient_key = PeerId(ready["peer_id"]), bytes.fromhex(ready["sealing_key"])
    work = Path(data_dir)
    identity = load_or_create_identity(work)
    runtime = _Runtime(int(heap_mib))
    frozen, checksum = await trio.to_thread.run_sync(runtime.frozen, Path(wasm_path).read_bytes(), int(heap_mib))
    # The baselines' bytes: the unsealed snapshot, and a sealed copy (same size as each sample's).
    plain = work / "snapshot.bytes"
    with open(plain, "wb") as f:
        for _, data in to_sections(frozen, include_kv=False):
            f.write(data)
    raw_bytes = plain.stat().st_size
    reference = work / "reference.sealed"
    sealed = await trio.to_thread.run_sync(_seal_to_file, frozen, identity, peer, recipient_key, 1, reference)
    ranges = wire.body_ranges(reference, sealed.header, frozenset())
    body = sum(n for _, n in ranges)
    async with open_host(identity, [f"/ip4/{ip}/tcp/0"]) as host:
        if not await host.dial(peer, ready["addrs"]):
            raise HandoffError("bench sender cannot dial the receiver")
        raw_host, raw_port = ready["raw"][0], int(ready["raw"][1])

        async def raw() -> dict[str, float]:
            return {"raw_tcp_s": await _raw_copy(raw_host, raw_port, reference, ranges),
                    "raw_snapshot_tcp_s": await _raw_copy(raw_host, raw_port, plain, [(0, raw_bytes)])}

        async def handoff(generation: int) -> dict[str, Any]:
            path = work / f"out-{generation}.sealed"
            marks = _Marks()
            t0 = time.perf_counter()
            sealed = await trio.to_thread.run_sync(_seal_to_file, frozen, identity, peer, recipient_key, generation, path)
            t_sealed = time.perf_counter()
            result = await wire.send_snapshot(host, peer, path, sealed.header, sealed.header_blob, marks,
                                              allow_bulk=bulk == "1")
            path.unlink()
            if not result.resumed or result.body_bytes != body:
                raise HandoffError(f"bench handoff did not complete: {result}")
            return {"generation": generation, "via": str(result.via), "seal_s": t_sealed - t0,
                    "transfer_s": marks.at["stored"] - t_sealed, "end_to_end_s": marks.at["resumed"] - t0}

        for i in range(int(samples)):
            if i % 2 == 0:
                row = {"order": "raw first", **await raw(), **await handoff(i + 2)}
            else:
                row = {"order": "handoff first", **await handoff(i + 2), **await raw()}
            print(json.dumps(row), flush=True)
    print(json.dumps({"checksum": checksum, "bytes": raw_bytes, "body_bytes": body}), flush=True)


async def _raw_copy(host: str, port: int, path: Path, ranges: list[tuple[int, int]]) -> float:
    """A baseline: these bytes of this file, read as the handoff reads them, through one plain TCP socket."""
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
