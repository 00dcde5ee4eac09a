"""The node's handoff manager: migrate agents out, take them in, recover after a crash.

It composes the pure pieces — the snapshot format
(:mod:`meshagent.protocol.snapshot`), the handoff machines and the recovery
rules (:mod:`meshagent.protocol.handoff`, read its docstring) — with the trio
shell (:mod:`meshagent.net.handoff`), a small sqlite file
(``<data dir>/handoff.sqlite``) and the agent runtime, which it reaches only
through the :class:`AgentCustody` protocol.

Durable state, all written before the message that announces it:

* ``handoff_generations(agent_id, highest)`` — the highest generation this
  node has seen per agent; an offer at an older or equal one is refused.
* ``handoffs(role, agent_id, generation, peer, state, path, skip)`` — one row
  per handoff, on each side; ``state`` is a machine state name.

Sealing suite: with ``[net] sealing_suite = "hybrid"`` (``sealing_suite``
here) a snapshot for a peer that advertises a hybrid key is sealed with
HPKE ML-KEM768-X25519, and the escrow copy to this node's own hybrid key;
otherwise with X25519. A receiver opens either suite, with the private key
matching the suite named in the (signature-verified) header.

Sealed bytes at rest stay sealed: the sender's escrow copy in
``handoff/out`` (it can open it with its own key, rule S1) and the receiver's
copy in ``handoff/in`` (sealed to this node) until the agent resumed.

Control operations (register them on the node): ``migrate``,
``snapshot_export``, ``snapshot_import`` and ``handoffs``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import trio

from meshagent.errors import (
    AgentNotFound,
    ControlError,
    ExpiredError,
    FrameTooLarge,
    HandoffError,
    MeshError,
    NodeError,
    PrivacyViolation,
    SignatureError,
    StaleError,
    WrongRecipient,
)
from meshagent.net import handoff as wire
from meshagent.net.bulk import ips_of_addrs
from meshagent.net.host import MeshHost, Stream
from meshagent.node.control import Emit, Handler
from meshagent.node.identity import Identity
from meshagent.node.snapshots import CACHEABLE, FrozenAgent, from_sections, seal_agent, tool_prefix
from meshagent.node.store import connect_private
from meshagent.protocol import snapshot as snap
from meshagent.protocol.handoff import HANDOFF_PROTOCOL, Action, Reject, RejectReason, Via, recovery_action
from meshagent.protocol.signed import PeerId

__all__ = ["AgentCustody", "HandoffPeer", "PeerLookup", "HandoffManager", "HandoffStore", "peers_from_membership"]

log = logging.getLogger(__name__)

DB_NAME: Final = "handoff.sqlite"
RETRY_S: Final = 1.0
DEFAULT_LIMITS: Final = snap.Limits()
EXPORT_TTL_S: Final = 30 * 24 * 3600.0
"""An exported file may travel by sneakernet: it stays importable for 30 days."""
_PRE_COMMIT: Final = ("offered", "accepted", "sending", "awaiting_stored")


class AgentCustody(Protocol):
    """How the handoff manager reaches the agent runtime (implemented on the supervisor).

    All methods must be idempotent: recovery may repeat any of them.
    """

    async def freeze(self, agent_id: str) -> FrozenAgent:
        """Stop the agent at a consistent point (no guest frame live) and return it with its module bytes."""

    async def thaw(self, agent_id: str) -> None:
        """Resume a frozen agent here (its handoff was aborted)."""

    async def adopt(self, agent: FrozenAgent, generation: int) -> None:
        """Start running an agent that arrived; a no-op if it already runs here at this generation."""

    async def release(self, agent_id: str) -> None:
        """Forget the local copy for good (the handoff committed); a no-op if already gone."""

    def holds(self, agent_id: str) -> bool:
        """True when the runtime has this agent (running or frozen)."""

    def frozen_in_store(self, agent_id: str) -> bool:
        """True when the agent is only in the node's store, frozen for a handoff (the node
        crashed after freezing it): :meth:`thaw` brings it back."""

    def has_module(self, sha256: str) -> bool:
        """True when the module with this sha256 is in the local module store."""

    def has_tool(self, sha256_prefix: str) -> bool:
        """True when a WASI tool whose sha256 starts so is in the local tool store (optional)."""

    async def handed_over(self, agent_id: str, generation: int, to: PeerId) -> None:
        """The handoff to ``to`` at ``generation`` committed on this sending side (optional; called again by
        recovery): the agent's owner must learn who holds it now."""


@dataclass(frozen=True, slots=True)
class HandoffPeer:
    """What the sender needs to know about a recipient (from its verified advert)."""

    peer_id: PeerId
    addrs: tuple[str, ...]
    sealing_key: bytes
    model_hashes: frozenset[str] = frozenset()
    sealing_key_pq: bytes = b""
    """The peer's hybrid ML-KEM768-X25519 key (its advert's binding verified); empty when it has none."""


PeerLookup = Callable[[PeerId], HandoffPeer | None]


def peers_from_membership(membership: Any) -> PeerLookup:
    """A :data:`PeerLookup` over the node's verified peer table (``membership.table``)."""

    def lookup(peer: PeerId) -> HandoffPeer | None:
        entry = membership.table.get(peer)
        if entry is None:
            return None
        ad = entry.advert
        return HandoffPeer(ad.peer_id, ad.addrs, ad.sealing_key, frozenset(m.sha256 for m in ad.models), ad.sealing_key_pq)

    return lookup


@dataclass(frozen=True, slots=True)
class Row:
    role: str
    agent_id: str
    generation: int
    peer: str
    state: str
    path: str
    skip: frozenset[str]


class HandoffStore:
    """The manager's sqlite tables. Blocking; called through ``trio.to_thread`` one at a time."""

    def __init__(self, path: Path) -> None:
        self._db = connect_private(path)  # 0600, and so its -wal/-shm
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS handoff_generations(agent_id TEXT PRIMARY KEY, highest INTEGER NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS handoffs(role TEXT NOT NULL, agent_id TEXT NOT NULL, generation INTEGER NOT NULL,"
            " peer TEXT NOT NULL, state TEXT NOT NULL, path TEXT NOT NULL, skip TEXT NOT NULL DEFAULT '',"
            " updated REAL NOT NULL, PRIMARY KEY(role, agent_id, generation))"
        )

    def close(self) -> None:
        self._db.close()

    def highest(self, agent_id: str) -> int:
        row = self._db.execute("SELECT highest FROM handoff_generations WHERE agent_id=?", (agent_id,)).fetchone()
        return -1 if row is None else int(row[0])

    def see(self, agent_id: str, generation: int) -> None:
        self._db.execute(
            "INSERT INTO handoff_generations VALUES(?, ?) ON CONFLICT(agent_id) DO UPDATE SET highest=max(highest, excluded.highest)",
            (agent_id, generation),
        )

    def put(self, row: Row) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO handoffs VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
            (row.role, row.agent_id, row.generation, row.peer, row.state, row.path, ",".join(sorted(row.skip)), time.time()),
        )

    def set_state(self, role: str, agent_id: str, generation: int, state: str) -> None:
        self._db.execute(
            "UPDATE handoffs SET state=?, updated=? WHERE role=? AND agent_id=? AND generation=?",
            (state, time.time(), role, agent_id, generation),
        )

    def get(self, role: str, agent_id: str, generation: int) -> Row | None:
        r = self._db.execute(
            "SELECT role, agent_id, generation, peer, state, path, skip FROM handoffs WHERE role=? AND agent_id=? AND generation=?",
            (role, agent_id, generation),
        ).fetchone()
        return None if r is None else _row(r)

    def rows(self) -> list[Row]:
        cur = self._db.execute("SELECT role, agent_id, generation, peer, state, path, skip FROM handoffs ORDER BY updated")
        return [_row(r) for r in cur.fetchall()]


def _row(r: tuple[Any, ...]) -> Row:
    return Row(r[0], r[1], int(r[2]), r[3], r[4], r[5], frozenset(s for s in r[6].split(",") if s))


def _fname(agent_id: str, generation: int) -> str:
    return f"{hashlib.sha256(agent_id.encode()).hexdigest()[:24]}.{generation}"


def _write_container(sealed: snap.SealedSnapshot, path: Path) -> int:
    tmp = path.with_suffix(".tmp")
    size = 0
    with open(tmp, "wb") as f:
        for piece in sealed.container():
            f.write(piece)
            size += len(piece)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str | Path) -> None:
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass


class HandoffManager:
    """Handoffs for one node. Start ``run`` in the node's nursery before its runtime resumes agents."""

    def __init__(
        self,
        *,
        data_dir: Path,
        identity: Identity,
        host: MeshHost,
        custody: AgentCustody,
        peers: PeerLookup,
        limits: snap.Limits = DEFAULT_LIMITS,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        allow_bulk: bool = True,
        retry_s: float = RETRY_S,
        crash_point: Callable[[str], None] | None = None,
        trusted: Callable[[PeerId], bool] = lambda peer: False,
        on_lan: Callable[[PeerId], bool] = lambda peer: False,
        admit: Callable[[snap.SnapshotHeader], RejectReason | None] = lambda header: None,
        sealing_suite: str = "x25519",
    ) -> None:
        """``trusted(peer)``: the peer is one of the owner's devices (trust store, paired);
        ``on_lan(peer)``: found on this link by mDNS, reached without relays. They gate
        ``private`` and ``lan`` agents; ``admit(header)`` may refuse a verified offer
        (e.g. ``RejectReason.FULL`` when the node has no room); ``crash_point`` is a test hook called at each persisted step.
        ``sealing_suite`` (``[net] sealing_suite``): ``"hybrid"`` seals with ML-KEM768-X25519 to peers advertising a hybrid key.
        """
        if sealing_suite not in ("x25519", "hybrid"):
            raise ValueError(f"unknown sealing suite {sealing_suite!r}")
        self._dir = data_dir / "handoff"
        self._db_path = data_dir / DB_NAME
        self._identity = identity
        self._host = host
        self._custody = custody
        self._peers = peers
        self._limits = limits
        self._ttl = ttl_s
        self._clock = clock
        self._allow_bulk = allow_bulk
        self._retry = retry_s
        self._crash = crash_point or (lambda name: None)
        self._trusted = trusted
        self._on_lan = on_lan
        self._admit = admit
        self._hybrid = sealing_suite == "hybrid"
        self._store: HandoffStore | None = None
        self._db_limiter = trio.CapacityLimiter(1)
        self._locks: dict[str, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None
        self._loops: set[tuple[str, str, int]] = set()

    # --- plumbing ------------------------------------------------------------------

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._db_limiter)

    @property
    def store(self) -> HandoffStore:
        if self._store is None:
            raise NodeError("the handoff manager is still starting; try again")
        return self._store

    @asynccontextmanager
    async def _agent_lock(self, agent_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(agent_id, trio.Lock())
        async with lock:
            yield

    def handlers(self) -> Mapping[str, Handler]:
        return {
            "migrate": self.migrate,
            "snapshot_export": self.snapshot_export,
            "snapshot_import": self.snapshot_import,
            "handoffs": self.list_handoffs,
        }

    def may_run(self, agent_id: str) -> bool:
        """False while an agent is frozen for a handoff or was handed away (the runtime must not start it).

        Blocking (reads sqlite on its own connection); cheap enough for a supervisor's start-up pass.
        """
        db = HandoffStore(self._db_path)
        try:
            rows = [r for r in db.rows() if r.agent_id == agent_id]
        finally:
            db.close()
        if not rows:
            return True
        latest = max(rows, key=lambda r: (r.generation, r.role == "receiver"))
        if latest.role == "sender":
            return latest.state in ("aborted", "rejected")
        return latest.state == "done"

    # --- running -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for sub in ("out", "in"):
            (self._dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self._store = await trio.to_thread.run_sync(HandoffStore, self._db_path)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._recover()
                self._host.set_handler(HANDOFF_PROTOCOL, self._serve)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._store.close()

    async def _serve(self, stream: Stream) -> None:
        await wire.serve_handoff(stream, _ReceiverSide(self))

    async def _recover(self) -> None:
        """Apply the written recovery rules to every handoff persisted before a restart."""
        for row in await self._db(self.store.rows):
            action = recovery_action(row.role, row.state)
            log.info("recovering %s handoff of %s@%d in state %s: %s", row.role, row.agent_id, row.generation, row.state, action)
            try:
                await self._recover_row(row, action)
            except MeshError as exc:  # one row must not keep the node (and every other agent) down
                log.error("recovering the %s handoff of %s@%d failed: %s", row.role, row.agent_id, row.generation, exc)

    async def _recover_row(self, row: Row, action: Action) -> None:
        match action:
            case Action.ABORT_AND_THAW:
                await self._abort_sender(row)
            case Action.COMMIT | Action.RESEND_COMMIT:
                await self._db(self.store.set_state, "sender", row.agent_id, row.generation, "committed")
                await self._handed_over(row)
                # The agent may have come back here since (a later generation, adopted): keep that one.
                back = self._custody.holds(row.agent_id) and await self._db(self.store.highest, row.agent_id) > row.generation
                if not back:
                    await self._custody.release(row.agent_id)
                self._start_loop(self._resend_commit_loop, row)
            case Action.DISCARD_PARTIAL:
                _unlink(row.path)
                await self._db(self.store.set_state, "receiver", row.agent_id, row.generation, "aborted")
            case Action.ASK_SENDER:
                self._start_loop(self._ask_sender_loop, row)
            case Action.ADOPT:
                await self._finish_commit(row)
            case Action.CLEAN_UP if row.role == "sender" and row.state in ("aborted", "rejected"):
                await self._abort_sender(row)  # the agent may not be back yet (S1 interrupted)
            case Action.CLEAN_UP:
                if row.path:
                    _unlink(row.path)

    def _start_loop(self, loop: Callable[[Row], Any], row: Row) -> None:
        key = (row.role, row.agent_id, row.generation)
        if key in self._loops or self._nursery is None:
            return
        self._loops.add(key)

        async def run() -> None:
            try:
                await loop(row)
            finally:
                self._loops.discard(key)

        self._nursery.start_soon(run)

    def _addrs(self, peer: str) -> tuple[str, ...]:
        info = self._peers(PeerId(peer))
        return info.addrs if info is not None else ()

    async def _reach(self, peer: PeerId) -> None:
        info = self._peers(peer)
        await wire.reach(self._host, peer, info.addrs if info is not None else ())

    # --- sender --------------------------------------------------------------------

    async def migrate(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Control op ``migrate``: ``{"agent": ID, "to": PEER_ID}``; emits progress events."""
        agent_id, to = _param(params, "agent"), PeerId(_param(params, "to"))
        info = self._peers(to)
        if info is None:
            raise HandoffError(f"unknown peer {to}: it must be in the peer table (meshagent peers)")
        if to == self._identity.peer_id:
            raise HandoffError("an agent cannot be migrated to its own node")
        start = time.perf_counter()
        async with self._agent_lock(agent_id):
            await self._reach(to)
            row, sealed = await self._seal_out(agent_id, to, info, emit)
            self._crash("sender:offered")

            async def progress(phase: str, done: int, total: int) -> None:
                try:
                    await emit({"phase": phase, "done": done, "total": total})
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the CLI went away; the handoff carries on

            try:
                result = await wire.send_snapshot(
                    self._host, to, Path(row.path), sealed.header, sealed.header_blob, _SenderSide(self, row),
                    progress=progress, allow_bulk=self._allow_bulk, addrs=info.addrs,
                )
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._abort_sender(row)  # a no-op once committed
                    current = await self._db(self.store.get, "sender", agent_id, row.generation)
                if current is not None and current.state == "committed":
                    self._start_loop(self._resend_commit_loop, current)  # rule S3
                raise
        if not result.resumed:
            self._start_loop(self._resend_commit_loop, row)
        return {
            "agent": agent_id, "generation": row.generation, "to": to, "via": str(result.via),
            "bytes": result.body_bytes, "resumed": result.resumed, "seconds": round(time.perf_counter() - start, 3),
            "suite": sealed.header.suite,
        }

    async def _seal_out(self, agent_id: str, to: PeerId, info: HandoffPeer, emit: Emit) -> tuple[Row, snap.SealedSnapshot]:
        if not self._custody.holds(agent_id):
            raise AgentNotFound(f"no agent {agent_id} on this node")
        generation = await self._db(self.store.highest, agent_id) + 1
        path = self._dir / "out" / f"{_fname(agent_id, generation)}.sealed"
        row = Row("sender", agent_id, generation, to, "offered", str(path), frozenset())
        # Persisted before the freeze: a crash from here on is recovered by rule S1 (thaw).
        await self._db(self.store.see, agent_id, generation)
        await self._db(self.store.put, row)
        try:
            frozen = await self._custody.freeze(agent_id)
            self._crash("sender:frozen")
            self._check_privacy(frozen, to)
            await emit({"phase": "sealing", "done": 0, "total": 0})
            include_kv = frozen.kv_model_hash is not None and frozen.kv_model_hash in info.model_hashes
            suite, key = self._suite_for(info)
            sealed = self._seal(frozen, generation, to, key, include_kv, suite=suite)
            await trio.to_thread.run_sync(_write_container, sealed, path)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._abort_sender(row)
            raise
        return row, sealed

    def _check_privacy(self, frozen: FrozenAgent, to: PeerId) -> None:
        """Privacy is a hard filter on the sender: the receiver cannot see the class before it has the body."""
        match frozen.meta.privacy:
            case "any":
                return
            case "lan" if self._on_lan(to) or self._trusted(to):
                return
            case "private" if self._trusted(to):
                return
        raise PrivacyViolation(f"{frozen.agent_id} is {frozen.meta.privacy!r}: it may not move to {to}")

    def _suite_for(self, info: HandoffPeer) -> tuple[str, bytes]:
        """The HPKE suite and recipient key to seal with: hybrid when configured and the peer advertises a hybrid key."""
        if self._hybrid and info.sealing_key_pq:
            return snap.SUITE_HYBRID, info.sealing_key_pq
        return snap.SUITE_X25519, info.sealing_key

    def _seal(self, frozen: FrozenAgent, generation: int, to: PeerId, key: bytes, include_kv: bool,
              ttl_s: float | None = None, suite: str = snap.SUITE_X25519) -> snap.SealedSnapshot:
        return seal_agent(
            frozen, self._identity, recipient=to, recipient_key=key, generation=generation, now=self._clock(),
            ttl_s=self._ttl if ttl_s is None else ttl_s, data_key=secrets.token_bytes(32), include_kv=include_kv,
            suite=suite,
        )

    async def _abort_sender(self, row: Row) -> None:
        """Rule S1 (also S5's abort): persist aborted, then thaw — from the escrow copy if the runtime lost it.

        A no-op unless the handoff is still before commit (or aborted with the agent not yet back).
        """
        current = await self._db(self.store.get, "sender", row.agent_id, row.generation)
        if current is None or current.state not in (*_PRE_COMMIT, "aborted", "rejected"):
            return
        held = self._custody.holds(row.agent_id)
        # A crash between the freeze and the escrow copy leaves the agent frozen in the node's store only.
        frozen = not held and await self._db(self._custody.frozen_in_store, row.agent_id)
        if current.state in ("aborted", "rejected") and (held or not (frozen or Path(row.path).exists())):
            _unlink(row.path)
            return
        await self._db(self.store.set_state, "sender", row.agent_id, row.generation, "aborted")
        self._crash("sender:aborted")
        if held or frozen:
            await self._custody.thaw(row.agent_id)
        elif Path(row.path).exists():
            agent = await trio.to_thread.run_sync(self._open_file, Path(row.path), frozenset(), True)
            await self._custody.adopt(agent, row.generation)
        else:
            log.error("aborted handoff of %s: the runtime lost it and the escrow copy is gone", row.agent_id)
        _unlink(row.path)
        _unlink(Path(row.path).with_suffix(".tmp"))

    async def _sender_stored(self, row: Row) -> None:
        """Rule S2: the receiver holds a durable copy — commit, never thaw again."""
        await self._db(self.store.set_state, "sender", row.agent_id, row.generation, "committed")
        self._crash("sender:committed")
        await self._handed_over(row)
        await self._custody.release(row.agent_id)

    async def _handed_over(self, row: Row) -> None:
        hook = getattr(self._custody, "handed_over", None)
        if hook is not None:
            await hook(row.agent_id, row.generation, PeerId(row.peer))

    async def _sender_done(self, row: Row) -> None:
        await self._db(self.store.set_state, "sender", row.agent_id, row.generation, "done")
        _unlink(row.path)

    async def _resend_commit_loop(self, row: Row) -> None:
        """Rule S3: re-send Commit until the receiver answers Resumed."""
        while True:
            await self._reach(PeerId(row.peer))
            if await wire.resend_commit(self._host, PeerId(row.peer), row.agent_id, row.generation, self._addrs(row.peer)):
                await self._sender_done(row)
                log.info("handoff of %s@%d to %s completed after recovery", row.agent_id, row.generation, row.peer)
                return
            await trio.sleep(self._retry)

    async def answer_query(self, peer: PeerId, agent_id: str, generation: int) -> str:
        """Rule S5: the sender's durable decision; a pre-commit handoff is aborted first."""
        async with self._agent_lock(agent_id):
            row = await self._db(self.store.get, "sender", agent_id, generation)
            if row is None or row.peer != peer:
                return "unknown"
            if row.state in ("committed", "done"):
                return "committed"
            if row.state in _PRE_COMMIT:
                await self._abort_sender(row)
            return "aborted"

    # --- receiver ------------------------------------------------------------------

    def _header_suite(self, header_blob: bytes) -> str:
        """The suite a header names, to pick our matching key; X25519 when it cannot tell (verification then fails as usual)."""
        try:
            return snap.header_suite(header_blob, max_header=self._limits.max_header)
        except MeshError:
            return snap.SUITE_X25519

    def _file_suite(self, path: Path) -> str:
        try:
            with open(path, "rb") as f:
                return self._header_suite(wire.read_container_header(f, self._limits.max_header))
        except (OSError, MeshError):
            return snap.SUITE_X25519

    def _reader(self, header_blob: bytes | None, skip: frozenset[str], *, mode: str = "verify",
                as_sender: bool = False, check_expiry: bool = True, now: float | None = None,
                suite: str | None = None) -> snap.SnapshotReader:
        if suite is None:
            suite = snap.SUITE_X25519 if header_blob is None else self._header_suite(header_blob)
        key, public = self._identity.sealing_for(suite)
        return snap.SnapshotReader(
            sealing_key=key, sealing_public=public, me=self._identity.peer_id, now=self._clock() if now is None else now,
            limits=self._limits, mode=mode, skip=skip, header_blob=header_blob, as_sender=as_sender,
            check_expiry=check_expiry,
        )

    def _open_file(self, path: Path, skip: frozenset[str], as_sender: bool = False, check_expiry: bool = False) -> FrozenAgent:
        """Verify a whole sealed file, then open it (two passes: nothing is decompressed unauthenticated).

        Stored copies were checked for expiry when they were offered; an import checks it now.
        """
        now = self._clock()
        suite = self._file_suite(path)
        for mode in ("verify", "open"):
            reader = self._reader(None, skip, mode=mode, as_sender=as_sender, check_expiry=check_expiry, now=now, suite=suite)
            sections: dict[str, bytearray] = {}
            with open(path, "rb") as f:
                while piece := f.read(1 << 20):
                    for event in reader.receive_data(piece):
                        if isinstance(event, snap.SectionData):
                            sections.setdefault(event.section, bytearray()).extend(event.data)
            reader.close()
        assert reader.header is not None
        return from_sections({k: bytes(v) for k, v in sections.items()}, reader.header)

    async def offer(self, peer: PeerId, header_blob: bytes) -> snap.SnapshotHeader | Reject:
        """Check an incoming offer — signature first, then recipient, expiry, size, generation."""
        try:
            header = snap.verify_header(
                header_blob, me=self._identity.peer_id, now=self._clock(),
                my_sealing_key=self._identity.sealing_for(self._header_suite(header_blob))[1],
                limits=self._limits, expected_sender=peer,
            )
            async with self._agent_lock(header.agent_id):
                highest = await self._db(self.store.highest, header.agent_id)
                if header.generation <= highest:
                    raise StaleError(f"generation {header.generation} of {header.agent_id} is not above {highest}")
                if self._custody.holds(header.agent_id):
                    return Reject(RejectReason.BUSY, "the agent already runs here")
                refusal = self._admit(header)
                if refusal is not None:
                    return Reject(refusal, "refused by this node's admission policy")
                await self._db(self.store.see, header.agent_id, header.generation)
                part = self._dir / "in" / f"{_fname(header.agent_id, header.generation)}.part"
                await self._db(self.store.put, Row("receiver", header.agent_id, header.generation, peer, "receiving", str(part), frozenset()))
        except StaleError as exc:
            return Reject(RejectReason.STALE, str(exc))
        except ExpiredError as exc:
            return Reject(RejectReason.EXPIRED, str(exc))
        except FrameTooLarge as exc:
            return Reject(RejectReason.TOO_LARGE, str(exc))
        except WrongRecipient as exc:
            return Reject(RejectReason.WRONG_RECIPIENT, str(exc))
        except (SignatureError, MeshError) as exc:
            log.warning("refused a handoff offer from %s: %s", peer, exc)
            return Reject(RejectReason.BAD_SEAL, str(exc)[:200])
        self._crash("receiver:receiving")
        return header

    async def _receiver_stored(self, header: snap.SnapshotHeader, part: Path, skip: frozenset[str]) -> None:
        final = part.with_suffix(".sealed")
        os.replace(part, final)
        _fsync_dir(final.parent)
        row = Row("receiver", header.agent_id, header.generation, header.sender, "stored", str(final), skip)
        await self._db(self.store.put, row)
        self._crash("receiver:stored")

    async def _receiver_aborted(self, header: snap.SnapshotHeader, part: Path) -> None:
        _unlink(part)
        await self._db(self.store.set_state, "receiver", header.agent_id, header.generation, "aborted")

    async def _finish_commit(self, row: Row) -> None:
        """Rule R3: persist committed, adopt from the stored copy (idempotent), persist done."""
        await self._db(self.store.set_state, "receiver", row.agent_id, row.generation, "committed")
        self._crash("receiver:committed")
        if not self._custody.holds(row.agent_id):
            agent = await trio.to_thread.run_sync(self._open_file, Path(row.path), row.skip)
            await self._custody.adopt(agent, row.generation)
        self._crash("receiver:adopted")
        await self._db(self.store.set_state, "receiver", row.agent_id, row.generation, "done")
        _unlink(row.path)

    async def committed(self, agent_id: str, generation: int, peer: PeerId | None = None) -> bool:
        async with self._agent_lock(agent_id):
            row = await self._db(self.store.get, "receiver", agent_id, generation)
            if row is None or (peer is not None and row.peer != peer):
                return False
            match row.state:
                case "stored" | "committed":
                    await self._finish_commit(row)
                    return True
                case "done":
                    return True
            return False

    async def _ask_sender_loop(self, row: Row) -> None:
        """Rule R2: never resume without the sender's commit; ask until it decides."""
        while True:
            current = await self._db(self.store.get, "receiver", row.agent_id, row.generation)
            if current is None or current.state != "stored":
                return
            row = current
            try:
                await self._reach(PeerId(row.peer))
                decision = await wire.query_sender(self._host, PeerId(row.peer), row.agent_id, row.generation,
                                                   self._addrs(row.peer))
            except HandoffError as exc:
                log.debug("asking %s about %s: %s", row.peer, row.agent_id, exc)
                await trio.sleep(self._retry)
                continue
            if decision == "committed":
                await self.committed(row.agent_id, row.generation)
            else:
                async with self._agent_lock(row.agent_id):
                    _unlink(row.path)
                    await self._db(self.store.set_state, "receiver", row.agent_id, row.generation, "aborted")
            return

    # --- export / import -----------------------------------------------------------

    async def snapshot_export(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Control op ``snapshot_export``: ``{"agent", "file", "to"?}``.

        Without ``to`` the file is sealed to this node (a backup) and the agent
        keeps running here. With ``to`` it is sealed to that peer (sneakernet):
        the agent is released here and the file is its only copy.
        """
        agent_id, file = _param(params, "agent"), Path(_param(params, "file"))
        to = PeerId(params.get("to") or self._identity.peer_id)
        if to == self._identity.peer_id:
            info = HandoffPeer(to, (), self._identity.sealing_public, sealing_key_pq=self._identity.hybrid_public)
        else:
            found = self._peers(to)
            if found is None:
                raise HandoffError(f"unknown peer {to}")
            info = found
        async with self._agent_lock(agent_id):
            generation = await self._db(self.store.highest, agent_id) + 1
            frozen = await self._custody.freeze(agent_id)
            try:
                if to != self._identity.peer_id:
                    self._check_privacy(frozen, to)
                suite, key = self._suite_for(info)
                sealed = self._seal(frozen, generation, to, key, frozen.kv_model_hash in info.model_hashes,
                                    ttl_s=EXPORT_TTL_S, suite=suite)
                size = await trio.to_thread.run_sync(_write_container, sealed, file)
                await self._db(self.store.see, agent_id, generation)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._custody.thaw(agent_id)
                raise
            if to == self._identity.peer_id:
                await self._custody.thaw(agent_id)
            else:
                await self._db(self.store.put, Row("sender", agent_id, generation, to, "done", "", frozenset()))
                await self._handed_over(Row("sender", agent_id, generation, to, "done", "", frozenset()))
                await self._custody.release(agent_id)
        await emit({"phase": "exported", "done": size, "total": size})
        return {"agent": agent_id, "generation": generation, "file": str(file), "to": to, "bytes": size,
                "suite": sealed.header.suite}

    async def snapshot_import(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Control op ``snapshot_import``: ``{"file"}`` sealed to this node (a peer's export, or our backup)."""
        file = Path(_param(params, "file"))
        with open(file, "rb") as f:
            blob = wire.read_container_header(f)
        header = snap.verify_header(blob, me=self._identity.peer_id, now=self._clock(), limits=self._limits,
                                    my_sealing_key=self._identity.sealing_for(self._header_suite(blob))[1])
        async with self._agent_lock(header.agent_id):
            if self._custody.holds(header.agent_id):
                raise HandoffError(f"{header.agent_id} already runs here; importing it would run it twice")
            highest = await self._db(self.store.highest, header.agent_id)
            own_backup = header.sender == self._identity.peer_id
            if header.generation < highest or (header.generation == highest and not own_backup):
                raise StaleError(f"generation {header.generation} of {header.agent_id} is not newer than {highest}")
            agent = await trio.to_thread.run_sync(self._open_file, file, frozenset(), False, True)
            await self._db(self.store.see, header.agent_id, header.generation)
            await self._custody.adopt(agent, header.generation)
        await emit({"phase": "imported", "done": 1, "total": 1})
        return {"agent": header.agent_id, "generation": header.generation, "from": header.sender}

    async def list_handoffs(self, params: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Control op ``handoffs``: every persisted handoff and whether any is still pending."""
        rows = await self._db(self.store.rows)
        out = [{"role": r.role, "agent": r.agent_id, "generation": r.generation, "peer": r.peer, "state": r.state} for r in rows]
        pending = [r for r in out if r["state"] not in ("done", "aborted", "rejected")]
        return {"handoffs": out, "pending": len(pending)}


def _param(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise ControlError(f"missing parameter {name!r}")
    return value


class _SenderSide:
    """The sender hooks of one handoff: persist each step before it is announced."""

    def __init__(self, manager: HandoffManager, row: Row) -> None:
        self._m = manager
        self._row = row

    async def accepted(self, have: frozenset[str], via: Via) -> None:
        await self._m._db(self._m.store.set_state, "sender", self._row.agent_id, self._row.generation, "sending")
        self._m._crash("sender:sending")

    async def stored(self) -> None:
        await self._m._sender_stored(self._row)

    async def resumed(self) -> None:
        await self._m._sender_done(self._row)


class _ReceiverSide:
    """The receiver hooks, bound to the manager."""

    def __init__(self, manager: HandoffManager) -> None:
        self._m = manager

    async def offer(self, peer: PeerId, header_blob: bytes) -> snap.SnapshotHeader | Reject:
        return await self._m.offer(peer, header_blob)

    def have(self, header: snap.SnapshotHeader) -> frozenset[str]:
        names = {s.name for s in header.sections}
        have = {n for n in names & CACHEABLE if n == "module" and self._m._custody.has_module(header.module_sha256)}
        has_tool = getattr(self._m._custody, "has_tool", None)
        if has_tool is not None:
            have |= {n for n in names if (prefix := tool_prefix(n)) is not None and has_tool(prefix)}
        return frozenset(have)

    def incoming_path(self, header: snap.SnapshotHeader) -> Path:
        return self._m._dir / "in" / f"{_fname(header.agent_id, header.generation)}.part"

    def reader(self, header_blob: bytes, skip: frozenset[str]) -> snap.SnapshotReader:
        return self._m._reader(header_blob, skip)

    async def stored(self, header: snap.SnapshotHeader, part: Path, skip: frozenset[str]) -> None:
        await self._m._receiver_stored(header, part, skip)

    async def aborted(self, header: snap.SnapshotHeader, part: Path) -> None:
        await self._m._receiver_aborted(header, part)

    async def committed(self, header: snap.SnapshotHeader) -> None:
        if not await self._m.committed(header.agent_id, header.generation):
            raise HandoffError(f"commit for {header.agent_id}@{header.generation}, which is not stored here")

    def commit_missing(self, header: snap.SnapshotHeader) -> None:
        row = Row("receiver", header.agent_id, header.generation, header.sender, "stored", "", frozenset())
        self._m._start_loop(self._m._ask_sender_loop, row)

    async def query(self, peer: PeerId, agent_id: str, generation: int) -> str:
        return await self._m.answer_query(peer, agent_id, generation)

    async def recommit(self, peer: PeerId, agent_id: str, generation: int) -> bool:
        return await self._m.committed(agent_id, generation, peer)

    def bulk_ips(self) -> list[str]:
        return ips_of_addrs(self._m._host.addrs) if self._m._allow_bulk else []

    async def progress(self, header: snap.SnapshotHeader, done: int, total: int) -> None:
        log.debug("receiving %s: %d/%d bytes", header.agent_id, done, total)
