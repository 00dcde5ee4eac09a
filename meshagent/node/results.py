"""The results relay: custody records at the owner, results and notices owed to it, waiting for results.

The rules are in :mod:`meshagent.protocol.results` (read its docstring); this
is the node's shell around them.

**At the owner.** ``custody(agent_id, holder, generation)`` per agent this node
owns (no row: held here, generation -1). It moves when this node hands the
agent over itself (:meth:`ResultsRelay.handed_over`), when the agent comes back
(:meth:`ResultsRelay.adopted`), and on a :class:`~meshagent.protocol.results.CustodyNotice`
from the current holder. Results, custody and children notices from peers are
judged and recorded in one transaction; a forgery stores nothing.

**At a holder.** ``owed(seq, owner, kind, agent_id, dedupe, body)`` — what this
node owes to other owners: results of agents that ended here, custody notices
for agents it handed on, children notices for forks here. Each row is written
in the same transaction as the fact it announces (or, for a handoff, right
after its commit is persisted, and again by the handoff's recovery), and
deleted only when the owner answers ok. One delivery task per owner sends
them, the rows about one agent in order, with backoff while the owner is away
or not ready, across restarts.

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
from dataclasses import dataclass
from typing import Final

import trio

from meshagent.errors import AgentNotFound, MeshError, NodeError, RemoteProtocolError
from meshagent.net.host import MeshHost, Stream
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
_EXCHANGE_TIMEOUT_S: Final = 30.0
_RETRY_MIN_S: Final = 0.5
_RETRY_MAX_S: Final = 5.0

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


@dataclass(frozen=True, slots=True)
class _Owed:
    seq: int
    owner: PeerId
    kind: str
    agent_id: str
    body: bytes | None


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
        retry_max_s: float = _RETRY_MAX_S,
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
        self._wake: dict[PeerId, trio.Event] = {}
        self._delivering: set[PeerId] = set()
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self.refused = 0
        """Reports and notices answered not-ok since the start (forgeries, early arrivals)."""

    # --- running ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._host.set_handler(RESULT_PROTOCOL, self._serve)
            for owner in await trio.to_thread.run_sync(self._owed_owners):
                self._deliver_soon(owner)
            task_status.started()
            await trio.sleep_forever()

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

    def _changed_from_thread(self, agent_ids: Iterable[str], owner: PeerId | None = None) -> None:
        if self._token is None:
            return
        def wake() -> None:
            for agent_id in agent_ids:
                self._changed(agent_id)
            if owner is not None:
                self._deliver_soon(owner)
        try:
            trio.from_thread.run_sync(wake, trio_token=self._token)
        except trio.RunFinishedError:  # the node is stopping; the rows are durable and sent at the next start
            pass
        except RuntimeError:  # called on the trio thread itself
            wake()

    async def wait(self, agent_id: str, on_moved: Moved | None = None) -> dict[str, object]:
        """The result of an agent, wherever it ran: from this node's store the moment it is there, or
        from its owner when it belongs to another node. ``on_moved`` hears where an agent of this
        node went while it is away. Raises :class:`AgentNotFound` for an agent this node never knew."""
        told: PeerId | None = None
        delay = _RETRY_MIN_S
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
            data = await self._exchange(owner, rp.encode(FetchRequest(agent_id)), rp.MAX_REPLY,
                                        timeout=FETCH_WAIT_S + _EXCHANGE_TIMEOUT_S)
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
                _owe(db, owner, "result", result.agent_id, "", None)
        return owner if owner != self.me else None

    def ended(self, agent_id: str, owner: PeerId | None) -> None:
        """After :meth:`save_ended` (trio thread): wake the waiters, start the delivery."""
        self._changed(agent_id)
        if owner is not None:
            self._deliver_soon(owner)

    def forked(self, parent_id: str, child_ids: list[str], owner: str) -> None:
        """A fork here (blocking, on the agent's thread, after the family is recorded): the owner
        elsewhere is told of the children, held here."""
        if not owner or owner == self.me:
            return
        notice = ChildrenNotice(parent_id, tuple(child_ids))
        digest = hashlib.sha256(",".join(child_ids).encode()).hexdigest()[:32]
        with self._store.transaction() as db:
            _owe(db, PeerId(owner), "children", parent_id, digest, rp.encode(notice))
        self._changed_from_thread((), PeerId(owner))

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
        self._deliver_soon(owner)

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

    def _owe_one(self, owner: PeerId, kind: str, agent_id: str, dedupe: str, body: bytes | None) -> None:
        with self._store.transaction() as db:
            _owe(db, owner, kind, agent_id, dedupe, body)

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
        self.refused += 1
        log.warning("%s from %s not accepted (%s)", what, peer, verdict.value)
        return Reply(False, "not accepted from this peer" if verdict is Verdict.LATER else "over this node's limits"), []

    async def _serve(self, stream: Stream) -> None:
        with trio.fail_after(FETCH_WAIT_S + _EXCHANGE_TIMEOUT_S):
            request = rp.decode_request(await stream.receive_frame(rp.MAX_MESSAGE))
            if isinstance(request, FetchRequest):
                await stream.send_frame(rp.encode(await self._answer_fetch(stream.peer, request.agent_id)))
            else:
                reply, woken = await trio.to_thread.run_sync(self.accept, stream.peer, request)
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

    # --- delivering what this node owes ---------------------------------------------------

    def _owed_owners(self) -> list[PeerId]:
        with self._store.transaction() as db:
            return [PeerId(r[0]) for r in db.execute("SELECT DISTINCT owner FROM owed")]

    def _owed_rows(self, owner: PeerId) -> list[_Owed]:
        with self._store.transaction() as db:
            rows = db.execute("SELECT seq, owner, kind, agent_id, body FROM owed WHERE owner = ? ORDER BY seq", (owner,)).fetchall()
        return [_Owed(int(r[0]), PeerId(r[1]), str(r[2]), str(r[3]), None if r[4] is None else bytes(r[4])) for r in rows]

    def owed(self) -> list[tuple[str, str, str]]:
        """What this node still owes: (owner, kind, agent id), oldest first (blocking)."""
        with self._store.transaction() as db:
            return [(r[0], r[1], r[2]) for r in db.execute("SELECT owner, kind, agent_id FROM owed ORDER BY seq")]

    def _paid(self, seq: int) -> None:
        with self._store.transaction() as db:
            db.execute("DELETE FROM owed WHERE seq = ?", (seq,))

    def _payload(self, row: _Owed) -> bytes | None:
        if row.body is not None:
            return row.body
        found = self.result(row.agent_id)
        return None if found is None else rp.encode(ResultReport(found))

    def _deliver_soon(self, owner: PeerId) -> None:
        """Make sure a delivery task runs for ``owner`` and looks at its rows again now. Trio thread only."""
        event = self._wake.get(owner)
        if event is not None:
            event.set()
        if owner in self._delivering or self._nursery is None:
            return
        self._delivering.add(owner)
        self._nursery.start_soon(self._deliver, owner)

    async def _deliver(self, owner: PeerId) -> None:
        delay = _RETRY_MIN_S
        try:
            while True:
                wake = self._wake[owner] = trio.Event()
                rows = await trio.to_thread.run_sync(self._owed_rows, owner)
                if not rows and not wake.is_set():
                    return
                if await self._deliver_pass(owner, rows):
                    delay = _RETRY_MIN_S
                    continue
                with trio.move_on_after(delay):
                    await wake.wait()
                delay = min(delay * 2, self._retry_max)
        finally:
            self._delivering.discard(owner)
            self._wake.pop(owner, None)

    async def _deliver_pass(self, owner: PeerId, rows: list[_Owed]) -> bool:
        """Send each agent's oldest row; True when any was accepted. Stops at the first unreachable send."""
        progressed = False
        waiting: set[str] = set()
        for row in rows:
            if row.agent_id in waiting:
                continue  # an earlier row about this agent is not accepted yet: keep the order
            payload = await trio.to_thread.run_sync(self._payload, row)
            if payload is not None:
                try:
                    reply = rp.decode_reply(await self._exchange(owner, payload, 1024, timeout=_EXCHANGE_TIMEOUT_S))
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

    async def _exchange(self, peer: PeerId, payload: bytes, max_reply: int, *, timeout: float) -> bytes:
        """One request and its answer on a fresh stream; every network failure is a :class:`NodeError`."""
        if peer == self.me:
            raise NodeError("a node does not relay results to itself")
        try:
            with trio.fail_after(timeout):
                if not self._host.is_connected(peer):
                    self._host.forget_failures(peer)  # it may have just restarted
                    if (addrs := self._addrs(peer)):
                        await self._host.dial(peer, addrs)
                stream = await self._host.open_stream(peer, RESULT_PROTOCOL)
                try:
                    await stream.send_frame(payload)
                    return await stream.receive_frame(max_reply)
                finally:
                    await stream.close()
        except MeshError:
            raise
        except Exception as exc:  # py-libp2p and trio raise assorted types when a peer is away
            raise NodeError(f"{peer} is not reachable: {type(exc).__name__}: {exc}") from exc


def _owe(db: sqlite3.Connection, owner: PeerId, kind: str, agent_id: str, dedupe: str, body: bytes | None) -> None:
    db.execute("INSERT OR IGNORE INTO owed (owner, kind, agent_id, dedupe, body) VALUES (?, ?, ?, ?, ?)",
               (owner, kind, agent_id, dedupe, body))


def _stored_result(db: sqlite3.Connection, agent_id: str) -> AgentResult | None:
    row = db.execute("SELECT result FROM results WHERE agent_id = ?", (agent_id,)).fetchone()
    if row is None:
        return None
    try:
        return AgentResult.from_wire(codec.decode_map(bytes(row[0]), max_size=rp.MAX_MESSAGE, max_depth=3))
    except RemoteProtocolError as exc:  # a row written by an older version past today's limits
        raise NodeError(f"the stored result of {agent_id} cannot be read: {exc}") from exc
