"""The results relay: custody records at the owner, results and notices owed to it, waiting for results.

The rules are in :mod:`meshagent.protocol.results` (read its docstring); this
is the node's shell around them.

**At the owner.** ``custody(agent_id, holder, generation)`` per agent this node
owns (no row: held here, generation -1). It moves when this node hands the
agent over itself (:meth:`ResultsRelay.handed_over`), when the agent comes back
(:meth:`ResultsRelay.adopted`), and on a :class:`~meshagent.protocol.results.CustodyNotice`
from the current holder. Results, custody and children notices from peers are
judged and recorded in one transaction; a forgery stores nothing.

**At a holder.** What this node owes other owners (:mod:`meshagent.node.owed`):
results of agents that ended here, custody notices for agents it handed on,
children notices for forks here. Each is written in the same transaction as the
fact it announces (for a handoff: right after its commit is persisted, and again
by the handoff's recovery) and re-sent until the owner answers ok.

**Waiting.** :meth:`ResultsRelay.wait` returns an agent's result the moment it
is stored here (ended here or relayed), or asks the owner when the agent
belongs to another node; no polling.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import trio

from meshagent.errors import AgentNotFound, MeshError, NodeError, RemoteProtocolError
from meshagent.net.host import MeshHost, Stream
from meshagent.node.owed import EXCHANGE_TIMEOUT_S, RETRY_MAX_S, RETRY_MIN_S, Owed, OwedDelivery, exchange, owe
from meshagent.node.records import AgentRecords
from meshagent.node.store import NodeStore
from meshagent.protocol import codec
from meshagent.protocol import results as rp
from meshagent.protocol.results import (
    AgentResult,
    ChildrenNotice,
    Custody,
    CustodyNotice,
    FetchReply,
    FetchRequest,
    Reply,
    ResultReport,
    Verdict,
)
from meshagent.protocol.signed import PeerId
from meshagent.runtime.outcome import Outcome

__all__ = ["RESULT_PROTOCOL", "ResultsRelay", "result_of"]

log = logging.getLogger(__name__)

RESULT_PROTOCOL: Final = rp.RESULT_PROTOCOL
FETCH_WAIT_S: Final = 25.0
"""How long the owner holds a fetch open for a result that has not arrived (the asker then asks again)."""

_SCHEMA: Final = (
    """CREATE TABLE custody (
        agent_id TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        generation INTEGER NOT NULL)""",
    "CREATE INDEX custody_holder ON custody(holder)",
    """CREATE TABLE owed (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        dedupe TEXT NOT NULL,
        body BLOB,
        UNIQUE (owner, kind, agent_id, dedupe))""",
    # Results owed by an earlier version of this node carry over.
    "CREATE TABLE IF NOT EXISTS unreported (agent_id TEXT PRIMARY KEY, owner TEXT NOT NULL)",
    "INSERT OR IGNORE INTO owed (owner, kind, agent_id, dedupe, body) SELECT owner, 'result', agent_id, '', NULL FROM unreported",
    "DROP TABLE unreported",
)

Moved = Callable[[str, PeerId], Awaitable[None]]
"""``on_moved(agent_id, holder)``: told while waiting that the agent is held by another node."""


def result_of(outcome: Outcome, children: Iterable[str]) -> AgentResult:
    """The relayed form of an outcome (cut to the relay's limits)."""
    return AgentResult(
        agent_id=outcome.agent_id,
        parent_id=outcome.parent_id,
        status=outcome.status,
        exit_code=outcome.exit_code,
        stdout=outcome.stdout,
        stderr=outcome.stderr,
        host_calls=outcome.host_calls,
        error=outcome.error_message,
        children=tuple(children),
    ).bounded()


class ResultsRelay:
    """Custody, results and the ``/meshagent/result/2`` protocol for one node. Start :meth:`run` in its nursery."""

    def __init__(
        self,
        store: NodeStore,
        records: AgentRecords,
        *,
        host: MeshHost,
        trusted: Callable[[PeerId], bool],
        addrs: Callable[[PeerId], tuple[str, ...]] = lambda peer: (),
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        """``trusted(peer)``: one of this owner's paired devices; ``addrs(peer)``: where to dial a peer
        this node is not connected to (its verified advert)."""
        self._store = store
        self._records = records
        self._host = host
        self.me = records.me
        self._trusted = trusted
        self._addrs = addrs
        self._retry_max = retry_max_s
        store.ensure_schema("results", 1, _SCHEMA)
        self._events: dict[str, trio.Event] = {}
        self._delivery = OwedDelivery(store, host, payload=self._payload, addrs=addrs, retry_max_s=retry_max_s)
        self._token: trio.lowlevel.TrioToken | None = None
        self.refused = 0
        """Reports and notices answered not-ok since the start (forgeries, early arrivals)."""

    # --- running ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._delivery.run)
            self._host.set_handler(RESULT_PROTOCOL, self._serve)
            task_status.started()

    # --- waiting ------------------------------------------------------------------------

    def _event(self, agent_id: str) -> trio.Event:
        event = self._events.get(agent_id)
        if event is None:
            event = self._events[agent_id] = trio.Event()
        return event

    def _changed(self, agent_id: str) -> None:
        """Wake everyone waiting on this agent (its result arrived or it changed hands). Trio thread only."""
        event = self._events.pop(agent_id, None)
        if event is not None:
            event.set()

    def _deliver_from_thread(self, owner: PeerId) -> None:
        """Start delivering to ``owner`` from a worker thread (or the trio thread)."""
        if self._token is None:
            return
        try:
            trio.from_thread.run_sync(self._delivery.soon, owner, trio_token=self._token)
        except trio.RunFinishedError:  # the node is stopping; the rows are durable and sent at the next start
            pass
        except RuntimeError:  # called on the trio thread itself
            self._delivery.soon(owner)

    async def wait(self, agent_id: str, on_moved: Moved | None = None) -> dict[str, object]:
        """The result of an agent, wherever it ran: from this node's store the moment it is there, or
        from its owner when it belongs to another node. ``on_moved`` hears where an agent of this
        node went while it is away. Raises :class:`AgentNotFound` for an agent this node never knew."""
        told: PeerId | None = None
        delay = RETRY_MIN_S
        while True:
            changed = self._event(agent_id)  # before the look: a result stored meanwhile still wakes us
            found, owner, custody = await trio.to_thread.run_sync(self._look, agent_id)
            if found is not None:
                return found.to_json()
            if owner is None:
                raise AgentNotFound(f"no agent {agent_id} is known to this node")
            if owner != self.me:
                answer = await self._fetch(owner, agent_id)
                if isinstance(answer, AgentResult):
                    return answer.to_json()
                if answer is not None:  # refused or unreachable: ask again later
                    await trio.sleep(delay)
                    delay = min(delay * 2, self._retry_max)
                continue
            if on_moved is not None and custody is not None and custody.holder not in (self.me, told):
                told = custody.holder
                await on_moved(agent_id, custody.holder)
            await changed.wait()

    def _look(self, agent_id: str) -> tuple[AgentResult | None, PeerId | None, Custody | None]:
        owner = self._records.owner_of(agent_id)
        with self._store.transaction() as db:
            found = _stored_result(db, agent_id)
            custody = self._custody_in(db, agent_id) if owner == self.me else None
        if found is not None:
            return found, owner or self.me, custody
        return None, owner, custody

    def result(self, agent_id: str) -> AgentResult | None:
        """The stored result (blocking)."""
        with self._store.transaction() as db:
            return _stored_result(db, agent_id)

    def custody(self, agent_id: str) -> Custody | None:
        """This owner's record of who holds the agent; None when it is not this node's (blocking)."""
        with self._store.transaction() as db:
            return self._custody_in(db, agent_id)

    async def _fetch(self, owner: PeerId, agent_id: str) -> AgentResult | str | None:
        """Ask the owner; the result, None (not there yet), or why it could not answer."""
        try:
            data = await exchange(self._host, owner, rp.encode(FetchRequest(agent_id)), rp.MAX_REPLY,
                                  timeout=FETCH_WAIT_S + EXCHANGE_TIMEOUT_S, addrs=self._addrs)
            reply = rp.decode_fetch_reply(data)
        except MeshError as exc:
            log.debug("fetching the result of %s from %s failed: %s", agent_id, owner, exc)
            return str(exc)
        if reply.refused:
            log.warning("the owner %s refused the result of %s to this node: %s", owner, agent_id, reply.refused)
            return reply.refused
        return reply.result

    # --- what happens to agents here (the holder's side) -------------------------------

    def save_ended(self, outcome: Outcome) -> PeerId | None:
        """Store an agent's result here and, when another node owns it, owe it there (one transaction).

        Returns that owner (blocking; then call :meth:`ended`)."""
        owner = self._records.owner_of(outcome.agent_id) or self.me
        result = result_of(outcome, self._records.children(outcome.agent_id))
        with self._store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?)",
                       (result.agent_id, codec.encode(result.to_wire()), time.time()))
            if owner != self.me:
                owe(db, owner, "result", result.agent_id, "", None)
        return owner if owner != self.me else None

    def ended(self, agent_id: str, owner: PeerId | None) -> None:
        """After :meth:`save_ended` (trio thread): wake the waiters, start the delivery."""
        self._changed(agent_id)
        if owner is not None:
            self._delivery.soon(owner)

    def forked(self, parent_id: str, child_ids: list[str], owner: str) -> None:
        """A fork here (blocking, on the agent's thread, after the family is recorded): the owner
        elsewhere is told of the children, held here."""
        if not owner or owner == self.me:
            return
        notice = ChildrenNotice(parent_id, tuple(child_ids))
        digest = hashlib.sha256(",".join(child_ids).encode()).hexdigest()[:32]
        with self._store.transaction() as db:
            owe(db, PeerId(owner), "children", parent_id, digest, rp.encode(notice))
        self._deliver_from_thread(PeerId(owner))

    async def handed_over(self, agent_id: str, generation: int, to: PeerId) -> None:
        """The handoff of ``agent_id`` at ``generation`` to ``to`` committed on this (sending) side.

        Idempotent (the handoff's recovery calls it again): the owner's record moves, or the
        owner elsewhere is owed a custody notice."""
        owner = await trio.to_thread.run_sync(self._records.owner_of, agent_id) or self.me
        if owner == self.me:
            await trio.to_thread.run_sync(self._set_custody, agent_id, to, generation, False)
            self._changed(agent_id)
            return
        body = rp.encode(CustodyNotice(agent_id, generation, to))
        await trio.to_thread.run_sync(self._owe_one, owner, "custody", agent_id, str(generation), body)
        self._delivery.soon(owner)

    async def adopted(self, agent_id: str, generation: int) -> None:
        """The agent arrived here at ``generation``: when this node owns it, it holds it again."""
        if await trio.to_thread.run_sync(self._records.owner_of, agent_id) == self.me:
            await trio.to_thread.run_sync(self._set_custody, agent_id, self.me, generation, True)
            self._changed(agent_id)

    def _set_custody(self, agent_id: str, holder: PeerId, generation: int, or_equal: bool) -> None:
        op = ">=" if or_equal else ">"
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO custody VALUES (?, ?, ?) ON CONFLICT(agent_id) DO UPDATE SET holder = excluded.holder,"
                f" generation = excluded.generation WHERE excluded.generation {op} custody.generation",
                (agent_id, holder, generation),
            )

    def forget(self, agent_id: str) -> None:
        """A deleted agent: its custody record goes (an owner then refuses a late result for it)."""
        with self._store.transaction() as db:
            db.execute("DELETE FROM custody WHERE agent_id = ?", (agent_id,))

    def _owe_one(self, owner: PeerId, kind: str, agent_id: str, dedupe: str, body: bytes | None) -> None:
        with self._store.transaction() as db:
            owe(db, owner, kind, agent_id, dedupe, body)

    # --- the owner's side ----------------------------------------------------------------

    def _custody_in(self, db: sqlite3.Connection, agent_id: str) -> Custody | None:
        """Custody of an agent this node owns (a metadata row naming it owner), else None."""
        meta = db.execute("SELECT owner FROM agent_meta WHERE agent_id = ?", (agent_id,)).fetchone()
        if meta is None or (meta[0] or self.me) != self.me:
            return None
        row = db.execute("SELECT holder, generation FROM custody WHERE agent_id = ?", (agent_id,)).fetchone()
        return Custody(self.me) if row is None else Custody(PeerId(row[0]), int(row[1]))

    def accept(self, peer: PeerId, request: ResultReport | CustodyNotice | ChildrenNotice) -> tuple[Reply, list[str]]:
        """Judge and record a peer's report or notice in one transaction (blocking).

        Returns the reply and the agents whose waiters to wake."""
        trusted = self._trusted(peer)
        with self._store.transaction() as db:
            match request:
                case ResultReport(result):
                    custody = self._custody_in(db, result.agent_id)
                    have = db.execute("SELECT 1 FROM results WHERE agent_id = ?", (result.agent_id,)).fetchone() is not None
                    verdict = rp.judge_report(custody, peer, have_result=have)
                    if verdict is Verdict.ACCEPT:
                        family = {r[0] for r in db.execute("SELECT child_id FROM children WHERE parent_id = ?", (result.agent_id,))}
                        kept = AgentResult(result.agent_id, result.parent_id, result.status, result.exit_code,
                                           result.stdout, result.stderr, result.host_calls, result.error,
                                           tuple(c for c in result.children if c in family))
                        db.execute("INSERT INTO results VALUES (?, ?, ?)", (result.agent_id, codec.encode(kept.to_wire()), time.time()))
                    woken = [result.agent_id]
                    what = f"result of {result.agent_id}"
                case CustodyNotice(agent_id, generation, holder):
                    verdict = rp.judge_custody(self._custody_in(db, agent_id), peer, request)
                    if verdict is Verdict.ACCEPT:
                        db.execute("INSERT OR REPLACE INTO custody VALUES (?, ?, ?)", (agent_id, holder, generation))
                    woken = [agent_id]
                    what = f"custody notice {agent_id}@{generation} -> {holder}"
                case ChildrenNotice(parent_id, children):
                    parent = self._custody_in(db, parent_id)
                    new = [c for c in dict.fromkeys(children)
                           if db.execute("SELECT 1 FROM agent_meta WHERE agent_id = ?", (c,)).fetchone() is None]
                    held = db.execute(
                        "SELECT COUNT(*) FROM custody c WHERE c.holder = ? AND NOT EXISTS"
                        " (SELECT 1 FROM results r WHERE r.agent_id = c.agent_id)", (peer,)).fetchone()[0]
                    verdict = rp.judge_children(parent, peer, request, new=len(new), held_by_sender=held, sender_trusted=trusted)
                    if verdict is Verdict.ACCEPT:
                        meta = db.execute("SELECT privacy, policy FROM agent_meta WHERE agent_id = ?", (parent_id,)).fetchone()
                        db.executemany("INSERT OR IGNORE INTO children VALUES (?, ?)", [(parent_id, c) for c in new])
                        db.executemany("INSERT INTO agent_meta VALUES (?, ?, ?, ?)", [(c, self.me, meta[0], meta[1]) for c in new])
                        db.executemany("INSERT OR REPLACE INTO custody VALUES (?, ?, -1)", [(c, peer) for c in new])
                    woken = []
                    what = f"children notice for {parent_id} ({len(children)})"
        if verdict in (Verdict.ACCEPT, Verdict.DUPLICATE):
            log.info("%s from %s: %s", what, peer, verdict.value)
            return Reply(True), woken
        log.warning("%s from %s not accepted (%s)", what, peer, verdict.value)
        return Reply(False, "not accepted from this peer" if verdict is Verdict.LATER else "over this node's limits"), []

    async def _serve(self, stream: Stream) -> None:
        with trio.fail_after(FETCH_WAIT_S + EXCHANGE_TIMEOUT_S):
            request = rp.decode_request(await stream.receive_frame(rp.MAX_MESSAGE))
            if isinstance(request, FetchRequest):
                await stream.send_frame(rp.encode(await self._answer_fetch(stream.peer, request.agent_id)))
            else:
                reply, woken = await trio.to_thread.run_sync(self.accept, stream.peer, request)
                self.refused += not reply.ok
                for agent_id in woken:
                    self._changed(agent_id)
                await stream.send_frame(rp.encode(reply))
        await stream.close()

    def _may_fetch(self, peer: PeerId, agent_id: str) -> tuple[bool, bool]:
        """(this node owns the agent, the peer may read its result)."""
        with self._store.transaction() as db:
            mine = self._custody_in(db, agent_id) is not None
            parent = db.execute("SELECT parent_id FROM children WHERE child_id = ?", (agent_id,)).fetchone()
            parent_custody = self._custody_in(db, parent[0]) if parent is not None else None
        return mine, rp.may_fetch(peer, trusted=self._trusted(peer), parent=parent_custody)

    async def _answer_fetch(self, peer: PeerId, agent_id: str) -> FetchReply:
        mine, allowed = await trio.to_thread.run_sync(self._may_fetch, peer, agent_id)
        if not (mine and allowed):
            self.refused += 1
            log.warning("refused %s the result of %s (not one of this owner's devices)", peer, agent_id)
            return FetchReply(None, "results are answered only to the owner's devices")
        with trio.move_on_after(FETCH_WAIT_S):
            while True:
                changed = self._event(agent_id)
                found = await trio.to_thread.run_sync(self.result, agent_id)
                if found is not None:
                    return FetchReply(found)
                await changed.wait()
        return FetchReply(None)
    # --- what this node owes ---------------------------------------------------------------

    def owed(self) -> list[tuple[str, str, str]]:
        """What this node still owes: (owner, kind, agent id), oldest first (blocking)."""
        return self._delivery.rows()

    def _payload(self, row: Owed) -> bytes | None:
        if row.body is not None:
            return row.body
        found = self.result(row.agent_id)
        return None if found is None else rp.encode(ResultReport(found))


def _stored_result(db: sqlite3.Connection, agent_id: str) -> AgentResult | None:
    row = db.execute("SELECT result FROM results WHERE agent_id = ?", (agent_id,)).fetchone()
    if row is None:
        return None
    try:
        return AgentResult.from_wire(codec.decode_map(bytes(row[0]), max_size=rp.MAX_MESSAGE, max_depth=3))
    except RemoteProtocolError as exc:  # a row written by an older version past today's limits
        raise NodeError(f"the stored result of {agent_id} cannot be read: {exc}") from exc
