"""What a node records about each agent beyond its runtime state.

* ``agent_meta`` — owner, privacy class and policy. A row exists for every
  agent started here, forked here, adopted here, and for the children a
  holder reported to this node as their owner; an agent without one is not
  known here (it is never presumed to be this node's).
* ``llm_steps`` — which model answered each LLM step (it travels with the agent).
* ``children`` — the family: which agent forked which.
* ``placements`` — where placement moved an agent, and why.

All in the node store (component ``placement``). Blocking: call through
``trio.to_thread`` (the agents' worker threads call some directly).
"""

from __future__ import annotations

import time
from typing import Any, Final

from meshagent.node.snapshots import AgentMeta
from meshagent.node.store import NodeStore
from meshagent.protocol import codec
from meshagent.protocol.signed import PeerId

__all__ = ["AgentRecords"]

_SCHEMA: Final = (
    """CREATE TABLE agent_meta (
        agent_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        privacy TEXT NOT NULL,
        policy TEXT NOT NULL)""",
    """CREATE TABLE results (
        agent_id TEXT PRIMARY KEY,
        result BLOB NOT NULL,
        received REAL NOT NULL)""",
    """CREATE TABLE llm_steps (
        agent_id TEXT PRIMARY KEY,
        models BLOB NOT NULL)""",
    """CREATE TABLE children (
        parent_id TEXT NOT NULL,
        child_id TEXT PRIMARY KEY)""",
    """CREATE TABLE placements (
        agent_id TEXT NOT NULL,
        at REAL NOT NULL,
        peer TEXT NOT NULL,
        reason TEXT NOT NULL)""",
)
"""The ``results`` table belongs to :mod:`meshagent.node.results`; it was created with these."""


class AgentRecords:
    """The node's records about agents (metadata, models per step, families, placements)."""

    def __init__(self, store: NodeStore, me: PeerId) -> None:
        self.store = store
        self.me = me
        store.ensure_schema("placement", 1, _SCHEMA)
        self._meta_cache: dict[str, AgentMeta] = {}

    # --- metadata ---------------------------------------------------------------------

    def meta_row(self, agent_id: str) -> AgentMeta | None:
        """The recorded metadata, or None when this node has no record of the agent."""
        cached = self._meta_cache.get(agent_id)
        if cached is not None:
            return cached
        with self.store.transaction() as db:
            row = db.execute("SELECT owner, privacy, policy FROM agent_meta WHERE agent_id = ?", (agent_id,)).fetchone()
        if row is None:
            return None
        meta = self._meta_cache[agent_id] = AgentMeta(*row)
        return meta

    def meta(self, agent_id: str) -> AgentMeta:
        """For placement: the recorded metadata, else the strictest default (private, owned here)."""
        meta = self.meta_row(agent_id)
        # Not cached: the strictest default must not outlive a record made later.
        return meta if meta is not None else AgentMeta(owner=self.me, privacy="private", policy="latency")

    def set_meta(self, agent_id: str, meta: AgentMeta) -> None:
        self._meta_cache[agent_id] = meta
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO agent_meta VALUES (?, ?, ?, ?)", (agent_id, meta.owner, meta.privacy, meta.policy))

    def forget_meta(self, agent_id: str) -> None:
        self._meta_cache.pop(agent_id, None)
        with self.store.transaction() as db:
            db.execute("DELETE FROM agent_meta WHERE agent_id = ?", (agent_id,))

    def forget_all(self, agent_id: str) -> None:
        """Everything recorded about an agent: metadata, result, steps, placements, family."""
        self._meta_cache.pop(agent_id, None)
        with self.store.transaction() as db:
            for table in ("agent_meta", "results", "llm_steps", "placements"):
                db.execute(f"DELETE FROM {table} WHERE agent_id = ?", (agent_id,))
            db.execute("DELETE FROM children WHERE parent_id = ? OR child_id = ?", (agent_id, agent_id))

    def owner_of(self, agent_id: str) -> PeerId | None:
        """Who owns the agent, per this node's record (None: no record here)."""
        meta = self.meta_row(agent_id)
        return None if meta is None else PeerId(meta.owner or self.me)

    # --- StepLog: which model answered each LLM step ----------------------------------

    def get(self, agent_id: str) -> list[str]:
        with self.store.transaction() as db:
            row = db.execute("SELECT models FROM llm_steps WHERE agent_id = ?", (agent_id,)).fetchone()
        if row is None:
            return []
        value = codec.decode(row[0], max_size=1 << 20, max_depth=2)
        return [str(v) for v in value] if isinstance(value, list) else []

    def set(self, agent_id: str, models: list[str]) -> None:
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO llm_steps VALUES (?, ?)", (agent_id, codec.encode(list(models))))

    # --- families and placements ------------------------------------------------------

    def record_children(self, parent_id: str, child_ids: list[str]) -> AgentMeta:
        """A fork: remember the family; the children inherit the parent's owner, privacy and policy."""
        meta = self.meta(parent_id)
        with self.store.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO children VALUES (?, ?)", [(parent_id, c) for c in child_ids])
            db.executemany("INSERT OR REPLACE INTO agent_meta VALUES (?, ?, ?, ?)",
                           [(c, meta.owner, meta.privacy, meta.policy) for c in child_ids])
        for child in child_ids:
            self._meta_cache[child] = meta
        return meta

    def children(self, parent_id: str) -> list[str]:
        with self.store.transaction() as db:
            return [r[0] for r in db.execute("SELECT child_id FROM children WHERE parent_id = ? ORDER BY rowid", (parent_id,))]

    def parent_of(self, child_id: str) -> str | None:
        with self.store.transaction() as db:
            row = db.execute("SELECT parent_id FROM children WHERE child_id = ?", (child_id,)).fetchone()
        return None if row is None else str(row[0])

    def record_placement(self, agent_id: str, peer: str, reason: str) -> None:
        with self.store.transaction() as db:
            db.execute("INSERT INTO placements VALUES (?, ?, ?, ?)", (agent_id, time.time(), peer, reason))

    def placements(self, agent_id: str) -> list[dict[str, Any]]:
        with self.store.transaction() as db:
            rows = db.execute("SELECT at, peer, reason FROM placements WHERE agent_id = ? ORDER BY at", (agent_id,)).fetchall()
        return [{"at": at, "peer": peer, "reason": reason} for at, peer, reason in rows]
