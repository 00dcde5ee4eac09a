"""What a node owes other nodes on the results relay, and its delivery.

``owed(seq, owner, kind, agent_id, dedupe, body)`` in the node store: results of
agents that ended here, custody notices for agents handed on from here,
children notices for forks here — each written by the results relay in the
same transaction as the fact it announces, and deleted only when the owner
answers ok. One delivery task per owner sends them: the rows about one agent
in the order they were written (a row the owner does not accept yet holds
back the later rows about that agent, not the others), with backoff while the
owner is away or not ready, again after every restart.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import trio

from meshagent.errors import MeshError, NodeError
from meshagent.net.host import MeshHost
from meshagent.node.store import NodeStore
from meshagent.protocol import results as rp
from meshagent.protocol.signed import PeerId

__all__ = ["Owed", "OwedDelivery", "exchange", "owe"]

log = logging.getLogger(__name__)

EXCHANGE_TIMEOUT_S: Final = 30.0
RETRY_MIN_S: Final = 0.5
RETRY_MAX_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Owed:
    seq: int
    owner: PeerId
    kind: str
    agent_id: str
    body: bytes | None
    """The encoded message; None for a result (read from the results table when sent)."""


def owe(db: sqlite3.Connection, owner: PeerId, kind: str, agent_id: str, dedupe: str, body: bytes | None) -> None:
    """Record a debt inside the caller's transaction; the same (owner, kind, agent, dedupe) is owed once."""
    db.execute("INSERT OR IGNORE INTO owed (owner, kind, agent_id, dedupe, body) VALUES (?, ?, ?, ?, ?)",
               (owner, kind, agent_id, dedupe, body))


async def exchange(host: MeshHost, peer: PeerId, payload: bytes, max_reply: int, *, timeout: float,
                   addrs: Callable[[PeerId], tuple[str, ...]]) -> bytes:
    """One request and its answer on a fresh results-relay stream; any network failure is a :class:`NodeError`."""
    if peer == host.peer_id:
        raise NodeError("a node does not relay results to itself")
    try:
        with trio.fail_after(timeout):
            if not host.is_connected(peer):
                host.forget_failures(peer)  # it may have just restarted
                if (known := addrs(peer)):
                    await host.dial(peer, known)
            stream = await host.open_stream(peer, rp.RESULT_PROTOCOL)
            try:
                await stream.send_frame(payload)
                return await stream.receive_frame(max_reply)
            finally:
                await stream.close()
    except MeshError:
        raise
    except Exception as exc:  # py-libp2p and trio raise assorted types when a peer is away
        raise NodeError(f"{peer} is not reachable: {type(exc).__name__}: {exc}") from exc


class OwedDelivery:
    """Delivers the ``owed`` rows. :meth:`run` in a nursery; :meth:`soon` after writing a row."""

    def __init__(self, store: NodeStore, host: MeshHost, *, payload: Callable[[Owed], bytes | None],
                 addrs: Callable[[PeerId], tuple[str, ...]], retry_max_s: float = RETRY_MAX_S) -> None:
        """``payload(row)``: the bytes to send for a row (None: nothing left to send, the row is paid)."""
        self._store = store
        self._host = host
        self._payload = payload
        self._addrs = addrs
        self._retry_max = retry_max_s
        self._wake: dict[PeerId, trio.Event] = {}
        self._delivering: set[PeerId] = set()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for owner in await trio.to_thread.run_sync(self._owners):
                self.soon(owner)
            task_status.started()
            await trio.sleep_forever()

    def rows(self) -> list[tuple[str, str, str]]:
        """What this node still owes: (owner, kind, agent id), oldest first (blocking)."""
        with self._store.transaction() as db:
            return [(r[0], r[1], r[2]) for r in db.execute("SELECT owner, kind, agent_id FROM owed ORDER BY seq")]

    def _owners(self) -> list[PeerId]:
        with self._store.transaction() as db:
            return [PeerId(r[0]) for r in db.execute("SELECT DISTINCT owner FROM owed")]

    def _rows_for(self, owner: PeerId) -> list[Owed]:
        with self._store.transaction() as db:
            rows = db.execute("SELECT seq, owner, kind, agent_id, body FROM owed WHERE owner = ? ORDER BY seq", (owner,)).fetchall()
        return [Owed(int(r[0]), PeerId(r[1]), str(r[2]), str(r[3]), None if r[4] is None else bytes(r[4])) for r in rows]

    def _paid(self, seq: int) -> None:
        with self._store.transaction() as db:
            db.execute("DELETE FROM owed WHERE seq = ?", (seq,))

    def soon(self, owner: PeerId) -> None:
        """A delivery task runs for ``owner`` and looks at its rows again now. Trio thread only."""
        event = self._wake.get(owner)
        if event is not None:
            event.set()
        if owner in self._delivering or self._nursery is None:
            return
        self._delivering.add(owner)
        self._nursery.start_soon(self._deliver, owner)

    async def _deliver(self, owner: PeerId) -> None:
        delay = RETRY_MIN_S
        try:
            while True:
                wake = self._wake[owner] = trio.Event()  # before the look: a row written meanwhile is seen
                rows = await trio.to_thread.run_sync(self._rows_for, owner)
                if not rows and not wake.is_set():
                    return
                if await self._pass(owner, rows):
                    delay = RETRY_MIN_S
                    continue
                with trio.move_on_after(delay):
                    await wake.wait()
                delay = min(delay * 2, self._retry_max)
        finally:
            self._delivering.discard(owner)
            self._wake.pop(owner, None)

    async def _pass(self, owner: PeerId, rows: list[Owed]) -> bool:
        """Send each agent's oldest row; True when any was paid. Stops at the first unreachable send."""
        progressed = False
        waiting: set[str] = set()
        for row in rows:
            if row.agent_id in waiting:
                continue  # an earlier row about this agent is not accepted yet: keep the order
            payload = await trio.to_thread.run_sync(self._payload, row)
            if payload is not None:
                try:
                    data = await exchange(self._host, owner, payload, 1024, timeout=EXCHANGE_TIMEOUT_S, addrs=self._addrs)
                    reply = rp.decode_reply(data)
                except MeshError as exc:
                    log.debug("delivering %s of %s to %s failed: %s", row.kind, row.agent_id, owner, exc)
                    return progressed
                if not reply.ok:
                    log.info("%s of %s: the owner %s will take it later (%s)", row.kind, row.agent_id, owner, reply.why)
                    waiting.add(row.agent_id)
                    continue
            await trio.to_thread.run_sync(self._paid, row.seq)
            log.info("delivered the %s of %s to its owner %s", row.kind, row.agent_id, owner)
            progressed = True
        return progressed
