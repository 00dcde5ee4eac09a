"""TEST DOUBLE of :class:`meshagent.node.handoff.AgentCustody` — not the real runtime.

``CustodyDouble`` keeps each agent as a file in ``<data dir>/custody-double``
(the snapshot bytes, its metadata and a ``running``/``frozen`` state), so it
survives SIGKILL like a runtime that persists its agents would. It runs no
WebAssembly. TODO(wiring): when the runtime supervisor implements
``AgentCustody`` and the node registers ``HandoffManager``, switch the crash
tests in ``test_handoff_crash.py`` to real ``meshagent join`` nodes running a
real agent and compare its output with an undisturbed run.

This module holds no tests; it is named ``test_handoff_*`` only because the
handoff tests are the files this work owns.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from meshagent.errors import AgentNotFound
from meshagent.node.snapshots import AgentMeta, FrozenAgent
from meshagent.runtime.journal import Entry, Journal, digest
from meshagent.runtime.snapshot import AgentSnapshot
from meshagent.runtime.vfs import VirtualFs

__test__ = False
__all__ = ["CustodyDouble", "make_agent", "MODULE"]

MODULE = b"\x00asm\x01\x00\x00\x00" + b"\x00" * 64


def make_agent(agent_id: str = "agent-1", *, steps: int = 20, vfs_bytes: int = 0, seed: int = 1) -> FrozenAgent:
    """A deterministic agent snapshot: ``steps`` journal entries and an optional large virtual file."""
    entries = [Entry("mesh_llm", digest("mesh_llm", i), i, f"answer {i} of {seed}".encode()) for i in range(steps)]
    files = {"notes.txt": b"private notes"}
    if vfs_bytes:
        files["big.bin"] = random.Random(f"{agent_id}/{seed}").randbytes(vfs_bytes)  # incompressible
    snap = AgentSnapshot(
        agent_id=agent_id,
        module_sha256=hashlib.sha256(MODULE).hexdigest(),
        journal=Journal(entries),
        module=MODULE,
        vfs=VirtualFs(files),
        labels={"start": 0},
        status="suspended",
    )
    return FrozenAgent(snap, AgentMeta(owner="alice", privacy="any", policy="balanced"))


def fingerprint(agent: FrozenAgent) -> str:
    """What "the same output" means for the double: journal, files and labels are identical."""
    s = agent.snapshot
    return hashlib.sha256(s.journal.encode() + repr(sorted(s.vfs.files.items())).encode() + repr(s.labels).encode()).hexdigest()


class CustodyDouble:
    """File-backed custody for tests. ``state(agent)`` is ``running``, ``frozen`` or ``None``."""

    def __init__(self, data_dir: Path, *, modules: set[str] | None = None) -> None:
        self.dir = data_dir / "custody-double"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.modules = modules if modules is not None else set()
        self.log: list[tuple[str, str]] = []

    def _path(self, agent_id: str) -> Path:
        return self.dir / (hashlib.sha256(agent_id.encode()).hexdigest()[:16] + ".json")

    def _load(self, agent_id: str) -> dict[str, object] | None:
        try:
            return json.loads(self._path(agent_id).read_text())
        except FileNotFoundError:
            return None

    def _save(self, agent_id: str, record: dict[str, object]) -> None:
        tmp = self._path(agent_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self._path(agent_id))

    def put(self, agent: FrozenAgent, state: str = "running", generation: int = 0) -> None:
        module = agent.snapshot.module
        if module is not None:
            self.modules.add(hashlib.sha256(module).hexdigest())
        self._save(agent.agent_id, {
            "state": state, "generation": generation, "snapshot": agent.snapshot.to_bytes().hex(),
            "meta": [agent.meta.owner, agent.meta.privacy, agent.meta.policy],
        })

    def get(self, agent_id: str) -> FrozenAgent | None:
        record = self._load(agent_id)
        if record is None:
            return None
        snap = AgentSnapshot.from_bytes(bytes.fromhex(str(record["snapshot"])))
        owner, privacy, policy = record["meta"]  # type: ignore[misc]
        return FrozenAgent(snap, AgentMeta(owner, privacy, policy))

    def state(self, agent_id: str) -> str | None:
        record = self._load(agent_id)
        return None if record is None else str(record["state"])

    def generation(self, agent_id: str) -> int | None:
        record = self._load(agent_id)
        return None if record is None else int(record["generation"])  # type: ignore[arg-type]

    # --- AgentCustody ---------------------------------------------------------------

    async def freeze(self, agent_id: str) -> FrozenAgent:
        record = self._load(agent_id)
        if record is None:
            raise AgentNotFound(f"no agent {agent_id}")
        record["state"] = "frozen"
        self._save(agent_id, record)
        self.log.append(("freeze", agent_id))
        agent = self.get(agent_id)
        assert agent is not None
        if agent.snapshot.module is None:  # the runtime adds the module bytes from its store
            from dataclasses import replace
            agent = replace(agent, snapshot=replace(agent.snapshot, module=MODULE))
        return agent

    async def thaw(self, agent_id: str) -> None:
        record = self._load(agent_id)
        if record is not None:
            record["state"] = "running"
            self._save(agent_id, record)
        self.log.append(("thaw", agent_id))

    async def adopt(self, agent: FrozenAgent, generation: int) -> None:
        self.log.append(("adopt", agent.agent_id))
        if self.state(agent.agent_id) is None:
            self.put(agent, "running", generation)

    async def release(self, agent_id: str) -> None:
        self.log.append(("release", agent_id))
        try:
            self._path(agent_id).unlink()
        except FileNotFoundError:
            pass

    def holds(self, agent_id: str) -> bool:
        return self._path(agent_id).exists()  # the double's records survive restarts: frozen ones are held

    def frozen_in_store(self, agent_id: str) -> bool:
        return False

    def has_module(self, sha256: str) -> bool:
        return sha256 in self.modules
